"""One pool's state machine: takes in what the broker says, and evaluates.

``evaluate`` runs after every message and on every tick: it recovers the pool once
(after startup_grace), expires pauses and maintenance windows, moves a transition on,
or applies the rule to the steady pool, raises alerts once per condition, and publishes
the status on change and every status_interval.

Nearly every evaluation finds the pool settled: a fresh producer and standby, nothing in
progress, every alert as it should be, no status due. That is checked first, without
building anything (``_settled``), and is then known to hold until new facts come in or
time alone could change it (a tip going stale, the status falling due): until then
``evaluate`` returns at once. The view changes only through this machine's methods,
which is what makes that safe.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from bpfailover.decider import control, recovery, rule, safety, transition
from bpfailover.decider.actions import Action
from bpfailover.decider.emit import Outbox, build_status, status_key
from bpfailover.decider.invariants import fence_warning
from bpfailover.decider.model import Command, Context, NodeView, Now, PoolView, StartGrace
from bpfailover.protocol.wire import ControlRequest, DeciderStatus, NodeState, RoleCommand, TipReport
from bpfailover.settings import PoolSpec

SETTLED_MARGIN = 0.01  # seconds

F = TypeVar("F", bound=Callable[..., Any])


def fact(method: F) -> F:
    """A method that takes in a new fact: whatever was settled must be judged again. The one
    place that says so, for every way in."""

    @functools.wraps(method)
    def wrapped(self: PoolMachine, *args: Any, **kwargs: Any) -> Any:
        self._settled_until = None
        return method(self, *args, **kwargs)

    return wrapped  # type: ignore[return-value]


class Settled(NamedTuple):
    """Until when a settled pool stays settled if no new fact comes in."""

    since: Now
    until_wall: float  # the first tip that keeps it settled goes stale
    until_mono: float  # the status falls due

    def holds(self, now: Now) -> bool:
        # A wall clock stepping back makes stale tips fresh again: judge afresh then.
        return self.since.wall <= now.wall < self.until_wall and self.since.mono <= now.mono < self.until_mono


def fence_key(node: str, fence_after: float) -> str:
    return f"fence:{node}:{fence_after:g}"


def skew_key(node: str) -> str:
    return f"skew:{node}"


def not_forging_key(node: str) -> str:
    return f"notforging:{node}"


def dry_run_key(node: str, *, producing: bool) -> str:
    return f"dryrun:{node}:producer" if producing else f"dryrun:{node}"


class PoolMachine:
    def __init__(self, spec: PoolSpec, ctx: Context, dry_run: bool) -> None:
        self.ctx = ctx
        self.view = PoolView(
            id=spec.id,
            nodes={n.name: NodeView(n.name, n.priority) for n in spec.nodes},
            initial_producer=spec.initial_producer,
            dry_run=dry_run,
        )
        self.answers: OrderedDict[str, tuple[bool, str]] = OrderedDict()
        # Set by an evaluation that found the pool settled; every new fact clears it.
        self._settled_until: Settled | None = None

    # --- facts in -----------------------------------------------------------------------------

    @fact
    def on_tip(self, report: TipReport, received_at: float, retained: bool) -> bool | str:
        """Record a tip report; False for a duplicate or replay (same boot, seq not newer), or
        why it was refused: a time further ahead of our clock than max_clock_skew (a tip that
        would never go stale). The node is not eligible until a sound report comes."""
        node = self.view.nodes[report.node]
        last = node.last_tip
        if last is not None and (
            report.seq <= last.seq if last.boot == report.boot else report.sent_at <= last.sent_at
        ):
            # A replay, or a report of an earlier publisher boot (a rolled-back broker's retained
            # tip): an old tip_time would make a healthy producer look stale.
            return False
        limit = received_at + self.ctx.settings.max_clock_skew
        for what, at in (("tip_time", report.tip_time), ("sent_at", report.sent_at)):
            if at is not None and at > limit:
                node.refused_tip = (
                    f"{what} {at - received_at:.0f}s ahead of the decider's clock "
                    f"(max_clock_skew {self.ctx.settings.max_clock_skew:g}s)"
                )
                node.fresh_streak = 0
                return node.refused_tip  # (not kept as the last tip: its seq proves nothing)
        node.refused_tip = None
        node.last_tip = report
        usable = report.ok and report.tip_time is not None
        fresh = usable and received_at - report.tip_time <= self.ctx.settings.stale_after  # type: ignore[operator]
        node.fresh_streak = node.fresh_streak + 1 if fresh else 0
        if usable:
            node.tip_time = report.tip_time
        if fresh and node.start is not None and report.tip_time > node.start.since:  # type: ignore[operator]
            # Up again: it has a block made after the restart. A tip from before it proves nothing,
            # however young: a node that answers with the chain it had (a slow shutdown, a replay
            # that serves its old tip) is not yet following the chain. (The publisher runs on the
            # node: the restart instant is on the same clock as the tip's slot time.)
            node.start.up = True
        if not retained:
            # A retained report was sent long ago: its delay says nothing about the clock.
            node.skew = received_at - report.sent_at
        return True

    @fact
    def on_state(self, state: NodeState, now: Now, *, trusted: bool = True) -> list[Action]:
        node = self.view.nodes[state.node]
        node.claim_trusted = trusted
        if state.online:
            node.offline_since, node.offline_conn, node.online_conn = None, None, state.conn
        elif node.offline_since is None or (
            state.conn is not None and state.conn != node.offline_conn and state.conn == node.online_conn
        ):
            # The wait restarts at the Will of a connection we saw a report from: the actuator's
            # fence counts from its last acknowledged report, which reaches us before that Will.
            # The Will of a connection that never got a report through (a lossy link that only
            # connects) does not: the actuator had no contact on it, and waiting again at every
            # such Will would never end while the link flaps.
            node.offline_since, node.offline_conn = now.mono, state.conn
        if state.stopped:
            node.stopped_conn = state.conn
        self._note_start(node, state, now)
        self._note_forging(node, state, now)
        newly_fenced = state.fenced and (node.state is None or not node.state.fenced)
        node.state = state
        txn = self.view.transition
        if (
            txn is not None
            and txn.phase == "promote"
            and txn.to == state.node
            and state.pending == "producer"
        ):
            txn.target_applying = True  # an error it reports from now on is this promotion's
        if newly_fenced and self.view.recovered:
            out = Outbox(self.view, self.ctx, now)
            out.event(
                "fenced",
                f"{state.node} demoted itself after losing the broker for {state.fence_after:g}s "
                f"(epoch {state.epoch})",
                to=state.node,
            )
            return out.actions
        return []

    @staticmethod
    def _note_forging(node: NodeView, state: NodeState, now: Now) -> None:
        """A producer seen not forging: from when (its actuator re-applies producer meanwhile)."""
        idle = state.online and state.role == "producer" and state.pending is None and state.forging is False
        if not idle:
            node.not_forging_since = None
        elif node.not_forging_since is None:
            node.not_forging_since = now.mono

    def _note_start(self, node: NodeView, state: NodeState, now: Now) -> None:
        """A restart the actuator ran for a role change: wait for it, timed from now, at most
        max_start_timeout. Only for a role it applied at the epoch of its latest command (a
        restart for a change), online and settled (not pending); anything else ends the wait."""
        since, limit = state.starting_since, state.start_timeout
        command = node.command
        honoured = (
            since is not None
            and limit is not None
            and limit > 0
            and state.online
            and state.pending is None
            and state.role != "unknown"
            and (command is None or (command.epoch == state.epoch and command.role == state.role))
        )
        if not honoured:
            node.start = None
        elif node.start is None or node.start.since != since:
            assert since is not None and limit is not None
            node.start = StartGrace(since, now.mono, min(limit, self.ctx.settings.max_start_timeout))

    @fact
    def on_role(self, command: RoleCommand, retained: bool, now: Now) -> list[Action]:
        """A role command read back: a retained one at start, or our own echo (delivery proof)."""
        view = self.view
        node = view.nodes[command.node]
        current = node.command
        if current is not None and current.epoch == command.epoch and current.role == command.role:
            current.confirmed = True
        elif current is None or command.epoch > current.epoch:
            node.command = Command(command.role, command.epoch, confirmed=True, decider=command.decider)
        elif retained and view.recovered and not view.dry_run:
            # Older than ours, or conflicting at our epoch: the broker rolled back (a crash after
            # its last save, a restore). Put ours back; a newer one is never overwritten.
            current.confirmed = False
            out = Outbox(view, self.ctx, now)
            out.command(
                node.name,
                current.role,
                current.epoch,
                f"republish: the broker held {command.role} at epoch {command.epoch}, older than ours",
            )
            return out.actions
        if command.decider != self.ctx.decider_id and not retained and view.recovered:
            out = Outbox(view, self.ctx, now)
            out.alert(
                f"foreign:{command.decider}",
                f"another decider ({command.decider!r}) commands this pool: {command.node} "
                f"{command.role} at epoch {command.epoch}; run one decider per pool",
            )
            return out.actions
        return []

    @fact
    def on_status(self, status: DeciderStatus, retained: bool) -> None:
        view = self.view
        if not view.recovered:
            # Retained at a start; live too while another decider is active and this one waits:
            # the latest status is what a recovery starts from.
            if retained or (status.instance is not None and status.instance != self.ctx.instance):
                view.read_back_status = status
            return
        if status.decider == self.ctx.decider_id and not status.online:
            # Our presence Will fired while we still run: say we are here again.
            view.last_status = None

    @fact
    def on_control(self, request: ControlRequest, now: Now, *, refused: str | None = None) -> list[Action]:
        out = Outbox(self.view, self.ctx, now)
        if refused is not None:  # nothing of it is applied
            reason = f"{request.action}: refused: {refused}"
            out.event("control", reason, request_id=request.request_id, ok=False)
            return out.actions
        if not self.view.recovered:
            out.event(
                "control",
                f"{request.action}: refused, the decider is still starting (startup_grace); retry shortly",
                request_id=request.request_id,
                ok=False,
            )
            return out.actions
        control.handle(out, request, self.answers)
        return out.actions + self.evaluate(now)

    @fact
    def activate(self) -> None:
        """This decider takes over the pool: the next evaluation recovers it, as after a restart."""
        self.view.recovered = False

    @fact
    def deactivate(self, now: Now) -> list[Action]:
        """Another decider takes over: stop deciding, and keep what we knew as the status to
        recover from should we take over again before anyone publishes a newer one."""
        view = self.view
        if view.recovered:
            view.read_back_status = build_status(view, self.ctx, now)
        view.recovered = False
        view.transition = None
        view.shadow = None
        view.alerts = set()
        view.last_status, view.last_status_mono = None, None
        return []

    @fact
    def on_link_up(self, now: Now) -> None:
        """Our own link came back: what we saw offline is timed from now, to be safe."""
        for node in self.view.nodes.values():
            if node.state is not None and not node.state.online:
                node.offline_since = now.mono
            if node.command is not None:
                # The broker may have lost it meanwhile (amnesia): unless it is read back retained,
                # ``_republish`` sends it again.
                node.command.confirmed = False
                node.command.issued_mono = now.mono
        transition.restart_timers(self.view, now)

    # --- evaluation ---------------------------------------------------------------------------

    # Tests set this: every time the shortcut says "settled", a full evaluation of a copy must
    # agree (publish nothing), so that an edit of the shortcut cannot drift from the rule.
    check_settled = False

    def evaluate(self, now: Now) -> list[Action]:
        settled = self._settled_until
        if settled is not None and settled.holds(now):
            if self.check_settled:
                self._verify_settled(now)
            return []
        self._settled_until = self._settled(now)
        if self._settled_until is not None:
            if self.check_settled:
                self._verify_settled(now)
            return []
        return self._evaluate(now)

    def _verify_settled(self, now: Now) -> None:
        twin = copy.deepcopy(self)
        twin._settled_until = None
        actions = twin._evaluate(now)
        assert not actions, f"pool {self.view.id} judged settled, but the rule would do: {actions}"

    def _evaluate(self, now: Now) -> list[Action]:
        view, ctx = self.view, self.ctx
        out = Outbox(view, ctx, now)
        if not view.recovered:
            recovery.recover(out)
        self._learn(out)
        self._expire(out)
        if view.transition is not None:
            transition.advance(out)
        else:
            self._steady(out)
        self._node_alerts(out)
        self._republish(out)
        interval_due = (
            view.last_status_mono is None or now.mono - view.last_status_mono >= ctx.settings.status_interval
        )
        if interval_due or status_key(view) != view.last_status:
            out.status()
        return out.actions

    def _settled(self, now: Now) -> Settled | None:
        """Whether evaluating at ``now`` would publish nothing and change nothing, and until when.

        The steady pool — recovered, a fresh producer, nothing in progress, paused or in
        maintenance, every alert already as it should be, no status due. Anything less usual
        answers None, and the full evaluation runs. Without new facts, time alone changes
        the answer only when a fresh tip it relies on goes stale, or the status falls due
        (nodes not eligible now cannot become so as the clock moves on).
        """
        view = self.view
        if (
            not view.recovered
            or view.transition is not None
            or view.paused
            or view.maintenance
            or view.shadow is not None
            or view.producer is None
            or view.last_status_mono is None
        ):
            return None
        settings = self.ctx.settings
        if now.mono - view.last_status_mono >= settings.status_interval:
            return None
        producer = view.nodes[view.producer]
        if producer.tip_time is None or producer.age(now) > settings.stale_after:
            return None  # a failover to consider
        ps = producer.state
        if ps is not None and not ps.dry_run and not safety.applied_producer(producer):
            return None  # a producer that lost its role, or is offline: to re-command or replace
        fresh_until = producer.tip_time + settings.stale_after
        if producer.not_forging_since is not None:
            return None  # a producer seen not forging: failed over as time passes
        if any(safety.seen_forging(n) for n in view.nodes.values() if n is not producer):
            return None  # a node forging that is not the producer: demote, or keep blocking
        if any(n.starting(now) for n in view.nodes.values()):
            return None  # a restart's wait ends as time passes: judge afresh until it is over
        ctx = self.ctx
        alerts = view.alerts
        standby = False
        for node in view.nodes.values():
            name, s = node.name, node.state
            if s is not None:
                if s.dry_run:
                    return None
                if safety.applied_producer(node) and (node is not producer or s.epoch > view.epoch):
                    return None  # a rogue producer to demote, or newer state to learn
                if (
                    fence_warning(name, s.fence_after, settings, ctx.keepalive) is not None
                    and fence_key(name, s.fence_after) not in alerts
                ):
                    return None
            skewed = node.skew is not None and abs(node.skew) > settings.max_clock_skew
            if alerts:  # (in a steady pool there are none: no key to format)
                if skewed != (skew_key(name) in alerts):
                    return None
                if (
                    dry_run_key(name, producing=True) in alerts
                    or dry_run_key(name, producing=False) in alerts
                ):
                    return None  # to be cleared
            elif skewed:
                return None
            c = node.command
            if c is not None and not c.confirmed and c.issued_mono is not None and not view.dry_run:
                return None  # may be due for republishing
            if node is not producer and rule.why_not(view, node, ctx, now) is None:
                if settings.failback and node.priority > producer.priority:
                    return None  # a failback to consider
                standby = True
                assert node.tip_time is not None  # eligible
                fresh_until = min(fresh_until, node.tip_time + settings.stale_after)
        if standby == ("nostandby" in alerts) or status_key(view) != view.last_status:
            return None
        # A margin keeps float rounding at the stale instant on the side of judging afresh.
        return Settled(now, fresh_until - SETTLED_MARGIN, view.last_status_mono + settings.status_interval)

    def _expire(self, out: Outbox) -> None:
        view, now = out.view, out.now
        if view.paused and view.paused_until is not None and view.paused_until <= now.wall:
            view.paused, view.paused_until = False, None
            out.event("control", "pause expired: automatic failover resumed", ok=True)
        for name, until in list(view.maintenance.items()):
            if until is not None and until <= now.wall:
                del view.maintenance[name]
                out.event("control", f"maintenance of {name} expired", to=name, ok=True)

    def _steady(self, out: Outbox) -> None:
        view, ctx, now = out.view, out.ctx, out.now
        if self._resync_rogue(out):
            return
        lost = safety.producer_lost(view, ctx, now)
        if lost is not None and self._recommand(out, lost):
            return
        decision = rule.automatic(view, ctx, now) if lost is None else self._replace(out, lost)
        self._standby_alert(out)
        self._not_forging_alert(out, decision)
        if decision is None:
            view.shadow = None
            return
        if decision.kind != "bootstrap":
            left = rule.too_soon(view, ctx, now)
            if left is not None:
                return
            if not view.frozen and rule.budget_spent(view, ctx, now):
                view.frozen = True
                out.event(
                    "frozen",
                    f"flap budget spent: {len(view.changes)} automatic changes within flap_window "
                    f"{ctx.settings.flap_window:g}s; pool frozen, `bpfailover resume` unfreezes it. "
                    f"Would have done: {decision.reason}",
                    from_=decision.from_,
                    to=decision.to,
                )
        held = "frozen" if view.frozen else "paused" if view.is_paused(now) else None
        if held is not None:
            self._shadow(out, decision, held)
            return
        if decision.kind != "bootstrap":
            view.changes.append(now.mono)
            view.changes_wall.append(now.wall)
        transition.start(
            out, kind=decision.kind, to=decision.to, from_=decision.from_, reason=decision.reason
        )

    def _learn(self, out: Outbox) -> None:
        """A node applied producer at an epoch above ours: we are behind (a standby decider took
        over, or we restarted on a broker that lost newer state). Follow it; never fight it."""
        view = out.view
        node = safety.ahead(view)
        if node is None or node.state is None:
            return
        old, epoch = view.epoch, node.state.epoch
        if view.transition is not None and view.transition.epoch >= epoch:
            return  # our own change in progress is newer still
        view.epoch, view.producer, view.transition, view.shadow = epoch, node.name, None, None
        out.event(
            "learned",
            f"{node.name} reports producer at epoch {epoch}, above ours ({old}): a newer decision "
            "was made elsewhere (another decider, or state the broker lost); following it",
            to=node.name,
            epoch=epoch,
        )

    def _recommand(self, out: Outbox, lost: str) -> bool:
        """The producer lost its role but can take it again: command it anew, at a new epoch.

        Recovery, not a failover: no pause, switch interval or flap budget holds it back. A
        fenced node takes producer again only at a higher epoch (the actuator's rule)."""
        view, ctx, now = out.view, out.ctx, out.now
        assert view.producer is not None
        producer = view.nodes[view.producer]
        if not producer.online or rule.why_not(view, producer, ctx, now, count_rise=False) is not None:
            return False
        transition.start(
            out,
            kind="recovery",
            to=producer.name,
            from_=None,
            reason=f"{lost}: re-commanding it at a new epoch",
            operator=True,
        )
        return True

    def _replace(self, out: Outbox, lost: str) -> rule.Decision | None:
        """The producer lost its role and cannot take it again now: fail over to the best node."""
        view, ctx, now = out.view, out.ctx, out.now
        assert view.producer is not None
        ranked = rule.candidates(view, ctx, now, exclude={view.producer})
        if not ranked:
            out.alert(
                f"lost:{view.producer}",
                f"{lost}, and no other node is eligible: the pool has no producer; waiting",
                to=view.producer,
            )
            return None
        best = ranked[0]
        return rule.Decision("failover", best.name, view.producer, f"{lost}; {best.name} is eligible")

    def _shadow(self, out: Outbox, decision: rule.Decision, held: str) -> None:
        """Paused or frozen: publish the would-be change to the dry-run topic, once."""
        view = out.view
        key = (decision.from_, decision.to)
        if view.shadow == key:
            return
        view.shadow = key
        epoch = view.known_epoch() + 1
        reason = f"{held}: would {decision.kind}: {decision.reason}"
        for name in view.nodes:
            if name != decision.to:
                out.would_command(name, "relay", epoch, reason)
        out.would_command(decision.to, "producer", epoch, reason)
        out.event(decision.kind, reason, from_=decision.from_, to=decision.to, epoch=epoch, dry_run=True)

    def _resync_rogue(self, out: Outbox) -> bool:
        """A node producing without our command, at our epoch or below (or none at all, like a
        cloned disk): demote it at an epoch above every one in the pool, re-command ours.

        Only a finished apply counts: while one is pending the reported role is the one being
        left (a demotion in progress still says producer). A dry-run actuator applies no command,
        so re-commanding would not stop it; ``_node_alerts`` tells the operator instead.
        """
        view = out.view
        for node in view.nodes.values():
            s = node.state
            if s is not None and safety.rogue(view, node):
                target = view.producer
                if safety.applied_producer(node):
                    what = f"reports producer at epoch {s.epoch}"
                else:
                    what = f"is seen forging (its role reads {s.role} at epoch {s.epoch})"
                    out.alert(safety.forging_key(node.name), f"{node.name} {what} but is not the producer")
                reason = (
                    f"{node.name} {what} (ours is {view.epoch}) without our "
                    "command: re-commanding the pool at a higher epoch"
                )
                out.alert(f"rogue:{node.name}:{s.epoch}", reason, to=node.name)
                if target is None:
                    return False  # the bootstrap that follows demotes it first
                transition.start(out, kind="resync", to=target, from_=None, reason=reason, operator=True)
                return True
        return False

    @staticmethod
    def _not_forging_alert(out: Outbox, decision: rule.Decision | None) -> None:
        """The producer has been seen not forging for not_forging_after, its tip fresh: say so once
        (a pool must never sit silently not forging), whether or not a failover follows."""
        view, ctx, now = out.view, out.ctx, out.now
        producer = view.nodes[view.producer] if view.producer is not None else None
        if producer is None or not rule.idle_producer(producer, ctx, now):
            return
        then = (
            f"failing over to {decision.to}"
            if decision is not None and decision.from_ == producer.name
            else "no other node is eligible to take over; waiting"
        )
        out.alert(
            not_forging_key(producer.name),
            f"producer {producer.name} is seen not forging for {producer.not_forging_for(now):.0f}s "
            f"(not_forging_after {ctx.settings.not_forging_after:g}s) although its tip is fresh and "
            f"its actuator re-applied producer: {then}",
            to=producer.name,
            kind="not_forging",
        )

    def _standby_alert(self, out: Outbox) -> None:
        view, ctx, now = out.view, out.ctx, out.now
        if view.producer is None:
            return
        standby = rule.candidates(view, ctx, now, exclude={view.producer})
        if standby:
            out.clear("nostandby")
        elif any(
            rule.rising(view, n, ctx, now) or n.starting(now)
            for n in view.nodes.values()
            if n.name != view.producer
        ):
            # A standby on its way to `rise` fresh reports, or restarting after its demotion (for
            # at most its capped start_timeout): no alarm for it yet.
            return
        else:
            out.alert(
                "nostandby", f"no healthy standby for producer {view.producer}", kind="no_healthy_standby"
            )

    def _node_alerts(self, out: Outbox) -> None:
        view, ctx = out.view, out.ctx
        self._no_fence_alert(out)
        for node in view.nodes.values():
            if node.name == view.producer or not safety.seen_forging(node):
                out.clear(safety.forging_key(node.name))  # (the next episode is re-commanded again)
            if node.name != view.producer or node.not_forging_since is None:
                out.clear(not_forging_key(node.name))
            s = node.state
            if s is not None and not node.claim_trusted:
                out.alert(
                    f"claim:{node.name}:{s.epoch}",
                    f"{node.name} reports {s.role} at epoch {s.epoch} without a valid signed command behind "
                    "it: its claim is ignored (a forged state, or an actuator without the decider's key)",
                    to=node.name,
                )
            if s is not None:
                warning = fence_warning(node.name, s.fence_after, ctx.settings, ctx.keepalive)
                if warning is not None:
                    out.alert(fence_key(node.name, s.fence_after), warning, to=node.name)
            self._dry_run_alert(out, node)
            key = skew_key(node.name)
            if node.skew is not None and abs(node.skew) > ctx.settings.max_clock_skew:
                out.alert(
                    key,
                    f"{node.name} clock skew {node.skew:+.1f}s exceeds max_clock_skew "
                    f"{ctx.settings.max_clock_skew:g}s: not eligible until its clock is fixed",
                    to=node.name,
                    kind="clock_skew",
                )
            else:
                out.clear(key)

    @staticmethod
    def _no_fence_alert(out: Outbox) -> None:
        """The producer's actuator is gone without a fence to count on: say that nothing automatic
        will replace it (a clean stop, or fencing disabled), and what the operator can do."""
        view = out.view
        for node in view.nodes.values():
            key = f"nofence:{node.name}"
            s = node.state
            if node.name != view.producer or s is None or s.online or s.dry_run or node.promises_fence():
                out.clear(key)
                continue
            why = "stopped cleanly" if s.stopped or node.stopped_conn == s.conn else "has fencing disabled"
            out.alert(
                key,
                f"producer {node.name}'s actuator is offline and {why}: no fence will demote its node, so "
                f"no failover away from it happens until its actuator is back (start it), or an operator "
                f"who made sure it no longer forges runs `bpfailover failover --force`",
                to=node.name,
            )

    @staticmethod
    def _dry_run_alert(out: Outbox, node: NodeView) -> None:
        """Once per node and per whether it runs producer: its actuator will not act on commands."""
        s = node.state
        producing = s is not None and s.dry_run and s.role == "producer"
        idle = s is not None and s.dry_run and not producing
        producing_key, idle_key = (
            dry_run_key(node.name, producing=True),
            dry_run_key(node.name, producing=False),
        )
        for key, raised in ((producing_key, producing), (idle_key, idle)):
            if not raised:
                out.clear(key)
        if out.view.dry_run or not (producing or idle):
            return
        if producing:
            out.alert(
                producing_key,
                f"{node.name}'s actuator is in dry-run and reports its node runs producer: bpfailover "
                "cannot demote it, and promotes no other node until it stops; demote it by hand (or, "
                "if it is dead, `bpfailover failover --force`)",
                to=node.name,
            )
        else:
            out.alert(
                idle_key,
                f"{node.name}'s actuator is in dry-run: it applies no command, so {node.name} is never "
                "promoted, and no change waits for it",
                to=node.name,
            )

    def _republish(self, out: Outbox) -> None:
        """Commands the broker has not confirmed holding are sent again (same epoch, a no-op)."""
        view, ctx, now = out.view, out.ctx, out.now
        if view.dry_run:
            return
        after = max(ctx.keepalive, 2 * ctx.settings.tick)
        for node in view.nodes.values():
            c = node.command
            if c is None or c.confirmed or c.epoch != view.epoch or c.issued_mono is None:
                continue
            if now.mono - c.issued_mono >= after:
                out.command(node.name, c.role, c.epoch, f"republish: not confirmed after {after:g}s")

    @fact
    def status(self, now: Now, *, online: bool) -> list[Action]:
        out = Outbox(self.view, self.ctx, now)
        out.status(online=online)
        return out.actions
