"""The decider's pure core: messages and clock readings in, actions out.

No I/O and no clock of its own (h11 style). The shell feeds it every decoded message
and a tick every ``decider.tick`` seconds, and publishes the actions it returns, in
order. ``Now`` carries a monotonic reading (intervals) and a wall reading (tip ages,
timestamps).

    decider = Decider(settings, pools, "decider-1", keepalive=30, now=now)
    actions = decider.on_link(True, now)          # connected; startup_grace starts
    actions = decider.on_tip("pool1", report, now, retained=False)
    actions = decider.tick(now)

Nothing is decided until the link has been up for startup_grace and, when the shell
says it watches for it (``wait_for_read``), everything the broker retained has been
read (``on_retained_read``): at 10,000 pools that read takes longer than any sensible
grace, and a pool recovered from half its retained messages would be re-commanded.
Then each pool is recovered (``recovery``) and evaluated on every message and every
tick. While the link is down nothing is decided.

With an ``instance`` (the service always gives one) the core is one of possibly several
deciders for its pools (``bpfailover.decider.peers``): it publishes its presence, reads the others',
and decides only while it is the active one. A passive decider keeps its view current
(every message is taken in) but publishes no role command, status or event; when it
becomes active, each pool is recovered as after a restart. A live duplicate of its own id
sets ``refused``: the shell then stops the process.

Between ticks the core keeps, per pool, the instant its producer's tip goes stale
(``next_due``): ``due`` evaluates those pools at that instant, so a failover is decided
within milliseconds of the condition becoming true rather than at the next tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from bpfailover.decider.actions import Action, PublishEvent, PublishPresence, PublishStatus, Reject
from bpfailover.decider.emit import build_status, node_inputs
from bpfailover.decider.facts import (
    ControlAsked,
    Due,
    Fact,
    LinkChanged,
    PresenceSeen,
    RetainedReadDone,
    RoleReadBack,
    StateSeen,
    StatusReadBack,
    Tick,
    TipSeen,
)
from bpfailover.decider.model import Context, Now, PoolView
from bpfailover.decider.peers import Peers
from bpfailover.decider.pool import PoolMachine
from bpfailover.protocol.wire import (
    ControlRequest,
    DeciderStatus,
    DecisionEvent,
    NodeState,
    RoleCommand,
    TipReport,
)
from bpfailover.settings import DeciderSettings, PoolSpec

STALE_MARGIN = 0.001  # seconds
PRESENCE_INTERVAL = 10.0  # seconds: at most this long between two presences of a decider


class Decider:
    def __init__(
        self,
        settings: DeciderSettings,
        pools: Iterable[PoolSpec],
        decider_id: str,
        *,
        keepalive: float,
        now: Now,
        wait_for_read: bool = False,
        instance: str | None = None,
    ) -> None:
        self.ctx = Context(settings, decider_id, keepalive, instance=instance)
        self.peers: Peers | None = None
        self.active = True  # without an instance: the only decider, as before
        if instance is not None:
            self.peers = Peers(decider_id, instance, settings.standby, settings.takeover_delay, now)
            self.active = False
            self.ctx.mode = "starting"
        # Set when a live decider with our id and another instance shows up while we start, or
        # when both decide and we lose the tie-break: the shell exits with this line.
        self.refused: str | None = None
        self._presence_due: float | None = None  # mono time the next presence refresh is due
        self._wait_for_read = wait_for_read
        self.pools: dict[str, PoolMachine] = {}
        for spec in pools:
            dry = settings.dry_run if spec.dry_run is None else spec.dry_run
            self.pools[spec.id] = PoolMachine(spec, self.ctx, dry)
        self.started = now
        self.link_up = False
        self.ready_at: float | None = None  # mono time when startup_grace ends
        self.read_done = not wait_for_read  # everything retained has been read
        # (wall instant, pool): when a pool's producer goes stale; one live entry per pool.
        self._due: list[tuple[float, str]] = []
        self._due_at: dict[str, float] = {}

    # --- queries ------------------------------------------------------------------------------

    def knows(self, pool: str, node: str | None = None) -> bool:
        machine = self.pools.get(pool)
        return machine is not None and (node is None or node in machine.view.nodes)

    def view(self, pool: str) -> PoolView:
        return self.pools[pool].view

    def ready(self, now: Now) -> bool:
        return self.link_up and self.read_done and self.ready_at is not None and now.mono >= self.ready_at

    def deciding(self, now: Now) -> bool:
        return self.active and self.ready(now)

    def next_due(self) -> float | None:
        """The wall instant of the earliest producer going stale, if any is scheduled."""
        return self._due[0][0] if self._due else None

    # --- the one way in ------------------------------------------------------------------------

    def process(self, fact: Fact, now: Now) -> list[Action]:
        """Take one fact, return what to publish, in order. The shell and the simulation use
        only this; the methods below are its cases."""
        match fact:
            case TipSeen(pool, report, received_at, retained):
                return self.on_tip(pool, report, now, received_at=received_at, retained=retained)
            case StateSeen(pool, state, trusted):
                return self.on_state(pool, state, now, trusted=trusted)
            case RoleReadBack(pool, command, retained):
                return self.on_role(pool, command, now, retained=retained)
            case StatusReadBack(pool, status, retained):
                return self.on_status(pool, status, now, retained=retained)
            case PresenceSeen(pool, status, retained):
                return self.on_presence(pool, status, now, retained=retained)
            case ControlAsked(pool, request, refused, by):
                if by is not None:
                    request = request.model_copy(update={"requested_by": by})
                return self.on_control(pool, request, now, refused=refused)
            case LinkChanged(up):
                return self.on_link(up, now)
            case RetainedReadDone():
                self.on_retained_read()
                return self.tick(now)
            case Tick():
                return self.tick(now)
            case Due():
                return self.due(now)
        raise TypeError(f"not a decider fact: {fact!r}")

    # --- inputs -------------------------------------------------------------------------------

    def _evaluate(self, pool: str, now: Now) -> list[Action]:
        return self.pools[pool].evaluate(now) if self.deciding(now) else []

    def on_link(self, connected: bool, now: Now) -> list[Action]:
        actions: list[Action] = []
        if not connected and self.link_up and self.peers is not None and self.peers.multi():
            # Cut off, another decider may take over: when the link is back, decide again only
            # after everything retained is read (its presence among it), as at a start.
            actions += self._set_active(False, now, "lost the broker: another decider may take over")
            self.read_done = not self._wait_for_read
        if connected and not self.link_up:
            if self.ready_at is None:
                self.ready_at = now.mono + self.ctx.settings.startup_grace
            else:
                for machine in self.pools.values():
                    machine.on_link_up(now)
            self._presence_due = now.mono  # announce ourselves (a duplicate answers at once)
        self.link_up = connected
        return actions + self._presence(now)

    def on_retained_read(self) -> None:
        """The shell saw the end of the retained messages: startup_grace may now end the wait."""
        self.read_done = True

    def on_tip(
        self,
        pool: str,
        report: TipReport,
        now: Now,
        *,
        received_at: float | None = None,
        retained: bool = False,
    ) -> list[Action]:
        at = now.wall if received_at is None else received_at
        machine = self.pools[pool]
        taken = machine.on_tip(report, at, retained)
        if isinstance(taken, str):
            return [Reject(pool, report.node, "future", taken), *self._evaluate(pool, now)]
        if not taken:
            return []
        if report.node == machine.view.producer:
            self._schedule(machine, now.wall)
        return self._evaluate(pool, now)

    def _schedule(self, machine: PoolMachine, wall: float) -> None:
        """Remember when this pool's producer goes stale, unless it is already or sooner kept."""
        view = machine.view
        node = view.nodes.get(view.producer) if view.producer is not None else None
        if node is None or node.tip_time is None:
            return
        # Just past the instant: the rule wants an age strictly above stale_after.
        instant = node.tip_time + self.ctx.settings.stale_after + STALE_MARGIN
        kept = self._due_at.get(view.id)
        if instant <= wall or (kept is not None and kept <= instant):
            return
        self._due_at[view.id] = instant
        heapq.heappush(self._due, (instant, view.id))

    def due(self, now: Now) -> list[Action]:
        """Evaluate the pools whose producer went stale since the last call."""
        actions: list[Action] = []
        if not self.deciding(now):
            return actions  # kept: the first evaluation after the wait covers them
        while self._due and self._due[0][0] <= now.wall:
            instant, pool = heapq.heappop(self._due)
            if self._due_at.get(pool) != instant:
                continue  # superseded by an earlier instant, already handled
            del self._due_at[pool]
            machine = self.pools[pool]
            actions.extend(machine.evaluate(now))
            # Its producer reported meanwhile, or another node is producer now; if it is still
            # stale, the tick and the pool's own messages take it from here.
            self._schedule(machine, now.wall)
        return actions

    def on_state(self, pool: str, state: NodeState, now: Now, *, trusted: bool = True) -> list[Action]:
        actions = self.pools[pool].on_state(state, now, trusted=trusted)
        return actions + self._evaluate(pool, now)

    def on_role(self, pool: str, command: RoleCommand, now: Now, *, retained: bool) -> list[Action]:
        actions = self.pools[pool].on_role(command, retained, now)
        return actions + self._evaluate(pool, now)

    def on_status(self, pool: str, status: DeciderStatus, now: Now, *, retained: bool) -> list[Action]:
        self.pools[pool].on_status(status, retained)
        return self._evaluate(pool, now)

    def on_presence(self, pool: str, status: DeciderStatus, now: Now, *, retained: bool) -> list[Action]:
        """Another decider's presence (or our own read back, ignored)."""
        if self.peers is None:
            return []
        duplicate = self.peers.on_presence(status, now, retained=retained)
        if duplicate is None:
            return self._update(now)
        starting = not self.ready(now) and not self.active
        # We are the newcomer: refuse to run for this id. (Two starting at once: the one with
        # the greater instance id refuses, so that one of them goes on.)
        if starting and (duplicate.mode != "starting" or duplicate.instance < (self.ctx.instance or "")):
            self.refused = duplicate.line
            return []
        if duplicate.mode == "active" and self.active and duplicate.instance < (self.ctx.instance or ""):
            # Both decide (e.g. each with its own mqtt.client_id): one must stop, the same one
            # in both processes' eyes: the greater instance id.
            actions = self._set_active(False, now, "another decider decides with our id")
            self.refused = duplicate.line
            return actions
        alert = self._pool_alert(f"duplicate:{duplicate.instance}", duplicate.line, now)
        if alert:
            self._presence_due = now.mono  # answer at once (once): the newcomer sees us, and refuses
        return alert + self._presence(now)

    def on_control(
        self, pool: str, request: ControlRequest, now: Now, *, refused: str | None = None
    ) -> list[Action]:
        if self.peers is not None and self.peers.multi() and not self.active:
            return []  # the active decider answers; a standby keeps quiet
        # Evaluating first recovers the pool once startup_grace is over; before that it refuses.
        actions = self._evaluate(pool, now)
        return actions + self.pools[pool].on_control(request, now, refused=refused)

    def tick(self, now: Now) -> list[Action]:
        actions = self._update(now)
        if not self.deciding(now):
            return actions
        for machine in self.pools.values():
            actions.extend(machine.evaluate(now))
        return actions

    # --- which decider decides ----------------------------------------------------------------

    def _update(self, now: Now) -> list[Action]:
        """Become active or passive as the peers' presences say (see ``bpfailover.decider.peers``)."""
        if self.peers is None or self.refused is not None:
            return []
        actions: list[Action] = []
        if self.ready(now):
            settled = all(m.view.transition is None for m in self.pools.values())
            want, why = self.peers.decide(self.active, settled, now)
            if want != self.active:
                actions += self._set_active(want, now, why)
            elif not self.active and self.ctx.mode == "starting":
                self.ctx.mode = "standby"
                self._presence_due = now.mono
        return actions + self._presence(now)

    def _set_active(self, active: bool, now: Now, why: str) -> list[Action]:
        if active == self.active:
            return []
        self.active = active
        self.ctx.mode = "active" if active else ("standby" if self.ready_at is not None else "starting")
        self._presence_due = now.mono
        actions: list[Action] = []
        for machine in self.pools.values():
            if active:
                machine.activate()
            else:
                actions += machine.deactivate(now)
        if self.peers is not None and self.peers.multi():
            what = "active: deciding" if active else "standby: deferring, no role commands"
            actions += self._pool_event(f"decider {self.ctx.decider_id} is now {what} ({why})", now)
        return actions

    def _pool_event(self, reason: str, now: Now) -> list[Action]:
        """One event per pool: whoever watches a pool's events learns which decider decides it."""
        return [
            PublishEvent(
                m.view.id,
                DecisionEvent(
                    pool=m.view.id,
                    at=now.wall,
                    kind="decider",
                    epoch=m.view.epoch,
                    reason=reason[:1000],
                    inputs=node_inputs(m.view, self.ctx, now),
                ),
            )
            for m in self.pools.values()
        ]

    def _pool_alert(self, key: str, reason: str, now: Now) -> list[Action]:
        machine = next(iter(self.pools.values()), None)
        if machine is None or key in machine.view.alerts:
            return []
        machine.view.alerts.add(key)
        return [
            PublishEvent(
                machine.view.id,
                DecisionEvent(
                    pool=machine.view.id, at=now.wall, kind="alert", epoch=machine.view.epoch, reason=reason
                ),
            )
        ]

    def presence(self, now: Now, *, online: bool = True) -> PublishPresence | None:
        """This decider's presence: its id, instance, standby flag and mode, on the first pool."""
        machine = next(iter(self.pools.values()), None)
        if machine is None or self.peers is None:
            return None
        return PublishPresence(machine.view.id, build_status(machine.view, self.ctx, now, online=online))

    def _presence(self, now: Now) -> list[Action]:
        if self.peers is None or not self.link_up:
            return []
        if self._presence_due is not None and now.mono < self._presence_due:
            return []
        self._presence_due = now.mono + min(self.ctx.settings.status_interval, PRESENCE_INTERVAL)
        made = self.presence(now)
        return [made] if made is not None else []

    # --- presence -----------------------------------------------------------------------------

    def shutdown(self, now: Now) -> list[Action]:
        """Statuses saying offline, for a clean exit (pools not yet recovered are left alone)."""
        actions: list[Action] = []
        for machine in self.pools.values():
            if machine.view.recovered:
                actions.extend(machine.status(now, online=False))
        return actions

    def will(self, now: Now) -> PublishStatus | None:
        """The first pool's status saying offline: the payload of the presence Last Will."""
        machine = next(iter(self.pools.values()), None)
        if machine is None or not machine.view.recovered:
            return None
        return PublishStatus(machine.view.id, build_status(machine.view, self.ctx, now, online=False))
