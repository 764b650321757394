"""The node's observed forging state (NodeState.forging) in the decider: a node seen forging that
is not the producer is demoted, a relay seen forging never counts as demoted, and a producer seen
not forging while its tip is fresh is failed over after not_forging_after, with an alert."""

from __future__ import annotations

from typing import Any

from bpfailover.decider import safety
from tests.decider.sim import POOL, Sim

NOT_FORGING_AFTER = 60.0


def observed_pool(**overrides: Any) -> Sim:
    settings: dict[str, Any] = {"not_forging_after": NOT_FORGING_AFTER, "min_switch_interval": 0.0}
    settings.update(overrides)
    sim = Sim(**settings)
    for act in sim.actuators.values():
        act.observes = True
    sim.bootstrapped()
    sim.run(30)
    assert sim.producer() == "bp1" and sim.actuators["bp1"].forging is True
    return sim


def relay_commands(sim: Sim, node: str) -> list[int]:
    return [c.epoch for _, c in sim.roles if c.node == node and c.role == "relay"]


def test_a_relay_seen_forging_is_rogue_and_commanded_relay_at_a_higher_epoch_once() -> None:
    sim = observed_pool()
    view = sim.decider.view(POOL)
    epoch = view.epoch
    sim.actuators["bp2"].forging_stuck = True  # its files say relay, the node forges
    sim.publish_state("bp2")
    sim.run(5)
    assert relay_commands(sim, "bp2")[-1] > epoch
    assert any(e.kind == "alert" and "bp2 is seen forging" in e.reason for e in sim.events)
    assert view.producer == "bp1"  # the producer is re-commanded, not replaced
    resynced = view.epoch
    sim.run(60)  # it still forges: no churn of epochs, the alert stays raised
    assert view.epoch == resynced
    assert safety.forging_key("bp2") in view.alerts
    sim.actuators["bp2"].forging_stuck = None  # fixed (its actuator stopped it)
    sim.publish_state("bp2")
    sim.run(2)
    assert safety.forging_key("bp2") not in view.alerts


def test_a_relay_seen_forging_blocks_a_promotion_even_when_it_acknowledged_relay() -> None:
    sim = observed_pool()
    sim.actuators["bp1"].forging_stuck = True  # bp1 will acknowledge relay but keep forging
    sim.control("switchover", to="bp2")
    sim.run(30)
    view = sim.decider.view(POOL)
    assert sim.actuators["bp1"].role == "relay"  # it acknowledged the demotion...
    assert sim.producer() == "bp1" and view.producer != "bp2"  # ...and bp2 was never sent producer
    assert view.transition is not None and view.transition.to == "bp2"
    sim.actuators["bp1"].forging_stuck = None
    sim.publish_state("bp1")
    sim.run(2)
    assert sim.producer() == "bp2"
    assert not sim.overlaps


def test_a_producer_seen_not_forging_with_a_fresh_tip_is_failed_over_after_not_forging_after() -> None:
    sim = observed_pool()
    sim.actuators["bp1"].forging_stuck = False  # restarted non-producing; its files say producer
    sim.publish_state("bp1")
    stopped_at = sim.clock.mono
    sim.run(NOT_FORGING_AFTER - 5)
    assert sim.producer() == "bp1"  # its actuator's re-apply gets its time
    sim.run(20, until=lambda: sim.producer() == "bp2")
    assert sim.producer() == "bp2"
    failed_over = sim.promoted_at("bp2")
    assert failed_over is not None and NOT_FORGING_AFTER <= failed_over - stopped_at <= NOT_FORGING_AFTER + 3
    alerts = [e for e in sim.events if e.kind == "not_forging"]
    assert len(alerts) == 1 and "failing over to bp2" in alerts[0].reason
    assert sim.decider.view(POOL).nodes["bp1"].age(sim.now) < 20  # its tip was fresh all along


def test_a_producer_seen_not_forging_without_a_standby_raises_the_alert_and_waits() -> None:
    sim = observed_pool()
    sim.publishers["bp2"].chain = "dead"
    sim.actuators["bp1"].forging_stuck = False
    sim.publish_state("bp1")
    sim.run(NOT_FORGING_AFTER + 70)
    assert sim.producer() == "bp1"
    alerts = [e for e in sim.events if e.kind == "not_forging"]
    assert len(alerts) == 1 and "no other node is eligible" in alerts[0].reason


def test_a_producer_whose_forging_is_unknown_is_left_alone() -> None:
    sim = observed_pool()
    for act in sim.actuators.values():
        act.observes = False  # no observation source: forging null
    sim.publish_state("bp1")
    sim.run(NOT_FORGING_AFTER * 3)
    assert sim.producer() == "bp1"
    assert "not_forging" not in sim.kinds()


def test_a_producer_forging_again_before_the_limit_stays() -> None:
    sim = observed_pool()
    sim.actuators["bp1"].forging_stuck = False
    sim.publish_state("bp1")
    sim.run(NOT_FORGING_AFTER / 2)
    sim.actuators["bp1"].forging_stuck = None  # its actuator's SIGHUP worked
    sim.publish_state("bp1")
    sim.run(NOT_FORGING_AFTER * 2)
    assert sim.producer() == "bp1"
    assert sim.decider.view(POOL).nodes["bp1"].not_forging_since is None
