"""Demote before promote (DESIGN §7) on a fake clock, and the start-up timing invariants."""

from __future__ import annotations

import math

import pytest

from bpfailover.decider.invariants import check_invariants
from bpfailover.protocol.wire import NodeState
from bpfailover.settings import ConfigError, DeciderSettings
from tests.decider.sim import KEEPALIVE, POOL, WALL0, Sim


def _kill_producer_hung_actuator(sim: Sim) -> None:
    """bp1's chain dies and its actuator, still connected, does not act on commands."""
    sim.actuators["bp1"].auto = False
    sim.publishers["bp1"].chain = "dead"


def test_promotion_waits_for_the_old_producers_acknowledgement() -> None:
    sim = Sim()
    sim.bootstrapped()
    _kill_producer_hung_actuator(sim)
    sim.run(200)
    assert [(c.node, c.role, c.epoch) for _, c in sim.roles][-1] == ("bp1", "relay", 2)
    assert sim.producer() == "bp1", "promoted before bp1 acknowledged relay"
    assert any(e.kind == "alert" and "has not acknowledged relay at epoch 2" in e.reason for e in sim.events)
    sim.process("bp1")  # the actuator catches up: relay at epoch 2
    assert sim.producer() == "bp2"
    assert sim.overlaps == []


def test_an_acknowledgement_at_an_older_epoch_does_not_count() -> None:
    sim = Sim()
    sim.bootstrapped()
    _kill_producer_hung_actuator(sim)
    sim.run(80)
    # bp1 says relay, but at epoch 1: it has not applied the epoch-2 command.
    sim.actuators["bp1"].role = "relay"
    sim.publish_state("bp1")
    sim.run(5)
    assert sim.producer() == "bp1"
    sim.process("bp1")
    assert sim.producer() == "bp2"


def test_certainly_fenced_counts_from_the_will_as_seen_by_the_decider() -> None:
    sim = Sim(fence_after=50.0)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    sim.cut("bp1", will=False)  # the broker notices the dead connection later
    sim.run(20)
    will_seen = sim.clock.mono
    sim.publish_will("bp1")
    assert sim.run(300, until=lambda: sim.producer() == "bp2")
    assert sim.promoted_at("bp2") == will_seen + 50.0 + KEEPALIVE + 2.0
    fenced = [e for e in sim.events if e.kind == "fenced"]
    assert len(fenced) == 1 and fenced[0].from_ == "bp1"
    assert sim.overlaps == []


def test_a_producer_already_offline_at_start_is_timed_from_first_sight() -> None:
    sim = Sim(fence_after=30.0)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    sim.cut("bp1")
    sim.run(20)  # less than the fence wait: the first decider cannot know it is fenced yet
    sim.restart_decider()
    restarted = sim.clock.mono
    assert sim.run(300, until=lambda: sim.producer() == "bp2")
    assert sim.promoted_at("bp2") == restarted + 30.0 + KEEPALIVE + 2.0


def test_the_deciders_own_disconnection_restarts_the_fence_wait() -> None:
    sim = Sim(fence_after=30.0)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    sim.cut("bp1")
    sim.run(30)
    sim.drop_decider()
    sim.run(100)  # while away, bp1 could have come back and gone again unseen
    assert sim.producer() == "bp1"
    sim.connect_decider()
    back = sim.clock.mono
    assert sim.run(300, until=lambda: sim.producer() == "bp2")
    assert sim.promoted_at("bp2") == back + 30.0 + KEEPALIVE + 2.0


def test_fenced_promotion_needs_the_broker_to_hold_the_demotion() -> None:
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    sim.echo = False  # the relay command for bp1 never shows up as held by the broker
    sim.publishers["bp1"].chain = "dead"
    sim.cut("bp1")
    sim.run(150)
    assert sim.producer() == "bp1"
    republished = [c for _, c in sim.roles if c.node == "bp1" and c.epoch == 2]
    assert len(republished) > 1, "an unconfirmed command is published again"
    sim.echo = True
    assert sim.run(20, until=lambda: sim.producer() == "bp2")


def test_fencing_disabled_waits_for_ever_until_a_forced_failover() -> None:
    sim = Sim(fence_after=0.0)
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "dead"
    sim.cut("bp1")
    sim.run(600)
    assert sim.producer() == "bp1"
    waiting = [e for e in sim.events if e.kind == "alert" and "waiting for" in e.reason]
    assert len(waiting) == 1 and "--force" in waiting[0].reason
    answer = sim.control("failover", "f1", to="bp2", force=True)
    assert answer.ok and "without waiting" in answer.reason
    assert sim.producer() == "bp2"
    assert [c.epoch for c in sim.producer_commands()] == [1, 2], "forced at the same epoch, not a new one"


def test_a_rogue_producer_at_our_epoch_is_demoted_and_ours_recommanded() -> None:
    sim = Sim()
    sim.bootstrapped()
    rogue = sim.actuators["bp2"]
    rogue.role, rogue.stored_role, rogue.epoch = "producer", "producer", 1
    sim.publish_state("bp2")
    assert sim.overlaps  # the fake world did have two producers for a moment
    sim.run(3)
    assert rogue.role == "relay" and rogue.epoch == 2
    last_two = [(c.node, c.role, c.epoch) for _, c in sim.roles][-2:]
    assert last_two == [("bp2", "relay", 2), ("bp1", "producer", 2)]
    assert any(e.kind == "alert" and "bp2 reports producer at epoch 1" in e.reason for e in sim.events)
    assert sim.producer() == "bp1"


def test_bootstrap_waits_for_a_node_that_might_already_be_producing() -> None:
    sim = Sim(initial="bp2")
    # bp1 was producing before bpfailover was installed: its actuator says so.
    sim.actuators["bp1"].role = "producer"
    sim.actuators["bp1"].auto = False
    sim.start()
    sim.run(60)
    assert sim.producer() is None
    sim.process("bp1")
    assert sim.producer() == "bp2" and sim.overlaps == []


def _pool_with_an_unseen_node(history: bool) -> Sim:
    sim = Sim(initial="bp1")
    sim.actuators["bp2"].connected = False  # its actuator has not started
    if history:  # bp1 remembers epoch 4: the broker lost the pool's retained messages
        sim.actuators["bp1"].epoch = 4
    sim.decider.on_link(True, sim.now)
    sim.publish_state("bp1")
    sim.send_tips()
    sim.run(60)
    return sim


def test_a_new_pool_bootstraps_without_nodes_whose_actuator_never_reported() -> None:
    sim = _pool_with_an_unseen_node(history=False)
    assert [(c.node, c.role, c.epoch) for _, c in sim.roles] == [("bp2", "relay", 1), ("bp1", "producer", 1)]
    sim.reconnect("bp2")  # it starts later, gets its retained relay command
    assert sim.actuators["bp2"].role == "relay" and sim.actuators["bp2"].epoch == 1


def test_a_pool_with_a_history_waits_for_nodes_whose_actuator_never_reported() -> None:
    sim = _pool_with_an_unseen_node(history=True)
    assert sim.producer() is None, "bp2 may hold a later epoch as producer"
    assert any("no actuator state seen" in e.reason for e in sim.events if e.kind == "alert")
    sim.reconnect("bp2")
    assert sim.producer() == "bp1"
    assert sim.actuators["bp2"].role == "relay" and sim.actuators["bp2"].epoch == 5


def test_node_states_with_fence_after_too_long_for_stale_after_are_flagged() -> None:
    sim = Sim(fence_after=100.0)
    sim.bootstrapped()
    warnings = [e for e in sim.events if e.kind == "alert" and "is not below decider.stale_after" in e.reason]
    assert sorted(e.to or "" for e in warnings) == ["bp1", "bp2"]
    state: NodeState = sim.retained[("state", "bp1")]
    sim.decider.on_state(POOL, state, sim.now)
    assert len([e for e in sim.events if e.kind == "alert" and "stale_after" in e.reason]) == 2


@pytest.mark.parametrize(
    ("settings", "keepalive", "fence_after", "message"),
    [
        ({"tick": 0}, 30, None, "decider.tick (0s) must be greater than 0"),
        ({"tick": 5, "stale_after": 5}, 30, None, "decider.stale_after (5s) must exceed decider.tick (5s)"),
        ({"apply_timeout": 0.5}, 30, None, "decider.apply_timeout (0.5s) must be at least decider.tick (1s)"),
        (
            {"flap_window": 600, "min_switch_interval": 300},
            30,
            None,
            "decider.flap_window (600s) must exceed decider.max_failovers (3) x "
            "decider.min_switch_interval (300s)",
        ),
        ({"status_interval": 0}, 30, None, "decider.status_interval (0s) must be greater than 0"),
        (
            {"stale_after": 60},
            30,
            120,
            "decider.stale_after (60s) must exceed the actuators' fence time (120s: max(fence_after, "
            "2 x keepalive) + demotion time) + mqtt.keepalive (30s) + decider.fence_margin (10s) = 160s",
        ),
    ],
)
def test_broken_timing_invariants_are_refused_naming_the_inequality(
    settings: dict[str, float], keepalive: float, fence_after: float | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_invariants(DeciderSettings(**settings), keepalive, fence_after)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_defaults_and_small_test_timings_pass_the_invariants() -> None:
    check_invariants(DeciderSettings(), 30, 120)
    small = DeciderSettings(stale_after=3, tick=0.2, min_switch_interval=1, apply_timeout=2)
    check_invariants(small, 5, None)


def _dry_run(sim: Sim, node: str, role: str) -> None:
    """``node``'s actuator restarts in dry-run: it applies nothing, and advertises no fence."""
    act = sim.actuators[node]
    act.dry_run, act.fence_after, act.role = True, 0.0, role
    sim.publish_state(node)


def test_a_dry_run_node_that_does_not_report_producing_never_holds_a_change() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    _dry_run(sim, "bp3", "unknown")  # a method that cannot tell the role it runs
    sim.run(5)
    sim.publishers["bp1"].chain = "dead"
    expected = sim.publishers["bp1"].tip_time - WALL0 + 1000.0 + sim.settings.stale_after
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    assert sim.promoted_at("bp2") == math.floor(expected) + 1.0, "promoted as soon as bp1 was stale"
    state = sim.retained[("state", "bp3")]
    assert (state.role, state.pending, state.epoch) == ("unknown", "relay", 2)
    assert sim.overlaps == []


def test_a_dry_run_target_sent_producer_is_abandoned_at_once_and_not_waited_for() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    sim.actuators["bp2"].auto = False
    assert sim.control("switchover", "s1", to="bp2").ok
    assert sim.producer() == "bp2"  # bp1 acknowledged, bp2 was sent producer at epoch 2
    _dry_run(sim, "bp2", "unknown")  # its actuator restarts in dry-run before applying it
    sim.process("bp2")  # it only reports what it would do: role unknown, pending producer
    abandoned = [e for e in sim.events if e.kind == "abandoned"]
    assert len(abandoned) == 1 and "bp2's actuator is in dry-run" in abandoned[0].reason
    # bp2 was sent producer, but a dry-run actuator applied nothing: the pool is not left waiting.
    assert sim.producer() == "bp1" and sim.actuators["bp1"].role == "producer"
    assert [(c.node, c.role, c.epoch) for c in sim.producer_commands()][-1] == ("bp1", "producer", 3)
    assert any(
        e.kind == "alert" and e.reason.startswith("not waiting for bp2: its actuator is in dry-run")
        for e in sim.events
    )


def test_a_dry_run_node_that_runs_producer_holds_the_promotion_until_it_stops() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80}, initial="bp2")
    act = sim.actuators["bp1"]  # forging by hand, its actuator being tried out in dry-run
    act.dry_run, act.fence_after, act.role = True, 0.0, "producer"
    sim.start()
    sim.run(60)
    assert sim.producer() is None, "bp2 must not be promoted while bp1 forges"
    reasons = [e.reason for e in sim.events if e.kind == "alert"]
    assert any("bp1's actuator is in dry-run and reports its node runs producer" in r for r in reasons)
    assert any("demote it by hand" in r and "waiting for bp1" in r for r in reasons)
    act.role = "relay"  # the operator demoted it by hand
    sim.publish_state("bp1")
    assert sim.producer() == "bp2" and sim.overlaps == []


def test_a_node_mid_demotion_is_not_taken_for_a_rogue_producer() -> None:
    sim = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    sim.bootstrapped()
    bp1 = sim.actuators["bp1"]
    bp1.auto = False
    assert sim.control("failover", "f1", to="bp2", force=True).ok
    assert sim.decider.view(POOL).transition is None  # done: bp2 is producer at epoch 2
    # bp1 applies relay at epoch 2; while it does, it still says producer (epoch stored first).
    bp1.epoch, bp1.pending = 2, "relay"
    sim.publish_state("bp1")
    sim.run(5)
    assert not any("rogue" in e.reason or "without our command" in e.reason for e in sim.events)
    assert max(c.epoch for _, c in sim.roles) == 2, "no resync at a higher epoch"
    bp1.pending = None  # had it finished as producer, that would be a rogue producer
    sim.publish_state("bp1")
    sim.run(2)
    assert any("bp1 reports producer at epoch 2" in e.reason for e in sim.events)
