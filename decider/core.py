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

Between ticks the core keeps, per pool, the instant its producer's tip goes stale
(``next_due``): ``due`` evaluates those pools at that instant, so a failover is decided
within milliseconds of the condition becoming true rather than at the next tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from bpfailover.settings import DeciderSettings, PoolSpec
from bpfailover.wire import ControlRequest, DeciderStatus, NodeState, RoleCommand, TipReport
from decider.actions import Action, PublishStatus, Reject
from decider.emit import build_status
from decider.facts import (
    ControlAsked,
    Due,
    Fact,
    LinkChanged,
    RetainedReadDone,
    RoleReadBack,
    StateSeen,
    StatusReadBack,
    Tick,
    TipSeen,
)
from decider.model import Context, Now, PoolView
from decider.pool import PoolMachine

STALE_MARGIN = 0.001  # seconds


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
    ) -> None:
        self.ctx = Context(settings, decider_id, keepalive)
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
            case StateSeen(pool, state):
                return self.on_state(pool, state, now)
            case RoleReadBack(pool, command, retained):
                return self.on_role(pool, command, now, retained=retained)
            case StatusReadBack(pool, status, retained):
                return self.on_status(pool, status, now, retained=retained)
            case ControlAsked(pool, request):
                return self.on_control(pool, request, now)
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
        return self.pools[pool].evaluate(now) if self.ready(now) else []

    def on_link(self, connected: bool, now: Now) -> list[Action]:
        if connected and not self.link_up:
            if self.ready_at is None:
                self.ready_at = now.mono + self.ctx.settings.startup_grace
            else:
                for machine in self.pools.values():
                    machine.on_link_up(now)
        self.link_up = connected
        return []

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
        if not self.ready(now):
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

    def on_state(self, pool: str, state: NodeState, now: Now) -> list[Action]:
        actions = self.pools[pool].on_state(state, now)
        return actions + self._evaluate(pool, now)

    def on_role(self, pool: str, command: RoleCommand, now: Now, *, retained: bool) -> list[Action]:
        actions = self.pools[pool].on_role(command, retained, now)
        return actions + self._evaluate(pool, now)

    def on_status(self, pool: str, status: DeciderStatus, now: Now, *, retained: bool) -> list[Action]:
        self.pools[pool].on_status(status, retained)
        return self._evaluate(pool, now)

    def on_control(self, pool: str, request: ControlRequest, now: Now) -> list[Action]:
        # Evaluating first recovers the pool once startup_grace is over; before that it refuses.
        actions = self._evaluate(pool, now)
        return actions + self.pools[pool].on_control(request, now)

    def tick(self, now: Now) -> list[Action]:
        if not self.ready(now):
            return []
        actions: list[Action] = []
        for machine in self.pools.values():
            actions.extend(machine.evaluate(now))
        return actions

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
