"""Operator requests: each answered by an event with its request_id; pause, maintenance, switchover."""

from __future__ import annotations

import re

import pytest

from tests.decider.sim import WALL0, Sim


@pytest.fixture
def sim() -> Sim:
    s = Sim(nodes={"bp1": 100, "bp2": 90, "bp3": 80})
    s.bootstrapped()
    return s


def test_pause_stops_changes_but_still_reports_to_the_dry_run_topic(sim: Sim) -> None:
    answer = sim.control("pause", "p1")
    assert answer.ok and answer.reason == "pause: paused" and answer.request_id == "p1"
    assert sim.statuses[-1].paused
    sim.publishers["bp1"].chain = "dead"
    sim.run(200)
    assert sim.producer() == "bp1"
    assert [(c.node, c.role, c.epoch) for c in sim.dryruns] == [
        ("bp1", "relay", 2),
        ("bp3", "relay", 2),
        ("bp2", "producer", 2),
    ], "the would-be decision, published once"
    would = [e for e in sim.events if e.kind == "failover"]
    assert len(would) == 1 and would[0].dry_run and would[0].reason.startswith("paused: would failover")
    assert sim.control("resume", "p2").ok
    assert sim.producer() == "bp2"


def test_pause_until_expires_on_its_own(sim: Sim) -> None:
    until = sim.now.wall + 100
    assert sim.control("pause", "p1", until=until).ok
    assert sim.statuses[-1].paused_until == until
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(300, until=lambda: sim.producer() == "bp2")
    assert sim.now.wall >= until
    assert any(e.kind == "control" and "pause expired" in e.reason for e in sim.events)


def test_answers_show_times_in_utc_with_the_time_left(sim: Sim) -> None:
    assert sim.now.wall == WALL0 + 12  # 2023-11-14T22:13:32Z
    pause = sim.control("pause", "p1", until=WALL0 + 12 + 3600)
    assert pause.reason == "pause: paused until 2023-11-14T23:13:32Z (in 1h)"
    maintenance = sim.control("maintenance", "m1", node="bp2", until=WALL0 + 12 + 2 * 86400 + 5400 + 59)
    assert maintenance.reason == "maintenance: bp2 in maintenance until 2023-11-16T23:44:31Z (in 2d1h)"
    soon = sim.control("maintenance", "m2", node="bp3", until=WALL0 + 12 + 95)
    assert soon.reason == "maintenance: bp3 in maintenance until 2023-11-14T22:15:07Z (in 1m35s)"
    assert not [e.reason for e in sim.events if re.search(r"\b1\d{9}\b", e.reason)], "a raw unix time"


def test_maintenance_on_off_and_expiry(sim: Sim) -> None:
    until = sim.now.wall + 150
    answer = sim.control("maintenance", "m1", node="bp2", until=until)
    assert answer.ok and "bp2 in maintenance" in answer.reason
    assert sim.statuses[-1].maintenance == {"bp2": until}
    assert sim.control("maintenance", "m2", node="bp3").ok
    sim.publishers["bp1"].chain = "dead"
    sim.run(100)
    assert sim.producer() == "bp1", "every standby in maintenance"
    assert sim.control("maintenance", "m3", node="bp3", enabled=False).ok
    assert sim.run(20, until=lambda: sim.producer() == "bp3")
    sim.run(100)
    assert sim.statuses[-1].maintenance == {}, "bp2's window expired"


@pytest.mark.parametrize(
    ("action", "fields", "reason"),
    [
        ("maintenance", {"node": "bp9"}, "maintenance: bp9 is not a node of pool pool1"),
        (
            "maintenance",
            {"node": "bp2", "until": 1.0},
            "maintenance: until 1970-01-01T00:00:01Z (19675d22h ago) is not in the future",
        ),
        (
            "pause",
            {"until": 7200.0},
            "pause: until 1970-01-01T02:00:00Z (19675d20h ago) is not in the future",
        ),
        ("switchover", {}, "switchover: switchover needs a node (to)"),
        ("switchover", {"to": "bp1"}, "switchover: bp1 is already the producer at epoch 1"),
    ],
)
def test_invalid_requests_are_refused_with_the_reason(
    sim: Sim, action: str, fields: dict[str, object], reason: str
) -> None:
    answer = sim.control(action, "bad", **fields)
    assert answer.ok is False
    assert answer.reason == reason


def test_switchover_is_graceful_demote_acknowledge_promote(sim: Sim) -> None:
    sim.actuators["bp1"].auto = False
    answer = sim.control("switchover", "s1", to="bp3", requested_by="alice")
    assert answer.ok and answer.reason == "switchover: switchover to bp3 started at epoch 2"
    assert sim.producer() == "bp1", "no promotion before bp1 acknowledged"
    assert sim.statuses[-1].transition is not None and sim.statuses[-1].transition.to == "bp3"
    sim.run(5)
    sim.process("bp1")
    assert sim.producer() == "bp3"
    done = [e for e in sim.events if e.kind == "promoted" and e.request_id == "s1"]
    assert len(done) == 1 and done[0].to == "bp3" and done[0].epoch == 2
    assert sim.overlaps == []


def test_switchover_to_an_ineligible_node_is_refused(sim: Sim) -> None:
    sim.publishers["bp2"].chain = "dead"
    sim.run(100)
    answer = sim.control("switchover", "s1", to="bp2")
    assert answer.ok is False
    assert answer.reason.startswith("switchover: bp2 is not eligible: tip stale (")
    assert sim.producer() == "bp1"


def test_a_second_change_during_a_transition_is_refused(sim: Sim) -> None:
    sim.actuators["bp1"].auto = False
    assert sim.control("switchover", "s1", to="bp2").ok
    answer = sim.control("switchover", "s2", to="bp3")
    assert answer.ok is False and "a switchover to bp2 at epoch 2 is in progress" in answer.reason


def test_forced_failover_skips_the_acknowledgement(sim: Sim) -> None:
    sim.actuators["bp1"].auto = False  # hung, and the operator knows the machine is dead
    answer = sim.control("failover", "f1", to="bp2", force=True)
    assert answer.ok and "failover to bp2 started at epoch 2" in answer.reason
    assert sim.producer() == "bp2"
    assert [(c.node, c.role, c.epoch) for _, c in sim.roles][-3:] == [
        ("bp1", "relay", 2),
        ("bp3", "relay", 2),
        ("bp2", "producer", 2),
    ], "demotions still go first"


def test_unforced_failover_waits_like_a_switchover(sim: Sim) -> None:
    sim.actuators["bp1"].auto = False
    assert sim.control("failover", "f1", to="bp2").ok
    assert sim.producer() == "bp1"
    sim.process("bp1")
    assert sim.producer() == "bp2"


def test_a_repeated_request_id_gets_the_same_answer_and_acts_once(sim: Sim) -> None:
    first = sim.control("switchover", "same", to="bp2")
    second = sim.control("switchover", "same", to="bp2")
    assert (
        (first.ok, first.reason)
        == (second.ok, second.reason)
        == (
            True,
            "switchover: switchover to bp2 started at epoch 2",
        )
    )
    assert len(sim.producer_commands()) == 2  # bootstrap and the one switchover


def test_requests_before_startup_grace_are_refused() -> None:
    sim = Sim()
    sim.start()
    answer = sim.control("pause", "early")
    assert answer.ok is False and "still starting" in answer.reason


def test_operator_changes_are_allowed_while_paused_and_frozen(sim: Sim) -> None:
    assert sim.control("pause", "p").ok
    assert sim.control("switchover", "s", to="bp2").ok
    assert sim.producer() == "bp2"
