"""Operator requests on ``{prefix}/{pool}/control``; each gets one answering event.

- switchover --to N: graceful (demote, acknowledgement, promote); refused unless N is eligible.
- failover --to N [--force]: like switchover; with force the old producer's
  acknowledgement is not awaited (the operator asserts it is dead). A forced failover
  also unblocks a change that is stuck waiting for an acknowledgement.
- pause [until] / resume: no automatic changes while paused (would-be decisions go to
  the dry-run topic); resume also unfreezes a pool frozen by the flap budget.
- maintenance N on|off [until]: a node in maintenance is never promoted.

Operator changes are not limited by min_switch_interval or the flap budget, and work
while the pool is paused or frozen. ``until`` is a unix time; answers show it in UTC
ISO-8601 with the time left, e.g. ``paused until 2026-11-26T14:03:26Z (in 1h)``.
"""

from __future__ import annotations

from collections import OrderedDict

from bpfailover.decider import transition
from bpfailover.decider.emit import Outbox, time_text
from bpfailover.decider.rule import why_not
from bpfailover.protocol.wire import ControlRequest

ANSWERS_KEPT = 256


class Refused(Exception):
    """A request that cannot be carried out; the message is the answer's reason."""


def _target(out: Outbox, request: ControlRequest) -> str:
    name = request.to or request.node
    if name is None:
        raise Refused(f"{request.action} needs a node (to)")
    if name not in out.view.nodes:
        raise Refused(f"{name} is not a node of pool {out.view.id}")
    return name


def _until(out: Outbox, request: ControlRequest) -> float | None:
    if request.until is not None and request.until <= out.now.wall:
        raise Refused(f"until {time_text(request.until, out.now.wall)} is not in the future")
    return request.until


def _change(out: Outbox, request: ControlRequest) -> str:
    view, ctx, now = out.view, out.ctx, out.now
    to = _target(out, request)
    forced = request.action == "failover" and request.force
    txn = view.transition
    if txn is not None:
        if not forced:
            raise Refused(
                f"a {txn.kind} to {txn.to} at epoch {txn.epoch} is in progress ({txn.phase}); "
                "wait for it, or use failover --force"
            )
        if txn.to == to and txn.phase == "demote":
            txn.forced = True
            txn.operator = True
            txn.request_id = request.request_id
            return f"epoch {txn.epoch}: promoting {to} without waiting for acknowledgements"
        if txn.to == to:
            raise Refused(f"{to} was already sent producer at epoch {txn.epoch}; waiting for it to apply")
    if to == view.producer and txn is None:
        raise Refused(f"{to} is already the producer at epoch {view.epoch}")
    why = why_not(view, view.nodes[to], ctx, now)
    if why is not None:
        raise Refused(f"{to} is not eligible: {why}")
    # The node last sent producer is the one that must stop: the old producer, or a
    # target of a change in progress that was already promoted.
    if txn is not None and txn.phase == "promote":
        from_ = txn.to
    elif txn is not None:
        from_ = txn.from_
    else:
        from_ = view.producer
    by = request.requested_by
    started = transition.start(
        out,
        kind=request.action,
        to=to,
        from_=from_,
        reason=f"{to} requested by {by}" + (" (forced)" if forced else ""),
        forced=forced,
        operator=True,
        request_id=request.request_id,
    )
    return f"{request.action} to {to} started at epoch {started.epoch}"


def _apply(out: Outbox, request: ControlRequest) -> str:
    view = out.view
    action = request.action
    if action in ("switchover", "failover"):
        return _change(out, request)
    if action == "pause":
        until = _until(out, request)
        view.paused, view.paused_until = True, until
        return "paused" + (f" until {time_text(until, out.now.wall)}" if until is not None else "")
    if action == "resume":
        was_frozen = view.frozen
        view.paused, view.paused_until, view.frozen = False, None, False
        view.changes.clear()
        view.changes_wall.clear()
        view.shadow = None
        return "resumed" + (" (unfrozen, flap budget reset)" if was_frozen else "")
    # maintenance
    node = _target(out, request)
    if request.enabled:
        until = _until(out, request)
        view.maintenance[node] = until
        return f"{node} in maintenance" + (
            f" until {time_text(until, out.now.wall)}" if until is not None else ""
        )
    view.maintenance.pop(node, None)
    return f"{node} out of maintenance"


def handle(out: Outbox, request: ControlRequest, answers: OrderedDict[str, tuple[bool, str]]) -> None:
    """Carry out ``request`` and answer it; a repeated request_id gets the same answer again."""
    if request.request_id in answers:
        ok, reason = answers[request.request_id]
    else:
        try:
            reason = _apply(out, request)
            ok = True
        except Refused as exc:
            ok, reason = False, str(exc)
        answers[request.request_id] = (ok, reason)
        while len(answers) > ANSWERS_KEPT:
            answers.popitem(last=False)
    out.event("control", f"{request.action}: {reason}", request_id=request.request_id, ok=ok)
    if ok:
        out.status()
