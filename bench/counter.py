"""The ceiling: a bare paho subscriber that only counts.

``python -m bench.counter --bundle DIR ...`` subscribes to every pool's tips and control
topic with the decider's QoS, counts tip messages and stops at the marker (the first
control message after it was told to start). It does nothing with a message but count
it, so its rate is what the broker can deliver to one Python MQTT client in this run.
Prints one JSON line when ready and one when done.

``--retained POOLS`` instead measures the ceiling of a decider's start-up read: it
subscribes, in SUBSCRIBEs under the packet limit as the decider does, to five filters the decider uses
for each of POOLS pools and counts the retained messages until none has come for 2 s;
it prints how many and how long from the SUBSCRIBE to the last of them.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import PREFIX, BenchBundle, client, pool_id, subscribe

QUIET = 2.0  # seconds without a message that end the retained read


def retained_read(bundle: BenchBundle, pools: int) -> None:
    count = 0
    last = time.time()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        nonlocal count, last
        if msg.retain:
            count += 1
            last = time.time()

    kinds = ("tip/+", "state/+", "role/+", "decider", "control")
    filters = [f"{PREFIX}/{pool_id(i)}/{kind}" for i in range(pools) for kind in kinds]
    c = client(bundle, "retained-reader")
    c.on_message = on_message
    started = time.time()
    subscribe(c, filters)
    while time.time() - max(last, started) < QUIET:
        time.sleep(0.1)
    print(json.dumps({"count": count, "seconds": round(last - started, 2), "cpu": time.process_time()}))
    c.disconnect()
    c.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--retained", type=int, default=0, metavar="POOLS")
    args = parser.parse_args()
    bundle = BenchBundle(args.bundle, 0, args.port, args.password)
    if args.retained:
        retained_read(bundle, args.retained)
        return
    count = 0
    first = 0.0
    done = threading.Event()
    last = 0.0

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        nonlocal count, first, last
        if msg.retain:
            return
        if msg.topic.endswith("/control"):
            last = time.time()
            done.set()
            return
        if count == 0:
            first = time.time()
        count += 1

    c = client(bundle, "counter")
    c.on_message = on_message
    subscribe(c, [f"{PREFIX}/+/tip/+", f"{PREFIX}/+/control"])
    print(json.dumps({"ready": time.time()}), flush=True)
    done.wait(3600)
    result = {"count": count, "first": first, "marker": last, "cpu": time.process_time()}
    print(json.dumps(result), flush=True)
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()
