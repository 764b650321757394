"""The ceiling: a bare paho subscriber that only counts.

``python -m bench.counter --bundle DIR ...`` subscribes to every pool's tips and control
topic with the decider's QoS, counts tip messages and stops at the marker (the first
control message after it was told to start). It does nothing with a message but count
it, so its rate is what the broker can deliver to one Python MQTT client in this run.
Prints one JSON line when ready and one when done.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import PREFIX, BenchBundle, client, subscribe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    bundle = BenchBundle(args.bundle, 0, args.port, args.password)
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
