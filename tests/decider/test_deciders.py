"""Two deciders for one pool (``bpfailover.decider.peers``): the standby defers while the active one is
alive, takes over after its Will and takeover_delay, hands back without a duel; a second process
with the same decider id is refused."""

from __future__ import annotations

from tests.decider.duo import DuoSim

DELAY = 20.0


def duo(**kw: object) -> DuoSim:
    sim = DuoSim(takeover_delay=DELAY, **kw)  # type: ignore[arg-type]
    sim.bootstrapped()
    return sim


def epochs_never_go_down(sim: DuoSim) -> bool:
    seen = [c.epoch for _, c in sim.roles]
    return seen == sorted(seen)


def test_the_standby_defers_while_the_active_decider_is_alive() -> None:
    sim = duo()
    assert sim.member("dec-1").core.active and not sim.member("dec-2").core.active
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    sim.run(300)
    assert set(sim.commanders()) == {"dec-1"}, "the standby published no role command"
    standby_statuses = [s for s in sim.statuses if s.decider == "dec-2"]
    assert standby_statuses == [], "nor a pool status"
    assert sim.presences[-1].mode in ("active", "standby")
    modes = {p.decider: p.mode for p in sim.presences}
    assert modes == {"dec-1": "active", "dec-2": "standby"}
    assert max(sim.active_counts) == 1


def test_the_standby_takes_over_after_the_will_and_the_delay_and_fails_over() -> None:
    sim = duo()
    sim.kill("dec-1")
    killed = sim.clock.mono
    standby = sim.member("dec-2").core
    assert sim.run(DELAY + 5, until=lambda: standby.active)
    assert sim.clock.mono - killed >= DELAY, "not before takeover_delay on its own clock"
    took_over = sim.clock.mono
    sim.run(5)
    assert "recovered" in sim.kinds() and sim.fleet.view("pool1").producer == "bp1"
    assert [c for at, c in sim.roles if at >= took_over] == [], "a steady pool: nothing re-commanded"
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    sim.run(5)
    failover = [c for _, c in sim.roles if c.epoch == 2]
    assert failover and {c.decider for c in failover} == {"dec-2"}
    assert sim.actuators["bp2"].role == "producer" and sim.overlaps == []
    assert sim.statuses[-1].decider == "dec-2" and sim.statuses[-1].mode == "active"


def test_no_takeover_while_the_active_one_comes_back_within_the_delay() -> None:
    sim = duo()
    sim.kill("dec-1")
    sim.run(DELAY / 2)
    sim.start_decider("dec-1")
    sim.run(200)
    assert not sim.member("dec-2").core.active and sim.member("dec-1").core.active
    assert set(sim.commanders()) == {"dec-1"}


def test_the_preferred_decider_restarted_waits_then_gets_the_pool_back_without_a_duel() -> None:
    sim = duo()
    sim.kill("dec-1")
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(300, until=lambda: sim.producer() == "bp2")
    sim.run(5)
    before = len(sim.roles)
    back = sim.start_decider("dec-1")
    sim.run(2)
    assert not back.core.active, "it defers to the standby that holds the newer decisions"
    assert sim.run(DELAY + 20, until=lambda: back.core.active)
    assert not sim.member("dec-2").core.active
    sim.run(300)
    assert len(sim.roles) == before, "handed back and recovered: no command, no epoch fought over"
    assert back.core.view("pool1").epoch == 2 and back.core.view("pool1").producer == "bp2"
    assert max(sim.active_counts) == 1 and epochs_never_go_down(sim) and sim.overlaps == []
    # The pool status is the preferred decider's again.
    assert sim.statuses[-1].decider == "dec-1" and sim.statuses[-1].epoch == 2


def test_the_hand_back_waits_for_a_change_in_progress() -> None:
    sim = duo()
    sim.kill("dec-1")
    assert sim.run(DELAY + 5, until=lambda: sim.member("dec-2").core.active)
    sim.actuators["bp1"].auto = False  # the demotion hangs: dec-2's failover stays in progress
    sim.publishers["bp1"].chain = "dead"
    assert sim.run(200, until=lambda: sim.fleet.view("pool1").transition is not None)
    back = sim.start_decider("dec-1")
    sim.run(DELAY * 3)
    assert sim.member("dec-2").core.active and not back.core.active, "no hand back mid-change"
    sim.process("bp1")
    assert sim.run(DELAY * 3, until=lambda: back.core.active)
    assert sim.actuators["bp2"].role == "producer" and sim.overlaps == []
    assert max(sim.active_counts) == 1


def test_a_second_process_with_the_same_id_is_refused() -> None:
    sim = duo()
    first = sim.member("dec-1")
    second = sim.start_decider("dec-1")
    assert second.core.refused is not None
    head = f"another decider with id dec-1 is running (instance {first.instance}"
    assert second.core.refused.startswith(head)
    assert second.core.refused.endswith("give each decider its own [decider] id")
    assert first.core.refused is None and first.core.active
    assert any("another decider with id dec-1" in e.reason for e in sim.events_of("alert"))


def test_a_restart_of_the_same_id_after_a_crash_is_not_a_duplicate() -> None:
    sim = duo()
    sim.kill("dec-1")
    again = sim.start_decider("dec-1")  # the retained presence of the dead one says offline
    sim.run(30)
    assert again.core.refused is None and again.core.active


def test_two_deciders_with_the_same_id_both_active_leave_exactly_one() -> None:
    sim = DuoSim(deciders=(("dec-1", False), ("dec-1", False)), takeover_delay=DELAY)
    sim.bootstrapped()
    refused = [m for m in sim.fleet.members if m.core.refused is not None]
    assert len(refused) == 1 and not refused[0].core.active
    assert sum(1 for m in sim.fleet.members if m.core.active) == 1


def test_a_takeover_delay_of_zero_is_refused() -> None:
    import pytest

    from bpfailover.decider.invariants import check_invariants
    from bpfailover.settings import ConfigError, DeciderSettings

    with pytest.raises(ConfigError, match=r"decider.takeover_delay \(0s\) must be greater than 0"):
        check_invariants(DeciderSettings(standby=True, takeover_delay=0), keepalive=30)
