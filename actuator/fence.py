"""Self-fencing timer: when a producer has been out of broker contact too long.

Pure logic on an injected monotonic clock. Silence is measured from the last packet
received from the broker (``MqttLink.last_contact_mono``), or from the start of the
process when there has been none, never from the moment paho noticed the loss.

While paho still believes the link is up, a silence shorter than two keepalive
intervals is normal (an idle link only hears PINGRESPs every keepalive), so a link
that looks connected is fenced only after ``max(fence_after, 2 * keepalive)``; paho
itself drops a link that stays silent that long, after which the plain rule applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


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

    def limit(self, connected: bool) -> float:
        return max(self.fence_after, 2 * self.keepalive) if connected else self.fence_after

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
