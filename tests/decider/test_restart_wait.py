"""Restarts that outlast stale_after: the decider waits for a node its actuator restarted for a
role change (NodeState.starting_since / start_timeout) instead of failing over again, or back.

The pool of the issue: env-swap restarts take 30 s, stale_after is 20 s. bp1 loses its network
for 40 s, fences itself, and the pool fails over to bp2, which restarts; bp1 comes back fresh.
"""

from __future__ import annotations

from typing import Any

from bpfailover.decider import rule
from tests.decider.sim import POOL, Sim

RESTART = 30.0


def flapping_pool(start_timeout: float | None, **overrides: Any) -> Sim:
    settings: dict[str, Any] = {
        "stale_after": 20.0,
        "min_switch_interval": 0.0,
        "max_failovers": 3,
        "apply_timeout": 20.0,
        "startup_grace": 5.0,
    }
    settings.update(overrides)
    sim = Sim(interval=5.0, fence_after=10.0, restart_time=RESTART, **settings)
    for act in sim.actuators.values():
        act.start_timeout = start_timeout
    sim.bootstrapped()
    sim.run(RESTART + 20)  # bp1's own promotion restart is over, both tips fresh
    assert sim.producer() == "bp1"
    return sim


def lose_bp1_for(sim: Sim, seconds: float) -> None:
    sim.cut("bp1")
    sim.publishers["bp1"].chain = "dead"
    sim.run(seconds)
    sim.publishers["bp1"].chain = "live"
    sim.reconnect("bp1")


def producers(sim: Sim) -> list[str]:
    return [c.node for c in sim.producer_commands()]


def test_without_start_timeout_the_pool_flip_flops_until_the_flap_budget_freezes_it() -> None:
    sim = flapping_pool(start_timeout=None)
    lose_bp1_for(sim, 40)
    sim.run(300)
    assert producers(sim)[:4] == ["bp1", "bp2", "bp1", "bp2"]
    assert "frozen" in sim.kinds()


def test_with_start_timeout_the_new_producer_is_waited_for_and_the_pool_stays_put() -> None:
    sim = flapping_pool(start_timeout=120.0)
    lose_bp1_for(sim, 40)
    sim.run(300)
    assert producers(sim) == ["bp1", "bp2"]
    assert "frozen" not in sim.kinds()
    assert not sim.overlaps
    view = sim.decider.view(POOL)
    assert view.producer == "bp2" and view.nodes["bp2"].age(sim.now) < 20
    assert view.nodes["bp2"].start is not None and view.nodes["bp2"].start.up  # ended by a fresh tip


def test_a_restart_that_never_ends_is_failed_over_once_the_capped_limit_passes() -> None:
    sim = flapping_pool(start_timeout=10_000.0, max_start_timeout=90.0)
    lose_bp1_for(sim, 40)
    sim.publishers["bp2"].chain = "dead"  # bp2's replay never finishes
    promoted = sim.promoted_at("bp2", after=sim.clock.mono - 60)
    assert promoted is not None
    sim.run(200)
    back = sim.promoted_at("bp1", after=promoted)
    assert back is not None
    # Not before the decider's own cap (timed from the state it received), well before 10,000 s.
    assert 90 <= back - promoted <= 90 + 5 + 2


def test_a_demoted_node_is_not_eligible_while_it_restarts() -> None:
    sim = flapping_pool(start_timeout=120.0, max_start_timeout=100.0)
    sim.control("switchover", to="bp2")
    sim.run(1)
    view = sim.decider.view(POOL)
    assert view.producer == "bp2"
    bp1 = view.nodes["bp1"]
    # bp1's last tip is still fresh, but its node is replaying after the demotion
    assert bp1.age(sim.now) <= 20
    why = rule.why_not(view, bp1, sim.decider.pools[POOL].ctx, sim.now)
    assert why is not None and why.startswith("restarting after a role change")
    sim.run(RESTART + 15)  # back up, fresh again, and eligible
    assert rule.why_not(view, bp1, sim.decider.pools[POOL].ctx, sim.now) is None
    assert producers(sim)[-1] == "bp2"


def test_a_restart_is_honoured_only_for_the_role_of_the_latest_command() -> None:
    sim = flapping_pool(start_timeout=120.0)
    view = sim.decider.view(POOL)
    act = sim.actuators["bp2"]
    act.starting_since = sim.now.wall  # a restart bp2's actuator claims, with no role change behind it
    act.epoch = 0  # ... at an epoch the decider never commanded
    sim.publish_state("bp2")
    assert view.nodes["bp2"].start is None


def test_a_standby_restarting_after_its_demotion_raises_no_standby_alarm_until_its_limit() -> None:
    sim = flapping_pool(start_timeout=120.0, max_start_timeout=60.0)
    sim.publishers["bp1"].chain = "dead"  # bp1's replay after the demotion never ends
    sim.control("switchover", to="bp2")
    sim.run(RESTART + 20)
    assert not [e for e in sim.events if e.kind == "no_healthy_standby"]
    sim.run(60)
    assert [e for e in sim.events if e.kind == "no_healthy_standby"]


def test_a_young_tip_from_before_the_restart_does_not_end_the_wait() -> None:
    """A node that answers with the chain it had (its old tip, still younger than stale_after)
    is not up yet: only a block made after the restart ends the wait."""
    sim = flapping_pool(start_timeout=120.0)
    sim.restart_time = 0.01  # it answers at once ...
    sim.publishers["bp2"].chain = "stalled"  # ... with the tip it had before the restart
    sim.control("switchover", to="bp2")
    sim.run(60)  # 3 x stale_after: bp2's old tip went stale long ago
    view = sim.decider.view(POOL)
    assert producers(sim) == ["bp1", "bp2"]  # waited for, not failed over back to bp1
    start = view.nodes["bp2"].start
    assert start is not None and not start.up and view.nodes["bp2"].starting(sim.now)
    sim.publishers["bp2"].chain = "live"  # the replay is over: new blocks
    sim.run(10)
    assert start.up and not view.nodes["bp2"].starting(sim.now)
    assert producers(sim) == ["bp1", "bp2"]
