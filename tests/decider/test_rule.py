"""The decision rule (DESIGN §6) on a fake clock: when, and to whom, the producer changes."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from bpfailover.cli import status
from bpfailover.decider.emit import node_inputs
from bpfailover.decider.metrics import DeciderMetrics
from bpfailover.protocol.topics import Topics
from tests.decider.sim import KEEPALIVE, WALL0, Sim


def _stale_tick(sim: Sim, node: str) -> float:
    """The first whole-second tick (mono) at which ``node``'s tip age exceeds stale_after."""
    last_tip_mono = sim.publishers[node].tip_time - WALL0 + 1000.0
    return math.floor(last_tip_mono + sim.settings.stale_after) + 1.0


@pytest.mark.parametrize(
    ("case", "chain", "actuator", "fence_after", "fenced_delay"),
    [
        ("publisher dies, actuator acknowledges", "dead", "connected", 15.0, None),
        ("chain stalls, actuator acknowledges", "stalled", "connected", 15.0, None),
        ("whole node dies, fence shorter than stale_after", "dead", "cut", 15.0, 15.0 + KEEPALIVE + 2.0),
        ("whole node dies, fence longer than stale_after", "dead", "cut", 100.0, 100.0 + KEEPALIVE + 2.0),
        ("node cut off with fencing disabled", "dead", "cut", 0.0, math.inf),
    ],
)
def test_dead_producer_is_replaced_exactly_when_stale_or_certainly_fenced(
    case: str, chain: str, actuator: str, fence_after: float, fenced_delay: float | None
) -> None:
    sim = Sim(fence_after=fence_after)
    sim.bootstrapped()
    died = sim.clock.mono
    sim.publishers["bp1"].chain = chain
    if actuator == "cut":
        sim.cut("bp1")
    expected = stale = _stale_tick(sim, "bp1")
    if fenced_delay is not None:
        # Certainly fenced is certainly not forging: replaced then, even before its tip is stale.
        expected = died + fenced_delay
    promoted = sim.run(400, until=lambda: sim.producer() == "bp2")
    if math.isinf(expected):
        assert not promoted, case
        assert any(e.kind == "alert" and "fencing disabled" in e.reason for e in sim.events)
        return
    assert sim.promoted_at("bp2") == expected, case
    relay, producer = [c for _, c in sim.roles if c.epoch == 2]
    assert (relay.node, relay.role, producer.node, producer.role) == ("bp1", "relay", "bp2", "producer")
    assert sim.overlaps == []
    failover = next(e for e in sim.events if e.kind == "failover")
    assert failover.from_ == "bp1" and failover.to == "bp2" and failover.epoch == 2
    assert failover.inputs["bp2"].eligible and not failover.inputs["bp1"].eligible
    assert failover.inputs["bp1"].age is not None
    assert (failover.inputs["bp1"].age > 60) == (expected >= stale)


def test_network_wide_stall_changes_nothing() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    before = list(sim.roles)
    for pub in sim.publishers.values():
        pub.chain = "stalled"  # an epoch boundary: every tip stops advancing
    sim.run(600)
    assert sim.roles == before
    for pub in sim.publishers.values():
        pub.chain = "live"
    sim.run(120)
    assert sim.roles == before
    assert "failover" not in sim.kinds()


@pytest.mark.parametrize("rise", [1, 2, 3])
def test_stalled_standby_that_jumps_forward_waits_for_rise_fresh_reports(rise: int) -> None:
    sim = Sim(rise=rise)
    sim.bootstrapped()
    sim.publishers["bp2"].chain = "stalled"
    sim.run(100)
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    assert sim.producer() == "bp1", "a stale standby must not be promoted"
    sim.publishers["bp2"].chain = "live"  # caught up: reports are fresh from now on
    reports_before = sim.publishers["bp2"].seq
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    assert sim.publishers["bp2"].seq - reports_before == rise


def test_flapping_spends_the_budget_then_the_pool_freezes() -> None:
    sim = Sim(max_failovers=2, min_switch_interval=0.0, flap_window=3600.0)
    sim.bootstrapped()

    def fail(node: str, other: str) -> None:
        sim.publishers[other].chain = "live"
        sim.publishers[node].chain = "dead"
        sim.run(100, until=lambda: sim.producer() == other)
        sim.run(15)  # the revived node gets its rise reports in

    fail("bp1", "bp2")
    fail("bp2", "bp1")
    assert [c.node for c in sim.producer_commands()] == ["bp1", "bp2", "bp1"]
    sim.publishers["bp2"].chain = "live"
    sim.publishers["bp1"].chain = "dead"
    sim.run(200)
    assert [c.node for c in sim.producer_commands()] == ["bp1", "bp2", "bp1"], "frozen: no third change"
    frozen = [e for e in sim.events if e.kind == "frozen"]
    assert len(frozen) == 1 and frozen[0].to == "bp2" and "flap budget" in frozen[0].reason
    assert sim.statuses[-1].frozen
    assert [(c.node, c.role) for c in sim.dryruns] == [("bp1", "relay"), ("bp2", "producer")]
    answer = sim.control("resume", "r-resume")
    assert answer.ok and "unfrozen" in answer.reason
    assert sim.producer() == "bp2"
    assert not sim.statuses[-1].frozen


@pytest.mark.parametrize("interval", [0.0, 200.0])
def test_min_switch_interval_holds_the_next_change(interval: float) -> None:
    sim = Sim(min_switch_interval=interval, flap_window=3600.0)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(100, until=lambda: sim.producer() == "bp2")
    changed = sim.clock.mono
    sim.publishers["bp1"].chain = "live"
    sim.publishers["bp2"].chain = "dead"
    stale = _stale_tick(sim, "bp2")
    assert sim.run(400, until=lambda: sim.producer() == "bp1")
    assert sim.promoted_at("bp1", after=changed) == max(stale, changed + interval)


@pytest.mark.parametrize(
    ("priorities", "lagging", "maintenance", "expected"),
    [
        ({"bp1": 100, "bp2": 50, "bp3": 80}, None, None, "bp3"),  # highest priority
        ({"bp1": 100, "bp2": 80, "bp3": 80}, "bp2", None, "bp3"),  # then freshest tip
        ({"bp1": 100, "bp2": 80, "bp3": 80}, None, None, "bp2"),  # then name
        ({"bp1": 100, "bp2": 0, "bp3": 10}, None, None, "bp3"),  # priority 0 is never promoted
        ({"bp1": 100, "bp2": 90, "bp3": 80}, None, "bp2", "bp3"),  # maintenance is skipped
        ({"bp1": 100, "bp2": 0, "bp3": 80}, None, "bp3", None),  # nobody left: nothing happens
    ],
)
def test_three_nodes_priority_then_freshness_then_name(
    priorities: dict[str, int], lagging: str | None, maintenance: str | None, expected: str | None
) -> None:
    sim = Sim(nodes=priorities, interval=5.0)
    sim.bootstrapped()
    if maintenance:
        assert sim.control("maintenance", "m1", node=maintenance).ok
    if lagging:
        sim.publishers[lagging].lag = 20.0  # its tip trails the others' but is fresh
        sim.run(12)
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    assert sim.producer() == (expected or "bp1")
    if expected is None:
        assert any(e.kind == "no_healthy_standby" for e in sim.events)


@pytest.mark.parametrize("failback", [False, True])
def test_no_automatic_failback_unless_configured(failback: bool) -> None:
    sim = Sim(failback=failback, min_switch_interval=100.0)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(100, until=lambda: sim.producer() == "bp2")
    changed = sim.clock.mono
    sim.publishers["bp1"].chain = "live"  # the preferred node is healthy again
    sim.run(600)
    if failback:
        assert sim.producer() == "bp1"
        assert sim.promoted_at("bp1", after=changed) == changed + 100.0
        assert "failback" in sim.kinds()
    else:
        assert sim.producer() == "bp2"


@pytest.mark.parametrize(
    ("initial", "offline", "expected"),
    [("bp1", None, "bp1"), ("bp2", None, "bp2"), ("bp1", "bp1", "bp2"), (None, None, "bp1")],
)
def test_bootstrap_after_startup_grace_at_epoch_1(
    initial: str | None, offline: str | None, expected: str
) -> None:
    sim = Sim(initial=initial, startup_grace=10.0)
    if offline:
        sim.actuators[offline].connected = False
        sim.actuators[offline].auto = False
    sim.start()
    if offline:
        sim.publish_will(offline)
    started = sim.clock.mono
    assert sim.run(60, until=lambda: sim.producer() is not None)
    assert sim.promoted_at(expected) == started + 10.0
    assert [(c.node, c.role, c.epoch) for _, c in sim.roles][-1] == (expected, "producer", 1)
    assert sim.actuators[expected].role == "producer"


def test_clock_skewed_standby_is_not_promoted_and_flagged() -> None:
    sim = Sim()
    sim.publishers["bp2"].skew = -8.0  # sent_at 8 s behind: skew = received - sent = +8 s
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    sim.run(200)
    assert sim.producer() == "bp1"
    skew = [e for e in sim.events if e.kind == "clock_skew"]
    assert len(skew) == 1 and skew[0].to == "bp2"
    assert "clock skew +8.0s exceeds 5s" in (sim.events[-1].inputs["bp2"].why_not or "")


def test_replayed_tip_reports_do_not_count_towards_rise() -> None:
    sim = Sim(rise=2)
    sim.bootstrapped()
    sim.publishers["bp2"].chain = "stalled"
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    sim.publishers["bp2"].chain = "live"
    sim.tip("bp2")
    report = sim.retained[("tip", "bp2")]
    for _ in range(3):  # the same report delivered again (QoS 1 duplicate, or a replay)
        sim.decider.on_tip("pool1", report, sim.now)
    sim.tick()
    assert sim.producer() == "bp1"
    sim.tip("bp2")
    assert sim.producer() == "bp2"


def test_dry_run_pool_reports_the_same_decisions_without_role_commands() -> None:
    sim = Sim(pool_dry_run=True)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    assert sim.roles == []
    assert [(c.node, c.role, c.epoch, c.dry_run) for c in sim.dryruns] == [
        ("bp2", "relay", 1, True),
        ("bp1", "producer", 1, True),
        ("bp1", "relay", 2, True),
        ("bp2", "producer", 2, True),
    ]
    changes = [e for e in sim.events if e.kind in ("bootstrap", "failover", "promoted")]
    assert [e.kind for e in changes] == ["bootstrap", "promoted", "failover", "promoted"]
    assert all(e.dry_run for e in changes)
    assert all(a.role == "relay" and a.epoch == 0 for a in sim.actuators.values())


@pytest.mark.parametrize("reports_pending", [False, True])
def test_a_failed_promotion_is_abandoned_as_soon_as_its_actuator_reports_it(reports_pending: bool) -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80}, apply_timeout=20.0)
    sim.bootstrapped()
    bp2 = sim.actuators["bp2"]
    bp2.fail_promote, bp2.report_pending, bp2.auto = True, reports_pending, False
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    sim.process("bp2")  # applying producer at epoch 2 fails, at once
    abandoned = [e for e in sim.events if e.kind == "abandoned"]
    assert len(abandoned) == 1 and abandoned[0].to == "bp2"
    assert abandoned[0].reason == "bp2 failed to apply producer at epoch 2: restart command failed"
    # Demote before promote still holds for the next candidate: bp2 was sent producer.
    assert sim.producer() == "bp2", "bp3 promoted before bp2 acknowledged relay at epoch 3"
    sim.run(3)
    assert sim.producer() == "bp2"
    acked = sim.clock.mono
    sim.process("bp2")  # relay at epoch 3
    assert sim.producer() == "bp3" and sim.promoted_at("bp3") == acked
    assert [(c.node, c.role, c.epoch) for c in sim.producer_commands()] == [
        ("bp1", "producer", 1),
        ("bp2", "producer", 2),
        ("bp3", "producer", 3),
    ]
    assert sim.actuators["bp3"].role == "producer" and sim.overlaps == []


def test_an_error_the_target_reports_again_after_applying_is_a_failure() -> None:
    """The same error text as before the command counts once the actuator said it was applying."""
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    bp2 = sim.actuators["bp2"]
    bp2.auto, bp2.report_pending = False, True
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    view = sim.decider.view("pool1")
    assert view.transition is not None and view.transition.target_error is None
    view.transition.target_error = "restart command failed"  # as if it had failed so before
    bp2.fail_promote = True
    sim.process("bp2")
    assert [e.to for e in sim.events if e.kind == "abandoned"] == ["bp2"]


def test_a_promotion_not_applied_within_apply_timeout_is_abandoned() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80}, apply_timeout=20.0)
    sim.bootstrapped()
    sim.actuators["bp2"].auto = False  # hung: says nothing at all
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    promoted_bp2 = sim.clock.mono
    assert sim.run(60, until=lambda: "abandoned" in sim.kinds())
    assert sim.clock.mono == promoted_bp2 + 21.0  # the first tick past apply_timeout
    abandoned = next(e for e in sim.events if e.kind == "abandoned")
    assert abandoned.to == "bp2" and "within apply_timeout 20s" in abandoned.reason
    assert sim.producer() == "bp2", "bp2 must acknowledge relay before bp3 is promoted"
    sim.process("bp2")
    assert sim.producer() == "bp3" and sim.overlaps == []


def _with_dry_run_actuator(node: str, role: str = "relay", **settings: object) -> Sim:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80}, **settings)  # type: ignore[arg-type]
    act = sim.actuators[node]
    act.dry_run, act.fence_after, act.role = True, 0.0, role  # as a real dry-run actuator advertises
    sim.bootstrapped()
    return sim


def test_a_dry_run_actuator_is_never_eligible() -> None:
    sim = _with_dry_run_actuator("bp2")
    promoted = next(e for e in sim.events if e.kind == "promoted")
    assert (promoted.inputs["bp2"].eligible, promoted.inputs["bp2"].why_not) == (False, "actuator in dry-run")
    answer = sim.control("switchover", "s1", to="bp2")
    assert answer.ok is False and answer.reason == "switchover: bp2 is not eligible: actuator in dry-run"
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp3"), "bp3, not the higher-priority bp2"
    assert "bp2" not in [c.node for c in sim.producer_commands()]
    assert any(e.kind == "alert" and "bp2's actuator is in dry-run" in e.reason for e in sim.events)


def test_a_dry_run_pool_ignores_the_actuators_dry_run() -> None:
    """With the decider in dry-run too (a trial), its would-be decisions treat nodes as real."""
    sim = _with_dry_run_actuator("bp2", pool_dry_run=True)
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    assert [(c.node, c.role) for c in sim.dryruns if c.role == "producer"] == [
        ("bp1", "producer"),
        ("bp2", "producer"),
    ]


def test_the_producer_is_reported_as_not_a_candidate() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    promoted = sim.events[-1]
    assert promoted.kind == "promoted" and promoted.to == "bp1"
    assert (promoted.inputs["bp1"].eligible, promoted.inputs["bp1"].why_not) == (False, "producer")
    assert promoted.inputs["bp2"].eligible and promoted.inputs["bp3"].eligible
    metrics = DeciderMetrics(CollectorRegistry())
    metrics.observe_view(sim.decider.view("pool1"), sim.decider.ctx, sim.now)

    def eligible(node: str) -> float | None:
        return metrics.registry.get_sample_value("bpfailover_node_eligible", {"pool": "pool1", "node": node})

    assert (eligible("bp1"), eligible("bp2"), eligible("bp3")) == (0.0, 1.0, 1.0)
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    failover = next(e for e in sim.events if e.kind == "failover")
    # At the decision the old producer is still the producer; its tip age says why it goes.
    assert failover.inputs["bp1"].why_not == "producer" and failover.inputs["bp1"].age > 60  # type: ignore[operator]
    assert failover.inputs["bp2"].eligible
    done = sim.events[-1]
    assert done.kind == "promoted" and done.inputs["bp2"].why_not == "producer"
    assert done.inputs["bp1"].why_not is not None and done.inputs["bp1"].why_not.startswith("tip stale")
    metrics.observe_view(sim.decider.view("pool1"), sim.decider.ctx, sim.now)
    assert (eligible("bp1"), eligible("bp2"), eligible("bp3")) == (0.0, 0.0, 1.0)


def test_the_status_tool_mirrors_the_dry_run_rule() -> None:
    sim = _with_dry_run_actuator("bp2")
    topics = Topics("bpfailover")
    collector = status.PoolCollector(topics, "pool1", dict(sim.nodes))
    for (kind, node), message in sim.retained.items():
        topic = topics.decider("pool1") if kind == "decider" else getattr(topics, kind)("pool1", node)
        collector.feed(topic, message.to_json(), retain=True, received_at=sim.now.wall)
    rows = {r.name: r for r in status.assess(collector.view, sim.now.wall).rows}
    inputs = node_inputs(sim.decider.view("pool1"), sim.decider.ctx, sim.now)
    assert rows["bp2"].why_not == inputs["bp2"].why_not == "actuator in dry-run"
    assert rows["bp1"].why_not == inputs["bp1"].why_not == "producer"
    assert rows["bp3"].eligible and inputs["bp3"].eligible
