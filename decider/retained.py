"""When has the decider read everything the broker retained for it?

The broker queues every retained message of a SUBSCRIBE before anything published
later, so after the SUBACKs (the link's "subscribed" marker, in the inbox's order) the
first live message — or ``quiet`` seconds without any message — ends the read. A new
connection sends everything again: the read starts over at its SUBACKs.
"""

from __future__ import annotations

READ_QUIET = 2.0  # seconds without a message after the SUBACK that end the retained read


class RetainedRead:
    def __init__(self, quiet: float = READ_QUIET) -> None:
        self.quiet = quiet
        self.started: float | None = None  # mono time the SUBACKs were in, on this connection
        self.last = 0.0  # mono time of the latest retained message
        self.count = 0

    def subscribed(self, mono: float) -> None:
        self.started, self.last, self.count = mono, mono, 0

    def lost(self) -> None:
        self.started = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.started is None else self.last - self.started

    def over(self, retain: bool | None, mono: float) -> str | None:
        """Why the read is over after a message (``retain``) or a tick (None); None while it goes on."""
        if self.started is None:
            return None  # the SUBACKs are not in yet: nothing read so far counts
        if retain:
            self.count += 1
            self.last = mono
            return None
        if retain is None:
            return f"then nothing for {self.quiet:g}s" if mono - self.last >= self.quiet else None
        return "a live message followed"
