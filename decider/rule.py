"""The decision rule (DESIGN §6): who is eligible, who is best, and when to change producer.

Pure functions over a ``PoolView``; gates that change the pool (freezing, pausing)
are applied by the pool machine, which owns the view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bpfailover.decider.model import Context, NodeView, Now, PoolView


@dataclass(frozen=True)
class Decision:
    kind: str  # bootstrap, failover, failback
    to: str
    from_: str | None
    reason: str


def why_not(view: PoolView, node: NodeView, ctx: Context, now: Now, *, count_rise: bool = True) -> str | None:
    """Why ``node`` cannot be promoted now, or None when it is eligible (``count_rise=False``:
    leaving out the ``rise`` consecutive fresh reports)."""
    s = ctx.settings
    if node.priority <= 0:
        return "priority 0"
    if view.in_maintenance(node.name, now):
        return "in maintenance"
    state = node.state
    if state is None:
        return "no actuator state"
    if not state.online:
        return "actuator offline"
    if state.dry_run and not view.dry_run:
        # It would apply nothing: promoting it would leave the pool without a producer. (A dry-run
        # pool commands nobody, so there its would-be decisions ignore the actuators' dry-run.)
        return "actuator in dry-run"
    if state.error:
        return f"apply error: {state.error}"
    if node.starting(now) and node.name != view.producer:
        assert node.start is not None
        return f"restarting after a role change (up to {node.start.left(now):.0f}s more)"
    if node.refused_tip is not None:
        return f"tip refused: {node.refused_tip}"
    if node.skew is not None and abs(node.skew) > s.max_clock_skew:
        return f"clock skew {node.skew:+.1f}s exceeds {s.max_clock_skew:g}s"
    age = node.age(now)
    if math.isinf(age):
        return "no tip"
    if age > s.stale_after:
        return f"tip stale ({age_text(age)} > {s.stale_after:g}s)"
    if count_rise and node.fresh_streak < s.rise:
        return f"{node.fresh_streak} of {s.rise} consecutive fresh reports"
    return None


def rising(view: PoolView, node: NodeView, ctx: Context, now: Now) -> bool:
    """Eligible but for ``rise``: its last report was fresh, and more are on their way (e.g. a
    standby whose only report yet is the retained one, right after a decider restart)."""
    if not 1 <= node.fresh_streak < ctx.settings.rise:
        return False
    return why_not(view, node, ctx, now, count_rise=False) is None


def rank(node: NodeView) -> tuple[int, float, str]:
    """Sort key: highest priority, then freshest tip, then name."""
    fresh = node.tip_time if node.tip_time is not None else -math.inf
    return (-node.priority, -fresh, node.name)


def candidates(
    view: PoolView, ctx: Context, now: Now, exclude: frozenset[str] | set[str] = frozenset()
) -> list[NodeView]:
    """Eligible nodes, best first."""
    found = [n for n in view.nodes.values() if n.name not in exclude and why_not(view, n, ctx, now) is None]
    return sorted(found, key=rank)


def age_text(age: float) -> str:
    """An age for people: tenths below 100 s, where they tell apart 10.2 s from stale_after 10 s."""
    if math.isinf(age):
        return "never reported"
    return f"{age:.1f}s" if age < 100 else f"{age:.0f}s"


def bootstrap(view: PoolView, ctx: Context, now: Now) -> Decision | None:
    """A pool without a producer: initial_producer if eligible, else the best eligible node."""
    ranked = candidates(view, ctx, now)
    if not ranked:
        return None
    initial = view.initial_producer
    names = [n.name for n in ranked]
    if initial in names:
        return Decision("bootstrap", initial, None, f"initial_producer {initial} is eligible")
    why = ""
    if initial is not None:
        why = f" (initial_producer {initial}: {why_not(view, view.nodes[initial], ctx, now)})"
    best = ranked[0]
    return Decision("bootstrap", best.name, None, f"{best.name} is the best eligible node{why}")


def automatic(view: PoolView, ctx: Context, now: Now) -> Decision | None:
    """The change the rule calls for in a pool with producer ``view.producer``, if any.

    min_switch_interval, the flap budget and pausing are applied by the caller.
    """
    if view.producer is None:
        return bootstrap(view, ctx, now)
    producer = view.nodes[view.producer]
    age = producer.age(now)
    s = ctx.settings
    if age > s.stale_after and not producer.starting(now):
        # (A producer that its actuator restarted for this role is replaying its ledger: its tip
        # cannot be read until it is up, for at most its capped start_timeout.)
        ranked = [
            c
            for c in candidates(view, ctx, now, exclude={producer.name})
            # Fresher than the producer: in a network-wide stall nobody is, and nothing happens.
            if producer.tip_time is None or (c.tip_time is not None and c.tip_time > producer.tip_time)
        ]
        if not ranked:
            return None
        best = ranked[0]
        return Decision(
            "failover",
            best.name,
            producer.name,
            f"producer {producer.name} tip age {age_text(age)} > stale_after {s.stale_after:g}s; "
            f"{best.name} eligible with tip age {age_text(best.age(now))}",
        )
    if idle_producer(producer, ctx, now):
        # Its tip is fresh (it relays), but it does not forge: a pool must never sit like that.
        ranked = candidates(view, ctx, now, exclude={producer.name})
        if ranked:
            best = ranked[0]
            return Decision(
                "failover",
                best.name,
                producer.name,
                f"producer {producer.name} seen not forging for {producer.not_forging_for(now):.0f}s "
                f"> not_forging_after {s.not_forging_after:g}s; {best.name} eligible with tip age "
                f"{age_text(best.age(now))}",
            )
    if s.failback:
        ranked = candidates(view, ctx, now, exclude={producer.name})
        if ranked and ranked[0].priority > producer.priority:
            best = ranked[0]
            return Decision(
                "failback",
                best.name,
                producer.name,
                f"{best.name} (priority {best.priority}) is eligible and preferred "
                f"over {producer.name} (priority {producer.priority})",
            )
    return None


def idle_producer(producer: NodeView, ctx: Context, now: Now) -> bool:
    """A producer seen not forging for ``not_forging_after`` (its actuator re-applied producer
    meanwhile): unhealthy, whatever its tip says."""
    idle = producer.not_forging_for(now)
    return producer.not_forging_since is not None and idle >= ctx.settings.not_forging_after


def too_soon(view: PoolView, ctx: Context, now: Now) -> float | None:
    """Seconds left of min_switch_interval since the last change, or None."""
    if view.last_change_mono is None:
        return None
    left = view.last_change_mono + ctx.settings.min_switch_interval - now.mono
    return left if left > 0 else None


def budget_spent(view: PoolView, ctx: Context, now: Now) -> bool:
    """True when max_failovers automatic changes happened within flap_window."""
    window = ctx.settings.flap_window
    while view.changes and view.changes[0] <= now.mono - window:
        view.changes.popleft()
        if view.changes_wall:
            view.changes_wall.popleft()
    return len(view.changes) >= ctx.settings.max_failovers
