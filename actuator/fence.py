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

What the actuator advertises in ``NodeState.fence_after`` is the formula of
``bpfailover.protocol.fence`` (the timer below, plus the demotion bound, plus slack).

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

from bpfailover.protocol.fence import effective_fence_after


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
