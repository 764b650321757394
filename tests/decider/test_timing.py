"""When the core decides: at the instant a producer goes stale, and not before the retained read."""

from __future__ import annotations

import pytest

from bpfailover.decider.actions import PublishRole
from bpfailover.decider.core import STALE_MARGIN, Decider
from tests.decider.sim import KEEPALIVE, POOL, Sim


def _kill_producer(sim: Sim) -> float:
    """bp1 (the producer) stops reporting; returns the wall instant its tip goes stale."""
    sim.bootstrapped()
    sim.run(30)  # rise and min_switch_interval are met long before the failure
    sim.publishers["bp1"].chain = "dead"
    tip_time = sim.decider.view(POOL).nodes["bp1"].tip_time
    assert tip_time is not None
    return tip_time + sim.settings.stale_after


def _keep_standby_fresh(sim: Sim, until_wall: float) -> None:
    """Advance the clock to ``until_wall`` delivering bp2's reports, without a single tick."""
    while sim.clock.wall + sim.interval < until_wall:
        sim.clock.advance(sim.interval)
        sim.tip("bp2")
    sim.clock.advance(until_wall - sim.clock.wall)


def test_a_stale_producer_is_failed_over_at_the_stale_instant_without_waiting_for_a_tick() -> None:
    sim = Sim(min_switch_interval=0.0)
    stale_at = _kill_producer(sim)
    assert sim.decider.next_due() == pytest.approx(stale_at + STALE_MARGIN)

    _keep_standby_fresh(sim, stale_at)
    assert sim.decider.due(sim.now) == [], "not stale yet: age equals stale_after"

    sim.clock.advance(STALE_MARGIN)
    actions = sim.decider.due(sim.now)
    commands = [a.command for a in actions if isinstance(a, PublishRole)]
    assert [(c.node, c.role, c.epoch) for c in commands] == [("bp1", "relay", 2)]


def test_a_producer_that_keeps_reporting_is_rescheduled_not_failed_over() -> None:
    sim = Sim()
    sim.bootstrapped()
    first = sim.decider.next_due()
    assert first is not None
    sim.run(sim.settings.stale_after * 2)  # bp1 reports all along; the due instants pass
    assert sim.decider.due(sim.now) == []
    later = sim.decider.next_due()
    assert later is not None and later > first + sim.settings.stale_after
    assert sim.producer_commands()[-1].node == "bp1"


def test_nothing_is_decided_until_the_retained_read_is_complete() -> None:
    sim = Sim(startup_grace=10.0)
    sim.decider = Decider(
        sim.settings, [sim.spec], "dec-1", keepalive=KEEPALIVE, now=sim.now, wait_for_read=True
    )
    sim.start()
    sim.run(60)  # startup_grace is long over, but the shell has not seen the end of the read
    assert sim.roles == []
    assert not sim.decider.ready(sim.now)

    sim.decider.on_retained_read()
    assert sim.run(5, until=lambda: sim.producer() is not None)
    assert sim.producer() == "bp1"


def test_the_grace_still_holds_when_the_read_completes_first() -> None:
    sim = Sim(startup_grace=10.0)
    sim.decider = Decider(
        sim.settings, [sim.spec], "dec-1", keepalive=KEEPALIVE, now=sim.now, wait_for_read=True
    )
    sim.start()
    started = sim.clock.mono
    sim.decider.on_retained_read()
    assert sim.run(30, until=lambda: sim.producer() is not None)
    assert sim.promoted_at("bp1") == pytest.approx(started + 10.0)


def test_pools_recovered_together_republish_their_status_spread_over_the_interval() -> None:
    from bpfailover.decider.actions import PublishStatus
    from bpfailover.decider.model import Now
    from bpfailover.settings import DeciderSettings, PoolNode, PoolSpec

    interval = 30.0
    settings = DeciderSettings(startup_grace=1.0, status_interval=interval)
    pools = [PoolSpec(id=f"p{i:03d}", nodes=[PoolNode(name="a"), PoolNode(name="b")]) for i in range(200)]
    start = Now(1000.0, 1_700_000_000.0)
    core = Decider(settings, pools, "d", keepalive=KEEPALIVE, now=start)
    core.on_link(True, start)
    first = core.tick(Now(start.mono + 1, start.wall + 1))
    assert len([a for a in first if isinstance(a, PublishStatus)]) == len(pools)  # all recovered at once
    again: dict[str, float] = {}
    for second in range(2, int(interval) + 3):
        for action in core.tick(Now(start.mono + second, start.wall + second)):
            if isinstance(action, PublishStatus):
                again.setdefault(action.pool, second - 1)
    assert sorted(again) == sorted(p.id for p in pools), "every pool republished within the interval"
    assert all(interval / 2 <= gap <= interval for gap in again.values())
    per_second = [sum(1 for gap in again.values() if int(gap) == s) for s in range(int(interval) + 1)]
    assert max(per_second) < len(pools) / 5, f"not spread: {per_second}"


def test_the_serve_loop_is_not_woken_for_stale_producers_while_nothing_may_be_decided() -> None:
    """A due instant that passed while the link is down must not make the loop spin."""
    import time

    from bpfailover.decider.service import DeciderService, wall_and_mono
    from bpfailover.settings import BpfConfig, DeciderSettings, PoolNode, PoolSpec

    pools = [PoolSpec(id="p1", nodes=[PoolNode(name="a"), PoolNode(name="b")])]
    service = DeciderService(BpfConfig(decider=DeciderSettings(startup_grace=0.0), pools=pools))
    try:
        service.core.next_due = lambda: time.time() - 5.0  # type: ignore[method-assign]
        assert service.wake_in() is None, "link down: not deciding, so not due"
        service.core.on_link(True, wall_and_mono())
        service.core.on_retained_read()
        wake = service.wake_in()
        assert wake is not None and wake <= 0
        service.core.on_link(False, wall_and_mono())
        assert service.wake_in() is None
    finally:
        service.presence.stop()


def test_the_retained_read_ends_at_the_first_live_message_or_a_quiet_spell() -> None:
    from bpfailover.decider.retained import RetainedRead

    read = RetainedRead(quiet=2.0)
    assert read.over(False, 10.0) is None, "before the SUBACKs nothing counts, live or not"
    read.subscribed(10.0)
    assert read.over(True, 10.5) is None and read.over(True, 11.0) is None
    assert read.over(None, 12.9) is None, "less than 2 s since the last retained message"
    assert read.over(False, 11.2) == "a live message followed"
    assert (read.count, read.seconds) == (2, 1.0)
    assert read.over(None, 13.0) == "then nothing for 2s"
    read.lost()
    assert read.over(None, 99.0) is None, "a new connection: wait for its SUBACKs again"
