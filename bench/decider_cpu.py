"""The decider's own CPU cost per TipReport and per tick, in process, without a broker.

A ``DeciderService`` is built for the bench's pools (``bench00000`` ..., nodes ``a``
priority 100 initial producer and ``b`` priority 90) but its links are never started:
messages go straight to ``DeciderService.dispatch``, the path every message takes once
paho has handed it over. The retained state of a running fleet (role commands ``a``
producer / ``b`` relay at epoch 1, online applied NodeStates, fresh tips) is fed first,
startup_grace is passed, every pool recovers steady, and one round of live tips makes
every standby eligible. Then, on a fake clock that stays inside one status_interval (so
the steady state publishes nothing):

- ``--count`` TipReports through ``dispatch``: µs per message;
- the same number again, one stage at a time (topic parse, decode, KES watch,
  ``core.on_tip`` with its evaluation): the per-stage split. It is a guide: handing
  each stage's results to the next in chunks keeps more objects alive than ``dispatch``
  does, so the garbage collector adds a little to the sum;
- ``--ticks`` ticks over every pool: ms per tick; then the one tick at which every
  pool's periodic status falls due at once (they all recovered at the same instant).

    python -m bench.decider_cpu                      # 10,000 pools, 100,000 messages
    python -m bench.decider_cpu --pools 1000 --count 20000 --profile 25

``--profile N`` runs the dispatch loop and the ticks once more under cProfile and prints
the N functions with the most own time. Nothing here is used by the product or the tests.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import pstats
import time

from bench.common import DECIDER_ID, NODES, PREFIX, pool_id, steady_messages, tip_json
from bpfailover.decider.actions import Action, PublishStatus
from bpfailover.decider.model import Now
from bpfailover.decider.service import DeciderService
from bpfailover.link import Incoming
from bpfailover.protocol.wire import TipReport, decode
from bpfailover.settings import BpfConfig, DeciderSettings, PoolSpec

EPOCH = 1
CHUNK = 1000  # messages per stage in the per-stage split
STEP = 1e-5  # fake seconds per message: 100,000 messages stay well inside status_interval


class Clock:
    """A fake clock: both readings move together, only when told."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = time.time()

    def now(self) -> Now:
        return Now(self.mono, self.wall)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def make_service(pools: int) -> DeciderService:
    specs = [
        PoolSpec(
            id=pool_id(i),
            initial_producer="a",
            nodes=[{"name": "a", "priority": 100}, {"name": "b", "priority": 90}],  # type: ignore[list-item]
        )
        for i in range(pools)
    ]
    # The bundle's decider settings (`bpfailover init`), without a signing key: signatures
    # are checked on role commands only, never on the tip path measured here.
    settings = DeciderSettings(
        id=DECIDER_ID,
        stale_after=300,
        tick=1,
        rise=2,
        min_switch_interval=300,
        max_failovers=3,
        flap_window=3600,
        startup_grace=30,
        max_clock_skew=10,
        apply_timeout=120,
    )
    return DeciderService(BpfConfig(decider=settings, pools=specs))


def incoming(topic: str, payload: bytes, at: float, *, retain: bool) -> Incoming:
    return Incoming(topic=topic, payload=payload, retain=retain, received_at=at, received_mono=at)


def tips(pools: list[str], clock: Clock, count: int, seq: int) -> list[Incoming]:
    """``count`` live TipReports cycling over every node, each fresh at its own fake instant."""
    nodes = [(p, n, f"{PREFIX}/{p}/tip/{n}") for p in pools for n in NODES]
    items = []
    wall = clock.wall
    for i in range(count):
        pool, node, topic = nodes[i % len(nodes)]
        wall += STEP
        payload = tip_json(pool, node, seq + i // len(nodes), wall)
        items.append(incoming(topic, payload, wall, retain=False))
    return items


def feed(service: DeciderService, clock: Clock, items: list[Incoming]) -> list[Action]:
    actions: list[Action] = []
    for item in items:
        clock.advance(STEP)
        actions += service.dispatch(item, clock.now())
    return actions


def steady_state(service: DeciderService, pools: list[str], clock: Clock) -> None:
    """What a running fleet leaves on the broker, read at start, then every pool recovered."""
    core = service.core
    core.on_link(True, clock.now())
    retained = [
        incoming(topic, payload, clock.wall, retain=True)
        for topic, payload in steady_messages(pools, clock.wall, epoch=EPOCH)
    ]
    feed(service, clock, retained)
    on_read = getattr(core, "on_retained_read", None)
    if on_read is not None:
        on_read()  # the shell says so when it sees the end of the retained messages
    clock.advance(service.config.decider.startup_grace)
    recovered = core.tick(clock.now())
    statuses = sum(1 for a in recovered if isinstance(a, PublishStatus))
    # One live round: every standby reaches rise fresh reports (its "no standby" alert clears).
    feed(service, clock, tips(pools, clock, len(pools) * len(NODES), seq=2))
    for pool in pools:
        view = core.view(pool)
        if view.producer != "a" or view.epoch != EPOCH or view.transition is not None:
            raise SystemExit(f"pool {pool} did not recover steady: producer {view.producer}")
    print(f"recovered {len(pools)} pools steady ({statuses} statuses)", flush=True)


def stages(service: DeciderService, clock: Clock, items: list[Incoming]) -> None:
    """The steps of ``dispatch`` for a tip, one at a time over each chunk of messages.

    Chunks keep what the stages hand on to each other small, as in ``dispatch``: holding
    every decoded report at once would measure the memory, not the stage.
    """
    topics, core, kes = service.topics, service.core, service.kes_watch
    spent = dict.fromkeys(
        ("topics.parse", "wire.decode", "KesWatch.observe", "core.on_tip (+ evaluate)"), 0.0
    )
    actions = 0
    for first in range(0, len(items), CHUNK):
        chunk = items[first : first + CHUNK]
        nows = []
        for _ in chunk:
            clock.advance(STEP)
            nows.append(clock.now())
        t0 = time.process_time()
        wheres = [topics.parse(i.topic) for i in chunk]
        t1 = time.process_time()
        reports = [
            decode(TipReport, i.payload, pool=w.pool, node=w.node) for i, w in zip(chunk, wheres, strict=True)
        ]
        t2 = time.process_time()
        for w, r, t in zip(wheres, reports, nows, strict=True):
            kes.observe(w.pool, r.node, r.kes_periods_left, t.wall)
        t3 = time.process_time()
        for i, w, r, t in zip(chunk, wheres, reports, nows, strict=True):
            actions += len(core.on_tip(w.pool, r, t, received_at=i.received_at, retained=i.retain))
        t4 = time.process_time()
        for label, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[label] += seconds
    n = len(items)
    print(f"per stage, {n} messages:")
    for label, seconds in spent.items():
        print(f"  {label:<28} {seconds * 1e6 / n:8.1f} µs/message")
    total = sum(spent.values())
    print(f"  {'sum of stages':<28} {total * 1e6 / n:8.1f} µs/message ({actions} actions)", flush=True)


def ticks(service: DeciderService, clock: Clock, count: int) -> None:
    """``count`` ticks a second apart, then the tick at which every pool's status falls due."""
    core, settings = service.core, service.config.decider
    gc.collect()  # a full collection at 10,000 pools takes ~0.2 s: not in the middle of a tick
    spent = 0.0
    published = 0
    for _ in range(count):
        clock.advance(settings.tick)
        now = clock.now()
        start = time.process_time()
        published += len(core.tick(now))
        spent += time.process_time() - start
    pools = len(core.pools)
    print(f"tick: {spent * 1e3 / count:.1f} ms per tick over {pools} pools ({published} actions)")
    # Every pool recovered at the same instant, so every status_interval they all republish at once.
    due = max(m.view.last_status_mono or 0.0 for m in core.pools.values()) + settings.status_interval
    clock.advance(due - clock.mono)
    gc.collect()
    start = time.process_time()
    published = len(core.tick(clock.now()))
    spent = time.process_time() - start
    print(f"tick with every status due: {spent * 1e3:.1f} ms ({published} actions, not published here)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", type=int, default=10_000)
    parser.add_argument("--count", type=int, default=100_000, help="TipReports to time")
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    clock = Clock()
    service = make_service(args.pools)
    pools = [pool_id(i) for i in range(args.pools)]
    try:
        steady_state(service, pools, clock)
        rounds = -(-args.count // (len(pools) * len(NODES)))
        seq = 10

        items = tips(pools, clock, args.count, seq)
        gc.collect()
        start = time.process_time()
        actions = feed(service, clock, items)
        spent = time.process_time() - start
        print(
            f"dispatch: {args.count} TipReports, {spent * 1e6 / args.count:.1f} µs/message "
            f"({len(actions)} actions)",
            flush=True,
        )
        stages(service, clock, tips(pools, clock, args.count, seq + rounds))

        if args.profile:
            items = tips(pools, clock, args.count, seq + 2 * rounds)
            profiler = cProfile.Profile()
            profiler.enable()
            feed(service, clock, items)
            for _ in range(args.ticks):
                clock.advance(service.config.decider.tick)
                service.core.tick(clock.now())
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
        ticks(service, clock, args.ticks)
    finally:
        service.presence.stop()


if __name__ == "__main__":
    main()
