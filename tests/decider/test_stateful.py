"""Property test: any interleaving of tips, node states, acknowledgements, disconnects,
restarts and clock advances keeps the two safety promises.

- No two nodes are ever commanded producer at the same epoch.
- The decider never promotes while the node commanded producer before (or any node whose
  actuator says it is producing) has neither acknowledged relay at the new epoch nor is
  certainly fenced — judged from what this decider instance was told, on its own clock.

And, because the fake actuators follow the role protocol (epoch rule, self-fencing), the
fake nodes are never producer at the same instant.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bpfailover.protocol.wire import RoleCommand
from tests.decider.sim import KEEPALIVE, Sim

NODES = ("bp1", "bp2", "bp3")
node = st.sampled_from(NODES)
FENCE_MARGIN = 2.0


class DeciderWorld(RuleBasedStateMachine):
    sim: Sim

    @initialize(
        fences=st.lists(st.sampled_from([0.0, 3.0, 20.0]), min_size=3, max_size=3),
        min_switch=st.sampled_from([0.0, 20.0]),
        initial=st.sampled_from([None, *NODES]),
    )
    def start(self, fences: list[float], min_switch: float, initial: str | None) -> None:
        self.sim = Sim(
            nodes={"bp1": 100, "bp2": 90, "bp3": 90},
            initial=initial,
            stale_after=12.0,
            min_switch_interval=min_switch,
            flap_window=1000.0,
            apply_timeout=8.0,
            startup_grace=5.0,
            fence_margin=FENCE_MARGIN,
            interval=3.0,
        )
        for name, fence in zip(NODES, fences, strict=True):
            self.sim.actuators[name].fence_after = fence
        self.sim.on_promote = self._check_promotion
        self.will_pending: set[str] = set()
        self.violations: list[str] = []
        self.sim.start()
        self.sim.run(8)  # past startup_grace: the pool is bootstrapped, the interleavings begin

    # --- the oracle ---------------------------------------------------------------------------

    def _safe(self, name: str, epoch: int) -> bool:
        seen = self.sim.seen.get(name)
        if seen is None:
            return False
        state, offline_since = seen
        if state.online:
            return state.role == "relay" and state.epoch >= epoch and state.pending is None
        return (
            state.fence_after > 0
            and offline_since is not None
            and self.sim.clock.mono >= offline_since + state.fence_after + KEEPALIVE + FENCE_MARGIN
        )

    def _check_promotion(self, cmd: RoleCommand) -> None:
        sim = self.sim
        earlier = [c for _, c in sim.roles if c.role == "producer"]
        if any(c.node == cmd.node and c.epoch == cmd.epoch for c in earlier):
            return  # the same command published again (not confirmed yet): no new decision
        same_epoch = {c.node for c in earlier if c.epoch == cmd.epoch} - {cmd.node}
        if same_epoch:
            self.violations.append(f"epoch {cmd.epoch}: {cmd.node} and {same_epoch} commanded producer")
        must_stop = {n for n, (s, _) in sim.seen.items() if s.role in ("producer", "unknown")}
        # A command the broker never received cannot have been applied: the node to stop is
        # the one last commanded producer through the broker.
        held = [c for c in sim.held if c.role == "producer"]
        if held:
            must_stop.add(held[-1].node)
        for name in must_stop - {cmd.node}:
            if not self._safe(name, cmd.epoch):
                self.violations.append(
                    f"promoted {cmd.node} at epoch {cmd.epoch} while {name} neither acknowledged "
                    f"nor certainly fenced (seen: {sim.seen.get(name)})"
                )

    @invariant()
    def safety_holds(self) -> None:
        assert self.violations == []
        assert self.sim.overlaps == [], "two fake nodes were producer at the same instant"

    def teardown(self) -> None:
        # Shown by --hypothesis-show-statistics: how much of the protocol the runs reached.
        kinds = {e.kind for e in self.sim.events}
        event(f"producer commands: {min(len(self.sim.producer_commands()), 4)}")
        for kind in ("failover", "fenced", "abandoned", "switchover", "recovered", "resync"):
            if kind in kinds:
                event(f"reached {kind}")

    # --- the world ------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0, 30.0]))
    def advance(self, seconds: float) -> None:
        """Time passes: publishers report every few seconds, actuators fence, the decider ticks."""
        self.sim.run(seconds, step=min(1.0, seconds))

    @rule(seconds=st.sampled_from([15.0, 30.0]))
    def advance_long(self, seconds: float) -> None:
        """Time passes, drawn as often as any event (so that timeouts are reached)."""
        self.sim.run(seconds)

    @rule(name=node, chain=st.sampled_from(["live", "stalled", "dead"]))
    def chain_changes(self, name: str, chain: str) -> None:
        self.sim.publishers[name].chain = chain

    @rule(how=st.sampled_from(["chain", "chain and actuator", "actuator", "whole node, late will"]))
    def producer_fails(self, how: str) -> None:
        """The node last commanded producer fails (aimed, so that failovers are common)."""
        name = self.sim.producer()
        if name is None:
            return
        if "chain" in how or "node" in how:
            self.sim.publishers[name].chain = "dead"
        if ("actuator" in how or "node" in how) and self.sim.actuators[name].connected:
            late = "late" in how
            self.sim.cut(name, will=not late)
            if late:
                self.will_pending.add(name)

    @rule(name=node)
    def extra_tip(self, name: str) -> None:
        self.sim.tip(name)

    @rule(name=node)
    def actuator_applies(self, name: str) -> None:
        self.sim.process(name)

    @rule(name=node, auto=st.booleans())
    def actuator_speed(self, name: str, auto: bool) -> None:
        self.sim.actuators[name].auto = auto

    @rule(name=node, on=st.booleans())
    def actuator_reports_pending(self, name: str, on: bool) -> None:
        """The actuator reports "applying <role>" (old role, old epoch) before each apply."""
        self.sim.actuators[name].report_pending = on

    @rule(name=node, broken=st.booleans())
    def promotion_breaks(self, name: str, broken: bool) -> None:
        self.sim.actuators[name].fail_promote = broken

    @rule(name=node, will_now=st.booleans())
    def actuator_disconnects(self, name: str, will_now: bool) -> None:
        if not self.sim.actuators[name].connected:
            return
        self.sim.cut(name, will=will_now)
        if not will_now:
            self.will_pending.add(name)

    @precondition(lambda self: bool(self.will_pending))
    @rule(data=st.data())
    def broker_publishes_will(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.will_pending)))
        self.will_pending.discard(name)
        self.sim.publish_will(name)

    @rule(name=node)
    def actuator_reconnects(self, name: str) -> None:
        if self.sim.actuators[name].connected:
            return
        if name in self.will_pending:  # a session takeover publishes the old Will first
            self.will_pending.discard(name)
            self.sim.publish_will(name)
        self.sim.reconnect(name)

    @rule(name=node, data=st.data())
    def old_command_replayed(self, name: str, data: st.DataObject) -> None:
        mine = [c for c in self.sim.held if c.node == name]
        act = self.sim.actuators[name]
        if mine and act.connected:
            act.inbox.append(data.draw(st.sampled_from(mine)))
            self.sim.process(name)

    @rule(lost=st.booleans())
    def decider_commands_get_lost(self, lost: bool) -> None:
        """The decider's role commands do (not) reach the broker: a link that drops in-flight messages."""
        self.sim.lose_commands = lost

    @rule(lose_status=st.booleans())
    def decider_restarts(self, lose_status: bool) -> None:
        self.sim.restart_decider(lose_status=lose_status)

    @rule()
    def decider_link_drops(self) -> None:
        if self.sim.decider_up:
            self.sim.drop_decider()

    @rule()
    def decider_link_returns(self) -> None:
        if not self.sim.decider_up:
            self.sim.connect_decider()

    @rule(to=node)
    def operator_switchover(self, to: str) -> None:
        if self.sim.decider_up:
            self.sim.control("switchover", f"s-{self.sim.clock.mono}", to=to)

    @rule(on=st.booleans())
    def operator_pause(self, on: bool) -> None:
        if self.sim.decider_up:
            self.sim.control("pause" if on else "resume", f"p-{self.sim.clock.mono}")

    @rule(name=node, on=st.booleans())
    def operator_maintenance(self, name: str, on: bool) -> None:
        if self.sim.decider_up:
            self.sim.control("maintenance", f"m-{self.sim.clock.mono}", node=name, enabled=on)


# DECIDER_STATEFUL_EXAMPLES=5000 for a longer search than the default run.
DeciderWorld.TestCase.settings = settings(
    max_examples=int(os.environ.get("DECIDER_STATEFUL_EXAMPLES", "300")),
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_decider_is_safe_under_any_interleaving = DeciderWorld.TestCase
