"""The self-fencing timer on a fake monotonic clock."""

from __future__ import annotations

import pytest

from bpfailover.actuator.fence import FenceTimer
from bpfailover.protocol.fence import FENCE_SLACK, advertised_fence_after


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_fences_fence_after_seconds_after_last_contact_not_after_paho_noticed() -> None:
    clock = Clock()
    timer = FenceTimer(fence_after=120, keepalive=30, clock=clock)
    last_contact = clock.now
    clock.now += 119.9
    assert not timer.due(connected=False, last_contact=last_contact)
    assert timer.seconds_left(connected=False, last_contact=last_contact) == pytest.approx(0.1)
    clock.now += 0.1
    assert timer.due(connected=False, last_contact=last_contact)


def test_silence_is_measured_from_start_when_never_connected() -> None:
    clock = Clock()
    timer = FenceTimer(fence_after=5, keepalive=30, clock=clock)
    clock.now += 4.9
    assert not timer.due(connected=False, last_contact=None)
    clock.now += 0.1
    assert timer.due(connected=False, last_contact=None)


def test_idle_connected_link_is_not_fenced_before_two_keepalives() -> None:
    clock = Clock()
    timer = FenceTimer(fence_after=2, keepalive=5, clock=clock)
    contact = clock.now
    clock.now += 9.9  # an idle link hears only PINGRESPs, every keepalive
    assert not timer.due(connected=True, last_contact=contact)
    assert timer.due(connected=False, last_contact=contact)
    clock.now += 0.1
    assert timer.due(connected=True, last_contact=contact)


def test_fresh_contact_resets_the_timer() -> None:
    clock = Clock()
    timer = FenceTimer(fence_after=10, keepalive=5, clock=clock)
    clock.now += 9
    contact = clock.now
    clock.now += 9
    assert not timer.due(connected=False, last_contact=contact)
    assert timer.seconds_left(connected=False, last_contact=contact) == 1


def test_fence_after_zero_disables_fencing() -> None:
    clock = Clock()
    timer = FenceTimer(fence_after=0, keepalive=5, clock=clock)
    clock.now += 1e9
    assert not timer.enabled
    assert not timer.due(connected=False, last_contact=None)
    assert timer.seconds_left(connected=False, last_contact=None) is None


# --- what the actuator advertises: NodeState.fence_after -----------------------------------


def test_timer_is_due_at_the_effective_value_at_the_latest() -> None:
    clock = Clock()
    timer = FenceTimer(fence_after=10, keepalive=60, clock=clock)
    contact = clock.now
    assert timer.effective == 120
    clock.now += 119.99  # a link that still looks up: paho has not noticed the silence yet
    assert not timer.due(connected=True, last_contact=contact)
    assert timer.due(connected=False, last_contact=contact)  # once paho dropped it, fence_after rules
    clock.now += 0.01
    assert timer.due(connected=True, last_contact=contact)


def test_advertised_fence_after_adds_the_demotion_to_the_timer() -> None:
    assert advertised_fence_after(10, 60, demotion_bound=240) == 120 + 240 + FENCE_SLACK
    assert advertised_fence_after(120, 30, demotion_bound=240) == 120 + 240 + FENCE_SLACK
    assert advertised_fence_after(0, 30, demotion_bound=240) == 0  # fencing off: no promise
