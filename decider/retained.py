"""When has the decider read everything the broker retained for it?

The decider knows which topics may hold a retained message for it (``expected_topics``:
per pool its status, and per node its tip, state and role command), so the read does not
depend on the order in which a broker delivers: it ends once every expected topic has
delivered a message, or ``quiet`` seconds after the last SUBACK or the last retained
message, whichever comes first. A topic with nothing retained (a new pool has no role
commands yet) therefore costs at most ``quiet`` seconds, and a broker that sends no
retained messages to some subscriptions (AWS IoT Core and wildcard filters) cannot hold
the read open. AWS IoT Core documents that retained and live messages may arrive in any
order, so a live message does not end the read; it does count as the arrival of its topic
(it is newer than anything retained there).

``at_least``: the read lasts this long after the SUBACKs even when complete. Other
deciders' presences come through a wildcard filter; where a broker sends no retained
messages to wildcards, a decider that knows it has peers waits for their periodic
presence instead (see ``DeciderService``).

A new connection sends everything again: the read starts over at its SUBACKs. With
several subscribing connections (exact subscriptions spread under a per-connection limit),
the read starts once every one of them has its SUBACKs in.
"""

from __future__ import annotations

from collections.abc import Iterable

from bpfailover.protocol.topics import Topics
from bpfailover.settings import PoolSpec

READ_QUIET = 2.0  # seconds without a retained message after the SUBACKs that end the read


def expected_topics(topics: Topics, pools: Iterable[PoolSpec]) -> frozenset[str]:
    """Every topic that may hold a retained message the decider needs before it decides."""
    expected: set[str] = set()
    for pool in pools:
        expected.add(topics.decider(pool.id))
        for node in pool.nodes:
            for kind in ("tip", "state", "role"):
                expected.add(topics.node_topic(pool.id, kind, node.name))  # type: ignore[arg-type]
    return frozenset(expected)


class RetainedRead:
    def __init__(
        self,
        expected: Iterable[str] | None = None,
        quiet: float = READ_QUIET,
        links: Iterable[str] | None = None,
    ) -> None:
        """``expected``: the topics whose arrival ends the read (None: only ``quiet`` ends it).
        ``links``: the client ids of every subscribing connection (None: the first SUBACKs do)."""
        self.expected = None if expected is None else frozenset(expected)
        self.quiet = quiet
        self.links = None if links is None else frozenset(links)
        self.at_least = 0.0
        self.started: float | None = None  # mono time every SUBACK was in, on these connections
        self.last = 0.0  # mono time of the latest retained message
        self.count = 0
        self.seen: set[str] = set()  # expected topics only: its size is what arrived
        self._subscribed: set[str] = set()

    def subscribed(self, mono: float, link: str = "") -> None:
        self._subscribed.add(link)
        if self.links is not None and not self.links <= self._subscribed:
            return  # another connection's SUBACKs are still to come
        if self.started is None:
            self.started, self.last = mono, mono

    def lost(self, link: str = "") -> None:
        """A connection dropped: what it delivered is sent again on the next one."""
        self._subscribed.discard(link)
        self.started, self.count = None, 0
        self.seen.clear()

    @property
    def seconds(self) -> float:
        return 0.0 if self.started is None else self.last - self.started

    @property
    def missing(self) -> int:
        # Never a set difference: it runs after every message, and 10,000 pools expect 70,000 topics.
        return 0 if self.expected is None else len(self.expected) - len(self.seen)

    def over(self, topic: str | None, retain: bool, mono: float) -> str | None:
        """Why the read is over after a message on ``topic`` (None: a tick); None while it goes on."""
        if topic is not None:
            if self.expected is not None and topic in self.expected:
                self.seen.add(topic)
            if retain:
                self.count += 1
                self.last = max(self.last, mono)
        if self.started is None or mono - self.started < self.at_least:
            return None  # the SUBACKs are not all in yet, or peers' presences are awaited
        if self.expected is not None and not self.missing:
            return f"every one of the {len(self.expected)} expected topics arrived"
        if mono - max(self.last, self.started) >= self.quiet:
            missing = "" if self.expected is None else f", {self.missing} expected topics without a message"
            return f"then nothing for {self.quiet:g}s{missing}"
        return None
