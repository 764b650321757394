"""Seeded fault schedules, and one run of the simulated pool under one schedule.

A schedule is a list of ``Fault``; its ``repr`` is Python that rebuilds it, so a failing
run prints something that can be pasted into ``tests/sim/test_regressions.py``. A target
``"producer"`` is resolved when the fault fires (the node forging then), which is how the
generator aims at the four fault classes the safety fixes are about:

1. ``iso_rollback``: the producer's host is cut off until it fences and another node is
   promoted, then the broker restarts with a copy of its retained messages from before;
2. ``amnesia``: the broker goes down long enough for the producer to fence, and comes
   back with no retained message at all, while the decider keeps running;
3. ``sigterm``: the producer's actuator is stopped cleanly (sometimes on a lossy link,
   so that its DISCONNECT is lost and the broker sends its Will later);
4. ``flap``: the producer's links let CONNECT/CONNACK and pings through but lose every
   publish, and drop every few seconds (a new connection, a new Will, each time).

``idle`` (NodeState.forging): a node restarts with the non-producing flag and keeps its keys,
so it relays with a fresh tip but does not forge until a SIGHUP; ``broken``, even that does
nothing for the fault's duration, and the decider must fail it over (not_forging_after).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from tests.sim.world import L_BOUND, POOL, Outcome, Violation, World, _with_inline_within

FAULTS_FROM, FAULTS_UNTIL = 20.0, 270.0
HEAL_AT = 310.0
END = HEAL_AT + L_BOUND + 10.0


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    target: str = ""
    duration: float = 0.0
    arg: str = ""

    def __repr__(self) -> str:
        extra = f", {self.duration!r}" if self.duration or self.arg else ""
        extra += f", {self.arg!r}" if self.arg else ""
        return f"Fault({self.at!r}, {self.kind!r}, {self.target!r}{extra})"


# kind -> weight
WEIGHTS = {
    "iso_rollback": 6,
    "amnesia": 5,
    "sigterm": 6,
    "flap": 6,
    "partition": 5,
    "delay": 2,
    "suspend": 4,
    "node_stall": 4,
    "node_death": 2,
    "act_crash": 3,
    "act_pause": 2,
    "dec_crash": 3,
    "dec_pause": 2,
    "broker_restart": 2,
    "rollback": 2,
    "dup": 2,
}
IDLE_SHARE = 0.3  # of the schedules get one ``idle`` fault too (from an RNG of its own)


def generate(seed: int, nodes: int = 3) -> list[Fault]:
    rng = random.Random(seed)
    names = [f"bp{i + 1}" for i in range(nodes)]
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    faults: list[Fault] = []
    count = rng.randint(1, 6)
    for _ in range(count):
        at = round(rng.uniform(FAULTS_FROM, FAULTS_UNTIL), 2)
        kind = rng.choices(kinds, weights)[0]
        node = rng.choice(["producer", "producer", *names])
        r = lambda a, b: round(rng.uniform(a, b), 2)  # noqa: E731
        if kind == "iso_rollback":
            cut = r(40, 90)
            faults.append(Fault(at, kind, "producer", cut, str(r(36, cut + 30))))
        elif kind == "amnesia":
            faults.append(Fault(at, kind, "", r(12, 40)))
        elif kind == "sigterm":
            faults.append(Fault(at, kind, node, r(5, 80), rng.choice(["", "", "lossy", "cut"])))
        elif kind == "flap":
            faults.append(Fault(at, kind, node, r(15, 80), str(r(2, 8))))
        elif kind == "partition":
            target = rng.choice([f"{node}", f"{node}/act", f"{node}/pub", "dec1", "dec1/work", "dec1/cmd"])
            mode = rng.choice(["down", "down", "lossy", "tx_lost", "rx_lost"])
            faults.append(Fault(at, kind, target, r(1, 60), mode))
        elif kind == "delay":
            faults.append(Fault(at, kind, rng.choice([node, "dec1"]), r(2, 40), str(r(0.2, 4))))
        elif kind == "suspend":
            faults.append(Fault(at, kind, rng.choice([node, node, "dhost1"]), r(0.5, 60)))
        elif kind == "node_stall":
            faults.append(Fault(at, kind, node, r(10, 90)))
        elif kind == "node_death":
            faults.append(Fault(at, kind, node, r(5, 90)))
        elif kind == "act_crash":
            faults.append(Fault(at, kind, node, r(0.2, 3)))
        elif kind == "act_pause":
            faults.append(Fault(at, kind, node, r(0.2, 4)))
        elif kind == "dec_crash":
            faults.append(Fault(at, kind, "dec1", r(0.2, 30)))
        elif kind == "dec_pause":
            faults.append(Fault(at, kind, "dec1", r(0.2, 20)))
        elif kind == "broker_restart":
            faults.append(Fault(at, kind, "", r(0.2, 15)))
        elif kind == "rollback":
            faults.append(Fault(at, kind, "", r(0.2, 10), str(r(5, 120))))
        elif kind == "dup":
            faults.append(Fault(at, kind, "", r(10, 100), str(r(0.05, 0.5))))
    # Drawn from an RNG of its own, so that every schedule above (and the seeds kept in
    # test_regressions) stays what it was before this fault class existed.
    extra = random.Random(seed * 7919 + 1)
    if extra.random() < IDLE_SHARE:
        at = round(extra.uniform(FAULTS_FROM, FAULTS_UNTIL), 2)
        node = extra.choice(["producer", "producer", *names])
        faults.append(Fault(at, "idle", node, round(extra.uniform(5, 90), 2), extra.choice(["", "broken"])))
    return sorted(faults, key=lambda f: f.at)


# --- applying faults ----------------------------------------------------------------------------


class Injector:
    def __init__(self, world: World) -> None:
        self.world = world
        self.loop = world.loop

    def node(self, target: str) -> str:
        return self.world.the_producer() if target == "producer" else target

    def links(self, target: str) -> list:
        world = self.world
        if target in world.links:
            return [world.links[target]]
        host = target
        if target.startswith("dec"):
            host = "dhost1"
        return list(world.host_links[host])

    def later(self, delay: float, fn) -> None:  # type: ignore[no-untyped-def]
        self.loop.later(delay, fn)

    def partition(self, links: list, mode: str, duration: float) -> None:  # type: ignore[type-arg]
        for link in links:
            link.mode = mode

        def heal() -> None:
            for link in links:
                if link.mode == mode:
                    link.mode = "up"

        self.later(duration, heal)

    def apply(self, f: Fault) -> None:
        world, broker = self.world, self.world.broker
        world.trace.append(f"{self.loop.now:8.2f} FAULT {f!r} -> {self.node(f.target) if f.target else ''}")
        kind = f.kind
        if kind == "iso_rollback":
            # The producer is cut off long enough to fence and be replaced; the broker then
            # restarts with its retained messages from before the cut (while the old producer is
            # still cut off when ``arg`` < duration, or after it is back).
            node = self.node(f.target)
            before = self.loop.now
            self.partition(self.links(node), "down", f.duration)

            def rollback() -> None:
                broker.crash()
                snapshot = broker.snapshot_before(before)
                self.later(1.0, lambda: broker.restart(snapshot, "rollback"))

            self.later(float(f.arg), rollback)
        elif kind == "amnesia":
            broker.crash()
            self.later(f.duration, lambda: broker.restart({}, "amnesia"))
        elif kind == "sigterm":
            node = self.node(f.target)
            act = world.actuators[node]
            if f.arg == "lossy":
                self.partition(self.links(f"{node}/act"), "lossy", 3.0)
            elif f.arg == "cut":
                # The clean-stop report gets through, the DISCONNECT does not: the Will follows.
                self.later(0.02, lambda: self.partition(self.links(f"{node}/act"), "down", 6.0))
            act.sigterm()
            self.later(f.duration, act.start)
        elif kind == "flap":
            node = self.node(f.target)
            links = self.links(node)
            period = float(f.arg)
            end = self.loop.now + f.duration
            for link in links:
                link.mode = "lossy"

            def drop() -> None:
                if self.loop.now >= end:
                    for link in links:
                        if link.mode in ("lossy", "down"):
                            link.mode = "up"
                    return
                for link in links:
                    link.mode = "down"

                def back() -> None:
                    for link in links:
                        if link.mode == "down":
                            link.mode = "lossy"

                self.later(0.3 + 1.5 * KEEPALIVE_FACTOR, back)
                self.later(period, drop)

            self.later(period, drop)
        elif kind == "partition":
            target = f.target
            if target.split("/")[0] == "producer":
                target = target.replace("producer", self.node("producer"), 1)
            self.partition(self.links(target), f.arg, f.duration)
        elif kind == "delay":
            links = self.links(self.node(f.target) if f.target != "dec1" else "dec1")
            for link in links:
                link.extra_delay = float(f.arg)

            def undelay() -> None:
                for link in links:
                    link.extra_delay = 0.0

            self.later(f.duration, undelay)
        elif kind == "suspend":
            host = world.hosts[f.target if f.target.startswith("dhost") else self.node(f.target)]
            host.suspend()
            self.later(f.duration, host.resume)
        elif kind == "node_stall":
            node = world.nodes[self.node(f.target)]
            node.stalled = True
            self.later(f.duration, lambda: setattr(node, "stalled", False))
        elif kind == "node_death":
            node = world.nodes[self.node(f.target)]
            node.alive = False
            self.later(f.duration, lambda: setattr(node, "alive", True))
        elif kind == "act_crash":
            act = world.actuators[self.node(f.target)]
            act.crash()
            self.later(f.duration, act.start)
        elif kind == "act_pause":
            act = world.actuators[self.node(f.target)]
            act.pause()
            self.later(f.duration, act.unpause)
        elif kind == "dec_crash":
            dec = world.deciders[0]
            dec.crash()
            self.later(f.duration, dec.start)
        elif kind == "dec_pause":
            dec = world.deciders[0]
            dec.pause()
            self.later(f.duration, dec.unpause)
        elif kind == "broker_restart":
            broker.crash()
            self.later(f.duration, lambda: broker.restart(None, "restart"))
        elif kind == "rollback":
            before = self.loop.now - float(f.arg)
            broker.crash()
            self.later(f.duration, lambda: broker.restart(broker.snapshot_before(before), "rollback"))
        elif kind == "dup":
            broker.dup_rate = float(f.arg)
            self.later(f.duration, lambda: setattr(broker, "dup_rate", 0.0))
        elif kind == "idle":
            # Its node restarts with the non-producing flag: keys in place, not forging, until a
            # SIGHUP (which does nothing while ``broken``); its tip stays fresh.
            node = world.nodes[self.node(f.target)]
            node.idle = True
            node.sighup_broken = f.arg == "broken"
            world.changed()
            self.later(f.duration, lambda: setattr(node, "sighup_broken", False))
        else:
            raise ValueError(kind)


KEEPALIVE_FACTOR = 2.0  # seconds a flapping link stays down: long enough to be noticed


# --- one run ------------------------------------------------------------------------------------


def run(
    seed: int, schedule: list[Fault] | None = None, *, verbose: bool = False, mutant: str | None = None
) -> Outcome:
    """One seeded run; the services' logs are off (they cost more than the simulation).

    ``mutant``: a safety fix reverted for this run (``tests.sim.mutants``)."""
    from tests.sim.mutants import mutant as reverted

    previous = logging.root.manager.disable
    if not verbose:
        logging.disable(logging.CRITICAL)
    try:
        with reverted(mutant):
            return _with_inline_within(lambda: _run(seed, schedule, verbose))
    finally:
        logging.disable(previous)


class TraceLog(logging.Handler):
    """In a replay, the services' log lines go to the trace, stamped with simulated time."""

    def __init__(self, world: World) -> None:
        super().__init__(logging.INFO)
        self.world = world

    def emit(self, record: logging.LogRecord) -> None:
        self.world.trace.append(f"{self.world.loop.now:8.2f}   log {record.getMessage()}")


def _run(seed: int, schedule: list[Fault] | None, verbose: bool) -> Outcome:
    schedule = generate(seed) if schedule is None else schedule
    world = World(seed)
    handler: TraceLog | None = None
    if verbose:
        handler = TraceLog(world)
        root = logging.getLogger("bpfailover")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    injector = Injector(world)
    world.start()
    for fault in schedule:
        world.loop.at(fault.at, lambda f=fault: injector.apply(f))
    check_at = HEAL_AT + L_BOUND
    outcome = Outcome(seed, True, None, END, 0)
    try:
        world.loop.run_until(HEAL_AT)
        world.heal()
        world.trace.append(f"{world.loop.now:8.2f} HEAL everything")
        world.loop.run_until(check_at)
        excluded = world.frozen_alerted()
        producing = world.producing()
        if excluded is None and len(producing) != 1:
            raise Violation(
                "L", world.loop.now, f"{len(producing)} nodes forge {L_BOUND:.0f}s after every fault healed"
            )
        world.loop.run_until(END)
        producing = world.producing()
        if excluded is None and len(producing) != 1:
            raise Violation("L", world.loop.now, f"{len(producing)} nodes forge at the end")
        outcome.excluded = excluded
        if world.violation is not None:
            raise world.violation
    except Violation as exc:
        outcome.ok = False
        outcome.violation = exc
        outcome.sim_seconds = world.loop.now
    outcome.events = world.loop.events
    if handler is not None:
        logging.getLogger("bpfailover").removeHandler(handler)
    if verbose or not outcome.ok:
        outcome.notes = report(world, schedule, outcome)
    return outcome


def report(world: World, schedule: list[Fault], outcome: Outcome) -> list[str]:
    lines = [f"seed {world.seed}: {'ok' if outcome.ok else outcome.violation}"]
    lines.append(f"schedule = {schedule!r}")
    lines.append("faults fired:")
    lines += [f"  {t}" for t in world.trace]
    lines.append("broker:")
    lines += [f"  {t:.2f} {what} {detail}" for t, what, detail in world.broker.log]
    lines.append("commands:")
    lines += [f"  {t:.2f} {d} {c.node} {c.role}@{c.epoch}: {c.reason}" for t, d, c in world.commands]
    lines.append("events:")
    lines += [
        f"  {t:.2f} {d} {e.kind} {e.from_ or '-'}->{e.to or '-'} epoch={e.epoch}: {e.reason}"
        for t, d, e in world.events
    ]
    lines.append(f"producing at the end: {world.producing()}")
    for n, node in world.nodes.items():
        lines.append(f"  {n}: forging={node.forging} alive={node.alive} stored={node.stored!r}")
    _ = POOL
    return lines
