"""Rebuilding a pool after a (re)start from what the broker retained.

Inputs: retained role commands, node states (whose epochs the actuators keep on disk,
so they survive a broker that lost everything) and our own last DeciderStatus (for
pause, maintenance, freeze, and the transition in progress). The result is one of:

- steady: the producer commanded at the highest epoch has applied it;
- a transition resumed at its own epoch (demotions still missing are sent, the target
  is promoted once safe) — never a second transition for the same change;
- a recovery change to the node the actuators say was producer, when the broker lost
  the role commands (so that a fenced producer gets a command to come back on);
- nothing known: the pool bootstraps through the normal rule.
"""

from __future__ import annotations

from collections import deque

from bpfailover.decider import transition
from bpfailover.decider.emit import Outbox
from bpfailover.decider.model import NodeView, PoolView, Transition
from bpfailover.decider.rule import rank, why_not
from bpfailover.decider.safety import applied, might_produce
from bpfailover.protocol.wire import DeciderStatus


def _restore_operator_state(out: Outbox) -> None:
    view = out.view
    status = view.read_back_status
    if status is None:
        return
    view.paused = status.paused
    view.paused_until = status.paused_until
    view.frozen = status.frozen
    view.maintenance = {n: u for n, u in status.maintenance.items() if n in view.nodes}
    _restore_flap_history(out, status)


def _mono_of(wall: float, out: Outbox) -> float:
    """A past unix time on our monotonic clock. One from the future (a clock stepped back, or
    another host's clock ahead) counts as now: the later a change, the longer it holds us back."""
    return out.now.mono - max(0.0, out.now.wall - wall)


def _restore_flap_history(out: Outbox, status: DeciderStatus) -> None:
    """min_switch_interval and the flap budget go on across a restart or a change of decider.

    The status keeps them as unix times; a wall clock stepped between the two readings moves
    them by as much (documented in docs/decider.md). Merged with what this process already
    knows (a standby that was active before), so that nothing is forgotten.
    """
    view, now = out.view, out.now
    window = out.ctx.settings.flap_window
    walls = sorted({round(t, 3) for t in [*status.changes, *view.changes_wall] if now.wall - t < window})
    view.changes_wall = deque(walls)
    view.changes = deque(_mono_of(t, out) for t in walls)
    last = max((t for t in (status.last_change_at, view.last_change_wall) if t is not None), default=None)
    if last is not None:
        view.last_change_wall, view.last_change_mono = last, _mono_of(last, out)


def _producing_in_states(view: PoolView, epoch: int) -> NodeView | None:
    """The node whose actuator says it was producer at ``epoch`` (applied, or fenced from it).

    Not one in the middle of an apply (it may be leaving producer), nor one in dry-run (it
    applies no command, so it cannot be the producer the commands made).
    """
    for node in view.nodes.values():
        s = node.state
        if s is None or s.epoch != epoch or s.dry_run or not node.claim_trusted:
            continue
        if s.fenced or (s.role == "producer" and s.pending is None):
            return node
    return None


def recover(out: Outbox) -> None:
    view, ctx, now = out.view, out.ctx, out.now
    _restore_operator_state(out)
    view.recovered = True
    epoch = view.known_epoch()
    status = view.read_back_status
    if status is not None:
        epoch = max(epoch, status.epoch)
        if status.transition is not None:
            epoch = max(epoch, status.transition.epoch)
    view.epoch = epoch
    saved = status.transition if status is not None and status.transition is not None else None
    if saved is not None and saved.epoch != epoch:
        saved = None
    if saved is not None and (saved.to not in view.nodes or (saved.from_ and saved.from_ not in view.nodes)):
        saved = None

    commanded = [n for n in view.nodes.values() if n.command is not None and n.command.epoch == epoch]
    producer = next((n for n in commanded if n.command and n.command.role == "producer"), None)

    if producer is not None:
        from_ = saved.from_ if saved is not None and saved.to == producer.name else None
        kind = saved.kind if saved is not None and saved.to == producer.name else "recovery"
        if applied(producer, epoch) or (saved is None and producer.state is None):
            view.producer = producer.name
            out.status()
            out.event("recovered", f"{producer.name} is producer at epoch {epoch}", to=producer.name)
            return
        # Promotion was sent; wait for it to be applied, with a fresh apply_timeout.
        view.producer = from_
        view.transition = Transition(
            kind=kind,
            from_=from_,
            to=producer.name,
            epoch=epoch,
            reason="resumed after a decider restart",
            started=now,
            phase="promote",
            promoted_mono=now.mono,
            blocked_by=frozenset({from_}) if from_ else frozenset(),
            # An error it reports already may predate the command: only a new one abandons it early.
            target_error=producer.state.error if producer.state is not None else None,
        )
        out.status()
        out.event(
            "recovered",
            f"resuming {kind} at epoch {epoch}: waiting for {producer.name} to apply producer",
            from_=from_,
            to=producer.name,
        )
        transition.advance(out)
        return

    relayed = {n.name for n in commanded}
    open_nodes = [n for n in view.nodes.values() if n.name not in relayed]
    if (relayed or saved is not None) and open_nodes:
        # A change at this epoch began (its status or demotions went out), the promotion
        # did not: finish this change.
        if saved is not None and saved.to not in relayed:
            to, from_, kind = saved.to, saved.from_, saved.kind
        else:
            best = sorted(open_nodes, key=lambda n: (why_not(view, n, ctx, now) is not None, rank(n)))[0]
            to, from_, kind = best.name, None, "recovery"
        if from_:
            # Unknown actuators might be producing: they too must acknowledge or be fenced.
            blocked = {
                n.name
                for n in view.nodes.values()
                if n.name != to and (n.state is None or might_produce(view, n, from_))
            }
        else:
            # Who was producer is lost with the status (e.g. replaced by a Will): every other
            # node must acknowledge relay at this epoch or be certainly fenced.
            blocked = {n.name for n in view.nodes.values() if n.name != to}
        view.producer = from_
        txn = Transition(
            kind=kind,
            from_=from_,
            to=to,
            epoch=epoch,
            reason="resumed after a decider restart",
            started=now,
            operator=saved is not None and kind in ("switchover", "failover"),
            blocked_by=frozenset(blocked),
        )
        view.transition = txn
        out.status()
        out.event("recovered", f"resuming {kind} to {to} at epoch {epoch}", from_=from_, to=to)
        for node in open_nodes:
            if node.name != to:
                out.command(node.name, "relay", epoch, f"{kind} to {to} at epoch {epoch}: demote first")
        transition.advance(out)
        return

    was = _producing_in_states(view, epoch) if epoch > 0 else None
    if was is not None:
        # The broker lost the role commands; the actuators still know who was producer.
        out.event(
            "recovered",
            f"no retained role commands at epoch {epoch}; {was.name} reports producer: re-commanding it",
            to=was.name,
        )
        transition.start(
            out,
            kind="recovery",
            to=was.name,
            from_=None,
            reason=f"restore role commands lost by the broker: {was.name} was producer at epoch {epoch}",
            operator=True,
        )
        return
    out.status()
    out.event("recovered", f"no producer known at epoch {epoch}; waiting for an eligible node to bootstrap")
