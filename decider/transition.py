"""Carrying out a producer change: relays first, wait until safe, promote, confirm.

A change at epoch E publishes relay@E to every node but the target, then waits until
every node that might be producing has acknowledged relay@E or is certainly fenced
(``safety``), then publishes producer@E to the target and waits until it reports
producer at E. A target that cannot be promoted (no longer eligible before the
promotion, its apply reported failed, or not applied within apply_timeout) is abandoned
for the next candidate at epoch E+1. In a dry-run pool, acknowledgements are simulated:
the whole sequence is reported at once.
"""

from __future__ import annotations

from bpfailover.decider import safety
from bpfailover.decider.emit import Outbox
from bpfailover.decider.model import Now, PoolView, Transition
from bpfailover.decider.rule import candidates, why_not

# Changes that do not start min_switch_interval: the first producer, and re-commanding
# the same producer (after the broker lost its roles, or to overrule a rogue command).
NOT_A_SWITCH = frozenset({"bootstrap", "recovery", "resync"})


def start(
    out: Outbox,
    *,
    kind: str,
    to: str,
    from_: str | None,
    reason: str,
    forced: bool = False,
    operator: bool = False,
    request_id: str | None = None,
    abandoned: frozenset[str] = frozenset(),
    also_blocked: frozenset[str] = frozenset(),
) -> Transition:
    """Begin a change at a new epoch: status, event, relay commands, then try to go on.

    ``also_blocked``: nodes that must stop first in any case (those of a change this one continues).
    """
    view, now = out.view, out.now
    blocked_by = frozenset(
        n.name
        for n in view.nodes.values()
        if n.name != to and (n.name in also_blocked or safety.might_produce(view, n, from_))
    )
    must_stop = blocked_by | also_blocked
    epoch = view.known_epoch() + 1
    txn = Transition(
        kind=kind,
        from_=from_,
        to=to,
        epoch=epoch,
        reason=reason,
        started=now,
        forced=forced,
        operator=operator,
        request_id=request_id,
        abandoned=abandoned,
        blocked_by=blocked_by,
        must_stop=must_stop,
    )
    view.transition = txn
    view.epoch = epoch
    # The status is queued first, but it travels on another connection than the commands: a
    # crash may leave the commands on the broker without it. Recovery copes with both (without
    # the status, every other node must acknowledge or be fenced before the promotion).
    out.status()
    out.event(kind, reason, from_=from_, to=to, epoch=epoch, request_id=request_id)
    for name in view.nodes:
        if name != to:
            out.command(name, "relay", epoch, f"{kind} to {to} at epoch {epoch}: demote first")
    advance(out)
    return txn


def _retarget(out: Outbox, txn: Transition, why: str) -> bool:
    """Give up ``txn.to`` for the best other candidate; False when there is none."""
    view, now = out.view, out.now
    given_up = txn.abandoned | {txn.to}
    ranked = candidates(view, out.ctx, now, exclude=given_up)
    target = view.nodes[txn.to]
    if not ranked and target.state is not None and target.state.fenced:
        # Nobody else, and it only fenced itself (a lost link, now back): try it again, at a
        # new epoch, which is the only one it takes producer at.
        ranked = [n for n in candidates(view, out.ctx, now, exclude=txn.abandoned) if n is target]
        given_up = txn.abandoned
    if not ranked:
        out.alert(
            f"stuck:{txn.epoch}",
            f"epoch {txn.epoch}: {why}, and no other node is eligible; waiting",
            to=txn.to,
        )
        return False
    out.event("abandoned", why, from_=txn.from_, to=txn.to, epoch=txn.epoch, request_id=txn.request_id)
    nxt = ranked[0].name
    promoted = txn.phase == "promote"
    start(
        out,
        kind=txn.kind,
        to=nxt,
        # A target that was sent producer is now the node that must stop first.
        from_=txn.to if promoted else txn.from_,
        reason=f"{txn.to} abandoned ({why}); next candidate {nxt}",
        abandoned=given_up,
        request_id=txn.request_id,
        # Whoever had to stop for the change we continue must stop (again) at the new epoch,
        # even a node that was itself the target of a step in between.
        also_blocked=txn.must_stop | txn.blocked_by,
    )
    return True


def _complete(out: Outbox, txn: Transition) -> None:
    view, now = out.view, out.now
    view.producer = txn.to
    view.transition = None
    if txn.kind not in NOT_A_SWITCH:
        view.last_change_mono, view.last_change_wall = now.mono, now.wall
    view.shadow = None
    out.status()
    out.event(
        "promoted",
        f"{txn.to} is producer at epoch {txn.epoch} ({txn.kind})",
        from_=txn.from_,
        to=txn.to,
        epoch=txn.epoch,
        request_id=txn.request_id,
    )


def _promote(out: Outbox, txn: Transition) -> None:
    state = out.view.nodes[txn.to].state
    txn.target_error = state.error if state is not None else None
    txn.target_applying = False
    out.command(txn.to, "producer", txn.epoch, f"{txn.kind}: {txn.reason}")
    txn.phase = "promote"
    txn.promoted_mono = out.now.mono
    out.status()


def advance(out: Outbox) -> None:
    """Move the pool's transition on as far as the facts allow."""
    view, ctx, now = out.view, out.ctx, out.now
    txn = view.transition
    if txn is None:
        return
    if txn.phase == "demote":
        if not (view.dry_run or txn.forced):
            waiting = safety.waiting_for(view, txn, ctx, now)
            if waiting:
                if now.mono - txn.started.mono >= ctx.settings.apply_timeout:
                    detail = "; ".join(safety.wait_text(n, txn.epoch, ctx, now) for n in waiting)
                    out.alert(
                        f"waiting:{txn.epoch}",
                        f"epoch {txn.epoch}: {txn.to} not promoted yet, waiting for {detail}. If that "
                        f"node is dead, `bpfailover failover --to {txn.to} --force` promotes without "
                        "its acknowledgement",
                        to=txn.to,
                    )
                return
            for node in safety.blockers(view, txn):
                key = f"fenced:{txn.epoch}:{node.name}"
                if safety.acked(node, txn.epoch) or key in view.alerts:
                    continue
                view.alerts.add(key)
                if safety.idle_dry_run(node, txn.epoch):
                    out.event(
                        "alert",
                        f"not waiting for {node.name}: its actuator is in dry-run, applies no command and "
                        f"does not report producing (role {node.state.role if node.state else 'unknown'}); "
                        "make sure it does not forge",
                        from_=node.name,
                        to=txn.to,
                        epoch=txn.epoch,
                    )
                    continue
                wait = ctx.fence_wait(node.state.fence_after if node.state else 0.0)
                out.event(
                    "fenced",
                    f"{node.name} is certainly fenced: offline since its Last Will, and fence_after "
                    f"+ keepalive + fence_margin ({wait:g}s) have passed",
                    from_=node.name,
                    to=txn.to,
                    epoch=txn.epoch,
                )
        target = view.nodes[txn.to]
        if not txn.operator:
            why = why_not(view, target, ctx, now)
            if why is not None:
                _retarget(out, txn, f"{txn.to} is no longer eligible ({why})")
                return
        elif safety.in_dry_run(target) and not view.dry_run:
            # Even an operator's choice: a dry-run actuator would leave the pool without a producer.
            _retarget(out, txn, f"{txn.to}'s actuator is in dry-run: it would not apply producer")
            return
        _promote(out, txn)
    if txn.phase == "promote":
        target = view.nodes[txn.to]
        if view.dry_run or safety.applied(target, txn.epoch):
            _complete(out, txn)
            return
        failed = safety.apply_failed(target, txn)
        if failed is not None:
            _retarget(out, txn, failed)
            return
        assert txn.promoted_mono is not None
        overdue = now.mono - txn.promoted_mono > ctx.settings.apply_timeout
        if overdue:
            if target.state is None:
                out.alert(
                    f"noapply:{txn.epoch}",
                    f"epoch {txn.epoch}: {txn.to} has no actuator state; cannot tell whether it applied",
                    to=txn.to,
                )
                return
            _retarget(
                out,
                txn,
                f"{txn.to} did not apply producer at epoch {txn.epoch} within "
                f"apply_timeout {ctx.settings.apply_timeout:g}s",
            )


def restart_timers(view: PoolView, now: Now) -> None:
    """After the decider's own link was down, give the target a fresh apply_timeout."""
    txn = view.transition
    if txn is not None and txn.phase == "promote":
        txn.promoted_mono = now.mono
