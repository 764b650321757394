"""Load generator process: TipReports for every node of every pool, as ``loadgen``.

Two modes, each printing one JSON line at the end:

- ``burst`` (throughput): ``--count`` TipReports (QoS 1, as publishers send them) cycling
  over the nodes of this ``--shard`` of the pools as fast as paho allows; several
  processes, one per shard, load in parallel without reusing each other's (boot, seq).
- ``steady`` (decision latency): every node reports every ``--interval`` seconds, spread
  evenly, for ``--duration`` seconds; node ``a`` of ``--fail`` pools stops reporting at a
  random moment between ``--fail-after`` and ``--fail-after + --fail-spread``. Prints the
  ``tip_time`` of each stopped node's last report: its tip becomes stale exactly
  ``stale_after`` later.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import paho.mqtt.client as paho

from bench.common import NODES, PREFIX, BenchBundle, client, pool_id, tip_json

BLOCK = 10_000


def burst(
    c: paho.Client, pools: list[str], count: int, seq_base: int, shard: int, shards: int
) -> dict[str, object]:
    """``count`` reports over this shard's pools (pool index % shards == shard), in rounds."""
    mine = [p for i, p in enumerate(pools) if i % shards == shard]
    topics = [(p, n, f"{PREFIX}/{p}/tip/{n}") for p in mine for n in NODES]
    first = time.time()
    info = None
    block_end = None
    for i in range(count):
        pool, node, topic = topics[i % len(topics)]
        info = c.publish(topic, tip_json(pool, node, seq_base + i // len(topics), time.time()), qos=1)
        if i % BLOCK == BLOCK - 1:
            # Bound what paho holds unacknowledged: its message ids are 16-bit.
            if block_end is not None:
                block_end.wait_for_publish(600)
            block_end = info
    if info is not None:
        info.wait_for_publish(1800)
    return {"first": first, "published": time.time(), "count": count}


def steady(
    c: paho.Client,
    pools: list[str],
    *,
    interval: float,
    duration: float,
    fail: int,
    fail_after: float,
    fail_spread: float,
    seq_base: int,
) -> dict[str, object]:
    rng = random.Random(42)
    failing = rng.sample(pools[1:], fail)  # pool 0 stays healthy: the other benchmarks use it
    stop_at = {p: fail_after + rng.uniform(0, fail_spread) for p in failing}
    last_tip: dict[str, float] = {}
    nodes = [(p, n) for p in pools for n in NODES]
    start = time.monotonic()
    sent = 0
    rounds = 0
    while True:
        round_start = start + rounds * interval
        if round_start - start >= duration:
            break
        for i, (pool, node) in enumerate(nodes):
            due = round_start + interval * i / len(nodes)
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            if node == "a" and pool in stop_at and time.monotonic() - start >= stop_at[pool]:
                continue
            wall = time.time()
            payload = tip_json(pool, node, seq_base + rounds, wall)
            c.publish(f"{PREFIX}/{pool}/tip/{node}", payload, qos=1)
            if node == "a" and pool in stop_at:
                last_tip[pool] = float(json.loads(payload)["tip_time"])
            sent += 1
        rounds += 1
    return {"sent": sent, "rounds": rounds, "last_tip_time": last_tip}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["burst", "steady"])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pools", type=int, required=True)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--seq-base", type=int, default=1000)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--fail", type=int, default=200)
    parser.add_argument("--fail-after", type=float, default=25.0)
    parser.add_argument("--fail-spread", type=float, default=20.0)
    args = parser.parse_args()
    bundle = BenchBundle(args.bundle, args.pools, args.port, args.password)
    pools = [pool_id(i) for i in range(args.pools)]
    c = client(bundle, f"loadgen-{args.mode}", inflight=2000)
    if args.mode == "burst":
        result = burst(c, pools, args.count, args.seq_base, args.shard, args.shards)
    else:
        result = steady(
            c,
            pools,
            interval=args.interval,
            duration=args.duration,
            fail=args.fail,
            fail_after=args.fail_after,
            fail_spread=args.fail_spread,
            seq_base=args.seq_base,
        )
    print(json.dumps(result), flush=True)
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()
