"""Two deciders for one pool: which one decides, and a duplicate decider id refused.

Every decider publishes its presence, retained, on ``{prefix}/{pool}/deciders/{id}`` (a
DeciderStatus with its ``instance``, its ``standby`` flag and its ``mode``), with a Last
Will saying offline. From the presences it reads, each decider works out alone, on its
own monotonic clock, whether it decides:

- Preference: a decider configured ``standby = false`` is preferred over a standby; among
  equals the lower decider id. (Two preferred ones still never both decide.)
- A passive decider becomes active only when no other decider claims to be active — one
  that went offline still counts for ``takeover_delay`` after its Will — and every more
  preferred decider has been offline for ``takeover_delay`` (or was never seen in that
  long): the delay covers commands the lost one may still have had in flight.
- An active decider that sees a less preferred one active too (it took over while this
  one was cut off) yields at once: the other one holds the newer decisions. A more
  preferred one in that case keeps deciding, and the other yields.
- An active standby hands back to a more preferred decider only when that one has been
  online, not deciding, for ``takeover_delay`` without a break, and nothing is in progress
  in any pool (no flapping back and forth, no change cut in the middle).

A live presence (not a retained one: that may be a crashed process whose Will has not
come yet) with this decider's own id but another instance is a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from bpfailover.decider.model import Now
from bpfailover.protocol.wire import DeciderStatus


@dataclass
class Peer:
    """The latest presence of another decider, as this one saw it."""

    decider: str
    standby: bool
    online: bool
    active: bool  # its latest online presence said it decides; a Will leaves it as it was
    since: float  # mono time it went online or offline, as we saw it
    seen: float  # mono time of its latest presence

    def rank(self) -> tuple[bool, str]:
        return (self.standby, self.decider)


class Duplicate(NamedTuple):
    """Another live process with our decider id."""

    instance: str
    mode: str | None  # what it said it does: starting, standby or active
    line: str  # the one line for the operator


def duplicate_line(decider: str, instance: str, age: float) -> str:
    return (
        f"another decider with id {decider} is running (instance {instance}, seen {age:.0f} s ago); "
        "give each decider its own [decider] id"
    )


class Peers:
    def __init__(
        self, decider_id: str, instance: str, standby: bool, takeover_delay: float, now: Now
    ) -> None:
        self.decider_id = decider_id
        self.instance = instance
        self.standby = standby
        self.takeover_delay = takeover_delay
        self.started = now.mono
        self.peers: dict[str, Peer] = {}

    def rank(self) -> tuple[bool, str]:
        return (self.standby, self.decider_id)

    def multi(self) -> bool:
        """Whether this decider is one of several (configured standby, or another one seen)."""
        return self.standby or bool(self.peers)

    def on_presence(self, status: DeciderStatus, now: Now, *, retained: bool) -> Duplicate | None:
        if status.decider == self.decider_id:
            if status.instance is None or status.instance == self.instance or retained or not status.online:
                return None
            age = max(0.0, now.wall - status.updated_at)
            line = duplicate_line(self.decider_id, status.instance, age)
            return Duplicate(status.instance, status.mode, line)
        peer = self.peers.get(status.decider)
        standby = bool(status.standby)
        if peer is None:
            peer = Peer(status.decider, standby, status.online, False, now.mono, now.mono)
            self.peers[status.decider] = peer
        elif peer.online != status.online:
            peer.online, peer.since = status.online, now.mono
        peer.seen = now.mono
        if status.online:
            peer.active = status.mode == "active"
            peer.standby = standby
        return None

    def holds(self, peer: Peer, now: Now) -> bool:
        """It decides, or did until its Will less than takeover_delay ago."""
        return peer.active and (peer.online or now.mono - peer.since < self.takeover_delay)

    def decide(self, active: bool, settled: bool, now: Now) -> tuple[bool, str]:
        """Whether this decider should decide from now on, and why it changes if it does."""
        mine = self.rank()
        delay = self.takeover_delay
        others = sorted(self.peers.values(), key=Peer.rank)
        if active:
            for p in others:
                if p.online and p.active and p.rank() > mine:
                    return False, f"decider {p.decider} is active too and holds the newer decisions"
            for p in others:
                if p.rank() < mine and p.online and not p.active and now.mono - p.since >= delay and settled:
                    return False, f"handing back to the preferred decider {p.decider}, online for {delay:g}s"
            return True, ""
        for p in others:
            if self.holds(p, now):
                return False, ""
        for p in others:
            if p.rank() < mine and (p.online or now.mono - p.since < delay):
                return False, ""
        if self.standby and now.mono - self.started < delay and not any(p.rank() < mine for p in others):
            return False, ""  # no preferred decider seen yet: give it takeover_delay to show up
        gone = [p.decider for p in others if p.rank() < mine or p.active]
        why = f"decider {', '.join(gone)} offline for {delay:g}s" if gone else "no other decider is active"
        return True, why
