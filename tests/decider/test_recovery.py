"""Restarts: the decider rebuilds each pool from what the broker retained, and never repeats a change."""

from __future__ import annotations

import pytest

from tests.decider.sim import Sim


def _epochs(sim: Sim) -> list[tuple[str, str, int]]:
    return [(c.node, c.role, c.epoch) for _, c in sim.roles]


def test_a_plain_restart_changes_nothing() -> None:
    sim = Sim()
    sim.bootstrapped()
    before = _epochs(sim)
    sim.restart_decider()
    sim.run(120)
    assert _epochs(sim) == before
    assert sim.statuses[-1].producer == "bp1" and sim.statuses[-1].epoch == 1
    assert "recovered" in sim.kinds()


@pytest.mark.parametrize("lose_status", [False, True])
def test_crash_while_waiting_for_the_demotion_finishes_the_same_change(lose_status: bool) -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    sim.actuators["bp1"].auto = False
    sim.publishers["bp1"].chain = "dead"
    sim.run(80)
    assert _epochs(sim)[-2:] == [("bp1", "relay", 2), ("bp3", "relay", 2)]
    # The Will of a first pool may have replaced the status: the roles alone must do.
    sim.restart_decider(lose_status=lose_status)
    sim.run(30)
    assert sim.producer() == "bp1", "still waiting for bp1"
    sim.process("bp1")
    sim.run(2)
    assert sim.producer() == "bp2"
    producers = [(c.node, c.epoch) for c in sim.producer_commands()]
    assert producers == [("bp1", 1), ("bp2", 2)], "finished at epoch 2, not a new change"
    assert max(c.epoch for _, c in sim.roles) == 2
    assert sim.overlaps == []


def test_crash_after_the_promotion_was_sent_waits_for_it_without_repeating() -> None:
    sim = Sim()
    sim.bootstrapped()
    sim.actuators["bp2"].auto = False  # the target is slow to apply
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(100, until=lambda: sim.producer() == "bp2")
    sent = len(sim.roles)
    sim.restart_decider()
    sim.run(12)
    recovered = [e for e in sim.events if e.kind == "recovered"][-1]
    assert recovered.reason == "resuming failover at epoch 2: waiting for bp2 to apply producer"
    assert sim.statuses[-1].transition is not None and sim.statuses[-1].transition.phase == "promote"
    sim.process("bp2")
    sim.run(2)
    assert len(sim.roles) == sent, "nothing published again"
    assert sim.statuses[-1].producer == "bp2" and sim.statuses[-1].transition is None
    assert [e.kind for e in sim.events].count("promoted") == 2  # bootstrap, then the resumed failover


@pytest.mark.parametrize("failed_while_away", [True, False])
def test_an_apply_error_read_back_after_a_restart_is_not_taken_for_news(failed_while_away: bool) -> None:
    """An error already there when the restarted decider resumes may predate the command."""
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80}, apply_timeout=20.0, startup_grace=10.0)
    sim.bootstrapped()
    bp2 = sim.actuators["bp2"]
    bp2.auto, bp2.fail_promote = False, True
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(100, until=lambda: sim.producer() == "bp2")
    if failed_while_away:
        sim.drop_decider()
        sim.process("bp2")  # its error is retained; this decider does not see it come
    sim.restart_decider()
    assert sim.run(30, until=lambda: sim.kinds().count("recovered") == 2)
    resumed = sim.clock.mono
    assert "resuming failover at epoch 2" in sim.events[-1].reason
    if not failed_while_away:
        sim.process("bp2")  # it fails while the resumed decider waits for it: that is news
        assert [e.to for e in sim.events if e.kind == "abandoned"] == ["bp2"]
        assert sim.clock.mono == resumed
        return
    assert sim.run(60, until=lambda: "abandoned" in sim.kinds())
    assert sim.clock.mono == resumed + 21.0, "after apply_timeout, not at once"


def test_crash_during_demotion_publishing_completes_the_missing_demotions() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    sim.actuators["bp1"].auto = False
    sim.publishers["bp1"].chain = "dead"
    sim.run(80)
    # As if the crash came between the two demotions: bp3's relay@2 never reached the broker.
    sim.retained[("role", "bp3")] = next(c for _, c in sim.roles if c.node == "bp3" and c.epoch == 1)
    sim.restart_decider(lose_status=True)
    sim.process("bp1")
    sim.run(15)
    assert sim.producer() == "bp2"
    assert sim.actuators["bp3"].epoch == 2 and sim.actuators["bp3"].role == "relay"
    assert [(c.node, c.epoch) for c in sim.producer_commands()] == [("bp1", 1), ("bp2", 2)]


def test_a_broker_that_lost_its_retained_roles_takes_the_epoch_from_the_actuators() -> None:
    sim = Sim()
    sim.start(producer="bp2", epoch=7)  # the nodes remember: bp2 producer at epoch 7
    sim.lose_retained_roles()
    sim.run(30)
    assert sim.producer() == "bp2", "the producer stays; no bootstrap to bp1"
    assert _epochs(sim) == [("bp1", "relay", 8), ("bp2", "producer", 8)]
    assert sim.actuators["bp2"].role == "producer" and sim.actuators["bp2"].epoch == 8
    assert sim.overlaps == []


def test_lost_roles_and_a_fenced_producer_bring_it_back() -> None:
    sim = Sim()
    sim.start(producer="bp2", epoch=3)
    # bp2 fenced itself during the broker outage; the broker came back empty.
    bp2 = sim.actuators["bp2"]
    bp2.role, bp2.fenced = "relay", True
    sim.publish_state("bp2")
    sim.run(30)
    assert sim.producer() == "bp2"
    assert bp2.role == "producer" and bp2.epoch == 4


def test_pause_and_maintenance_survive_a_restart() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    assert sim.control("maintenance", "m", node="bp2").ok
    assert sim.control("pause", "p").ok
    sim.restart_decider()
    sim.run(15)
    status = sim.statuses[-1]
    assert status.paused and status.maintenance == {"bp2": None}
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    assert sim.producer() == "bp1"
    assert sim.control("resume", "r").ok
    assert sim.producer() == "bp3"


def test_nothing_is_decided_before_startup_grace_after_a_restart() -> None:
    sim = Sim(startup_grace=10.0)
    sim.bootstrapped()
    sim.drop_decider()  # down (crashed) while the producer dies
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    sim.restart_decider()
    restarted = sim.clock.mono
    sim.run(30)
    assert sim.promoted_at("bp2") == restarted + 10.0


def test_a_restart_raises_no_standby_alarm_while_the_standby_reports_again() -> None:
    sim = Sim(startup_grace=2.0)
    sim.bootstrapped()
    sim.run(30)
    assert "no_healthy_standby" not in sim.kinds()
    sim.restart_decider()  # the standby's only report yet is its retained one: 1 of rise 2
    sim.run(2 * sim.interval)
    assert "recovered" in sim.kinds()
    assert "no_healthy_standby" not in sim.kinds()
    sim.publishers["bp2"].chain = "dead"  # a standby that really goes away is still reported
    sim.run(sim.settings.stale_after + 2 * sim.interval)
    assert "no_healthy_standby" in sim.kinds()


def test_min_switch_interval_survives_a_restart() -> None:
    """The last change's time is in the retained status: a restart does not reset the interval."""
    sim = Sim(min_switch_interval=120.0)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(100, until=lambda: sim.decider.view("pool1").producer == "bp2")
    changed = sim.clock.mono
    assert sim.statuses[-1].last_change_at == pytest.approx(sim.clock.wall)
    sim.restart_decider()
    sim.publishers["bp1"].chain = "live"
    sim.publishers["bp2"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp1")
    assert sim.clock.mono - changed >= 120.0, "the restarted decider kept min_switch_interval"


def test_the_flap_budget_survives_a_crash_loop() -> None:
    """Changes within flap_window come back from the retained status: restarting does not re-arm."""
    sim = Sim(min_switch_interval=10.0, max_failovers=2, flap_window=3600.0)
    sim.bootstrapped()
    for dead, alive in (("bp1", "bp2"), ("bp2", "bp1")):
        sim.publishers[dead].chain = "dead"
        sim.publishers[alive].chain = "live"
        assert sim.run(200, until=lambda a=alive: sim.decider.view("pool1").producer == a)  # type: ignore[misc]
        sim.restart_decider()  # a crash loop: every change is followed by a restart
    assert len(sim.statuses[-1].changes) == 2
    sim.publishers["bp1"].chain = "dead"
    sim.publishers["bp2"].chain = "live"
    sim.run(200)
    assert sim.producer() == "bp1", "no third automatic change within the window"
    assert sim.decider.view("pool1").frozen and "frozen" in sim.kinds()
