"""The decider's pure core: messages and clock readings in, actions out.

No I/O and no clock of its own (h11 style). The shell feeds it every decoded message
and a tick every ``decider.tick`` seconds, and publishes the actions it returns, in
order. ``Now`` carries a monotonic reading (intervals) and a wall reading (tip ages,
timestamps).

    decider = Decider(settings, pools, "decider-1", keepalive=30, now=now)
    actions = decider.on_link(True, now)          # connected; startup_grace starts
    actions = decider.on_tip("pool1", report, now, retained=False)
    actions = decider.tick(now)

Nothing is decided until the link has been up for startup_grace: retained messages
and fresh reports arrive meanwhile, then each pool is recovered (``recovery``) and
evaluated on every message and every tick. While the link is down nothing is decided.
"""

from __future__ import annotations

from collections.abc import Iterable

from bpfailover.settings import DeciderSettings, PoolSpec
from bpfailover.wire import ControlRequest, DeciderStatus, NodeState, RoleCommand, TipReport
from decider.actions import Action, PublishStatus
from decider.emit import build_status
from decider.model import Context, Now, PoolView
from decider.pool import PoolMachine


class Decider:
    def __init__(
        self,
        settings: DeciderSettings,
        pools: Iterable[PoolSpec],
        decider_id: str,
        *,
        keepalive: float,
        now: Now,
    ) -> None:
        self.ctx = Context(settings, decider_id, keepalive)
        self.pools: dict[str, PoolMachine] = {}
        for spec in pools:
            dry = settings.dry_run if spec.dry_run is None else spec.dry_run
            self.pools[spec.id] = PoolMachine(spec, self.ctx, dry)
        self.started = now
        self.link_up = False
        self.ready_at: float | None = None  # mono time when startup_grace ends

    # --- queries ------------------------------------------------------------------------------

    def knows(self, pool: str, node: str | None = None) -> bool:
        machine = self.pools.get(pool)
        return machine is not None and (node is None or node in machine.view.nodes)

    def view(self, pool: str) -> PoolView:
        return self.pools[pool].view

    def ready(self, now: Now) -> bool:
        return self.link_up and self.ready_at is not None and now.mono >= self.ready_at

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
        if not self.pools[pool].on_tip(report, at, retained):
            return []
        return self._evaluate(pool, now)

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
