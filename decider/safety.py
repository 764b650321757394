"""Demote before promote (DESIGN §7): when may the decider promote at a new epoch?

A node that might be producing blocks the promotion until it has acknowledged relay
at the new epoch, or is certainly fenced: its actuator's Last Will arrived at t_off
(our monotonic clock) and fence_after + keepalive + fence_margin have passed since,
and the broker holds our relay command for it, so it cannot come back as producer.

A node whose actuator is in dry-run applies no command: it will never acknowledge, and
it advertises no fence. Waiting for it would wait for ever, so it holds a promotion only
while it reports that its node really runs producer (which bpfailover cannot stop: an
operator must); its "pending" role is only what it would have applied.
"""

from __future__ import annotations

from bpfailover.decider.model import Context, NodeView, Now, PoolView, Transition


def acked(node: NodeView, epoch: int) -> bool:
    """The actuator reports relay applied at ``epoch`` or later, with nothing pending, and its node
    is not seen forging (``NodeState.forging``: a relay that forges has not stopped)."""
    s = node.state
    return (
        s is not None
        and s.online
        and s.role == "relay"
        and s.epoch >= epoch
        and s.pending is None
        and s.forging is not True
        and node.claim_trusted
    )


def seen_forging(node: NodeView) -> bool:
    """Its actuator reports that it sees its node forging (online: a Will says nothing of it)."""
    s = node.state
    return s is not None and s.online and s.forging is True


def applied(node: NodeView, epoch: int) -> bool:
    """The actuator reports producer applied at ``epoch`` or later."""
    s = node.state
    return s is not None and s.online and s.role == "producer" and s.epoch >= epoch and s.pending is None


def in_dry_run(node: NodeView) -> bool:
    """Its actuator is in dry-run: it applies no command (it only says what it would do)."""
    return node.state is not None and node.state.dry_run


def apply_failed(node: NodeView, txn: Transition) -> str | None:
    """Why ``node``, sent producer by ``txn``, will not apply it; None while it still may.

    A failure counts only when it is news since the command: an error other than the one
    the node had when it was sent producer, or any error after it reported applying
    producer. An old error (e.g. read back after a restart) waits for apply_timeout instead.
    """
    s = node.state
    if s is None or not s.online:
        return None
    if s.dry_run:
        return f"{node.name}'s actuator is in dry-run: it applies no command"
    if s.pending is None and s.role != "producer" and s.fenced and s.epoch >= txn.epoch:
        # It accepted producer at this epoch, then fenced itself: it takes it only at a higher one.
        return f"{node.name} fenced itself at epoch {s.epoch}"
    if s.pending is not None or s.role == "producer" or not s.error:
        return None
    if txn.target_applying or s.error != txn.target_error:
        return f"{node.name} failed to apply producer at epoch {txn.epoch}: {s.error}"
    return None


def fenced_from(node: NodeView, ctx: Context) -> float | None:
    """Monotonic time from which ``node`` is certainly fenced; None while it cannot be (online,
    fencing off, or a clean stop: nothing stays behind to fence the node)."""
    s = node.state
    if s is None or s.online or node.offline_since is None or not node.promises_fence():
        return None
    return node.offline_since + ctx.fence_wait(s.fence_after)


def certainly_fenced(node: NodeView, ctx: Context, now: Now) -> bool:
    at = fenced_from(node, ctx)
    return at is not None and now.mono >= at


def reports_producing(node: NodeView) -> bool:
    """Its actuator says it is, or may be, producing (or is about to)."""
    s = node.state
    if s is None:
        return False
    if s.forging is True:
        return True  # seen forging, whatever its files say
    if s.dry_run:
        # Nothing it pends will happen, and a role it cannot detect is not of our making.
        return s.role == "producer"
    return s.role in ("producer", "unknown") or s.pending == "producer"


def might_produce(view: PoolView, node: NodeView, old_producer: str | None) -> bool:
    """Before a transition: could ``node`` be forging now?"""
    if node.name == old_producer:
        return True
    # Commanded producer and not (yet) demoted at a later epoch: it may apply that command
    # any moment, whatever its last state says (e.g. a promotion that failed and is retried).
    if node.command is not None and node.command.role == "producer":
        return True
    if node.state is not None:
        return reports_producing(node)
    # Nothing known. In a brand-new pool (no epoch anywhere) an actuator that never
    # reported has applied nothing; in a pool with a history it may hold an epoch the
    # broker forgot, so it must acknowledge (or be fenced) first.
    return old_producer is None and view.known_epoch() > 0


def demotion_held(node: NodeView, epoch: int) -> bool:
    """The broker holds (retained) our relay command at ``epoch`` or later for ``node``."""
    c = node.command
    return c is not None and c.role == "relay" and c.epoch >= epoch and c.confirmed


def idle_dry_run(node: NodeView, epoch: int) -> bool:
    """A dry-run actuator that does not report producing, once the broker holds its relay command.

    Nothing we command changes what its node runs, so there is nothing to wait for; the held
    relay command is what it finds if it comes back out of dry-run.
    """
    s = node.state
    return s is not None and s.dry_run and s.role != "producer" and demotion_held(node, epoch)


def safe_to_leave(node: NodeView, epoch: int, ctx: Context, now: Now) -> bool:
    return (
        acked(node, epoch)
        or idle_dry_run(node, epoch)
        or (certainly_fenced(node, ctx, now) and demotion_held(node, epoch))
    )


def blockers(view: PoolView, txn: Transition) -> list[NodeView]:
    """Nodes that must be safe before ``txn.to`` is promoted."""
    return [
        n
        for n in view.nodes.values()
        if n.name != txn.to and (n.name in txn.blocked_by or reports_producing(n))
    ]


def waiting_for(view: PoolView, txn: Transition, ctx: Context, now: Now) -> list[NodeView]:
    return [n for n in blockers(view, txn) if not safe_to_leave(n, txn.epoch, ctx, now)]


def wait_text(node: NodeView, epoch: int, ctx: Context, now: Now) -> str:
    """Why we still wait for ``node``, in an operator's words."""
    s = node.state
    if s is None:
        return f"{node.name}: no actuator state seen, cannot know it stopped forging"
    if s.dry_run and s.role == "producer":
        return (
            f"{node.name}: its actuator is in dry-run and reports its node runs producer; it applies "
            "no command, so demote it by hand"
        )
    if s.dry_run:
        return f"{node.name}: actuator in dry-run, waiting for the broker to hold its relay command"
    if s.online:
        applying = f", applying {s.pending}" if s.pending else ""
        return (
            f"{node.name}: online, has not acknowledged relay at epoch {epoch} "
            f"(role {s.role}, epoch {s.epoch}{applying})"
        )
    if not node.promises_fence():
        if s.stopped or (s.conn is not None and s.conn == node.stopped_conn):
            return f"{node.name}: its actuator stopped cleanly, leaving the node as it was: no fence to come"
        return f"{node.name}: offline with fencing disabled (fence_after 0)"
    at = fenced_from(node, ctx)
    if at is not None and now.mono < at:
        return f"{node.name}: offline, certainly fenced in {at - now.mono:.0f}s"
    return f"{node.name}: offline and fenced, waiting for the broker to hold its relay command"


def applied_producer(node: NodeView) -> bool:
    """Its actuator reports producer applied (online, nothing pending, not in dry-run)."""
    s = node.state
    return s is not None and s.online and s.role == "producer" and s.pending is None and not s.dry_run


def rogue(view: PoolView, node: NodeView) -> bool:
    """Producing without our command: applied producer, or seen forging (not pending, not in
    dry-run), not our producer, at or below our epoch (or at none: a cloned disk). Above our epoch
    the decider is behind instead (``ahead``).

    A node seen forging is re-commanded once per episode (``forging_key`` among the alerts): its
    actuator re-applies relay, and stops the node if that is not seen. Commanding it again would
    only churn epochs; while it still forges it blocks every promotion (``reports_producing``)."""
    s = node.state
    if s is None or node.name == view.producer:
        return False
    told = forging_key(node.name) in view.alerts
    forging = seen_forging(node) and s.pending is None and not s.dry_run and not told
    if not applied_producer(node) and not forging:
        return False
    return not node.claim_trusted or s.epoch <= view.epoch


def forging_key(name: str) -> str:
    """The alert raised when a node that is not the producer is seen forging (``rogue``)."""
    return f"forging:{name}"


def ahead(view: PoolView) -> NodeView | None:
    """A node that applied producer at an epoch above ours: newer state the decider must learn."""
    if view.dry_run:
        return None  # a dry-run pool's epochs are its would-be ones, not the nodes'
    found = [
        n
        for n in view.nodes.values()
        if applied_producer(n) and n.claim_trusted and n.state and n.state.epoch > view.epoch
    ]
    return max(found, key=lambda n: (n.state.epoch if n.state else 0, n.name), default=None)


def producer_lost(view: PoolView, ctx: Context, now: Now) -> str | None:
    """Why the pool's producer is no longer forging by our command; None while it is (or may be).

    Its actuator reports another role (it fenced itself, or a rolled-back broker or a failed
    re-promotion left it relay), or it is offline and certainly fenced. Either way the pool
    has no producer, and nothing in the tips says so: the node still relays, its tip fresh.
    """
    if view.producer is None or view.dry_run:
        return None  # (a dry-run pool commands nobody: no node is expected to run what it says)
    node = view.nodes[view.producer]
    s = node.state
    if s is None or s.dry_run or s.epoch > view.epoch:
        return None
    if s.online:
        if s.pending is not None or s.role == "producer":
            return None
        fenced = ", having fenced itself" if s.fenced else ""
        return f"producer {node.name} reports {s.role} at epoch {s.epoch}{fenced}"
    if certainly_fenced(node, ctx, now):
        return f"producer {node.name}'s actuator is offline and its node certainly fenced"
    return None
