"""The fence promise: what ``NodeState.fence_after`` says, and how it is computed.

An actuator advertises the longest time from its last contact with the broker (or its
start, if later) until its fence has finished demoting the node:

    max(fence_after, 2 x keepalive)        the timer (``effective_fence_after``)
  + apply_timeout x (2 with stop_command)  the demotion (``demotion_bound``): restart or
                                           signal within one apply_timeout, stop_command
                                           within another
  + FENCE_SLACK                            the loop noticing, writing the state file

The actuator keeps it (``bpfailover.actuator.fence``); the decider checks its own timings
against it (docs/safety.md). Both read the formula here.
"""

from __future__ import annotations

from typing import Protocol

FENCE_SLACK = 1.0  # seconds: the service loop noticing the fence is due, the state file write


class FenceSettings(Protocol):
    """The actuator settings the promise depends on (``[actuator]``)."""

    @property
    def fence_after(self) -> float: ...
    @property
    def apply_timeout(self) -> float: ...
    @property
    def stop_command(self) -> str | None: ...


def effective_fence_after(fence_after: float, keepalive: float) -> float:
    """The latest the fence is due after the last contact (0 = fencing off)."""
    return max(fence_after, 2 * keepalive) if fence_after > 0 else 0.0


def demotion_bound(settings: FenceSettings) -> float:
    """The longest a demotion may take: one ``apply_timeout`` window, plus one for ``stop_command``."""
    return settings.apply_timeout * (2 if settings.stop_command else 1)


def advertised_fence_after(fence_after: float, keepalive: float, demotion_bound: float) -> float:
    """What ``NodeState.fence_after`` says: last contact -> node demoted, at most (0 = no promise)."""
    if fence_after <= 0:
        return 0.0
    return effective_fence_after(fence_after, keepalive) + demotion_bound + FENCE_SLACK


def advertised_for(settings: FenceSettings, keepalive: float) -> float:
    """What an actuator with these settings advertises; the decider checks its timings with it."""
    return advertised_fence_after(settings.fence_after, keepalive, demotion_bound(settings))
