"""Self-fencing: when a producer has been out of broker contact too long, and how long
the actuator promises that takes at most.

Pure logic on an injected monotonic clock. Silence is measured from the last packet
received from the broker (``MqttLink.last_contact_mono``), or from the start of the
process when there has been none, never from the moment paho noticed the loss.

While paho still believes the link is up, a silence shorter than two keepalive
intervals is normal (an idle link only hears PINGRESPs every keepalive), so a link
that looks connected is fenced only after ``max(fence_after, 2 * keepalive)``; paho
itself drops a link that stays silent that long, after which the plain rule applies.
Either way the fence is due at most ``effective`` seconds after the last contact.

What the actuator advertises in ``NodeState.fence_after`` (``advertised_fence_after``)
is the longest time from its last contact with the broker (or its start, if later) until
its fence has finished demoting the node:

    max(fence_after, 2 x keepalive)        the timer (``FenceTimer.effective``)
  + apply_timeout x (2 with stop_command)  the demotion: restart or signal within one
                                           apply_timeout, stop_command within another
  + FENCE_SLACK                            the loop noticing, writing the state file

A promotion still running when the fence is due is killed (it polls the timer); a
demotion in progress started at or before the last contact (a command is a contact)
and ends within the same demotion bound. The decider adds its own keepalive and
fence_margin on top, counted from the Last Will it receives, which the broker sends
only after the actuator's last contact. The promise assumes a live actuator whose
commands either work within their timeouts or are killed; a dead actuator, or a
demotion whose stop_command fails too, cannot fence (docs/actuator.md, residual risks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bpfailover.settings import ActuatorSettings

FENCE_SLACK = 1.0  # seconds: the service loop noticing the fence is due, the state file write


def effective_fence_after(fence_after: float, keepalive: float) -> float:
    """The latest the fence is due after the last contact (0 = fencing off)."""
    return max(fence_after, 2 * keepalive) if fence_after > 0 else 0.0


def advertised_fence_after(fence_after: float, keepalive: float, demotion_bound: float) -> float:
    """What ``NodeState.fence_after`` says: last contact -> node demoted, at most (0 = no promise)."""
    if fence_after <= 0:
        return 0.0
    return effective_fence_after(fence_after, keepalive) + demotion_bound + FENCE_SLACK


def advertised_for(settings: ActuatorSettings, keepalive: float) -> float:
    """What an actuator with these settings advertises; the decider checks its timings with it."""
    from actuator.methods.base import demotion_bound

    return advertised_fence_after(settings.fence_after, keepalive, demotion_bound(settings))


@dataclass
class FenceTimer:
    fence_after: float
    keepalive: float
    clock: Callable[[], float]
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    @property
    def enabled(self) -> bool:
        return self.fence_after > 0

    @property
    def effective(self) -> float:
        """The worst case of ``limit``: seconds of silence after which the fence is surely due."""
        return effective_fence_after(self.fence_after, self.keepalive)

    def limit(self, connected: bool) -> float:
        return self.effective if connected else self.fence_after

    def silence(self, last_contact: float | None) -> float:
        """Seconds since the last packet from the broker (or since start, if none yet)."""
        since = self.started if last_contact is None else max(last_contact, self.started)
        return max(0.0, self.clock() - since)

    def due(self, *, connected: bool, last_contact: float | None) -> bool:
        """True when a producer must fence now."""
        return self.enabled and self.silence(last_contact) >= self.limit(connected)

    def seconds_left(self, *, connected: bool, last_contact: float | None) -> float | None:
        """Seconds until ``due`` becomes true if nothing is heard, None when fencing is off."""
        if not self.enabled:
            return None
        return max(0.0, self.limit(connected) - self.silence(last_contact))
