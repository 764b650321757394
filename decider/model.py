"""The decider's view of one pool: what it heard about each node and what it commanded.

Plain data only. Two clocks travel together in ``Now``: ``mono`` (monotonic seconds,
for every interval the decider measures itself) and ``wall`` (unix seconds, for tip
ages — a tip's ``tip_time`` is chain time — and for payload timestamps).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from bpfailover.protocol.wire import DeciderStatus, NodeState, Role, TipReport
from bpfailover.settings import DeciderSettings

Phase = Literal["demote", "promote"]


@dataclass(frozen=True)
class Now:
    mono: float
    wall: float


@dataclass
class Context:
    """What every part of the core needs to know about its own configuration.

    ``keepalive`` is the one in force: an MQTT 5 broker may impose its own (the shell
    updates it on every connect)."""

    settings: DeciderSettings
    decider_id: str
    keepalive: float
    # Two deciders per pool (``bpfailover.decider.peers``): this process's random id, and what it does now.
    # Without an instance (the core built alone, as in most tests) statuses carry neither.
    instance: str | None = None
    mode: str = "active"

    def fence_wait(self, fence_after: float) -> float:
        """How long after an actuator's Last Will its node is certainly fenced."""
        return fence_after + self.keepalive + self.settings.fence_margin


@dataclass
class Command:
    """The latest role command for one node, as this decider knows it."""

    role: Role
    epoch: int
    confirmed: bool  # the broker holds it: we saw it retained or echoed back
    issued_mono: float | None = None  # when this process last published it; None if read back
    decider: str = ""


@dataclass
class StartGrace:
    """A restart the node's actuator ran for a role change, as the decider received it.

    While it lasts, a producer's stale tip is not a failure and a standby is not eligible. It
    ends when a fresh tip of a block made after the restart comes in, or ``limit`` seconds
    (the node's start_timeout, capped by max_start_timeout) after the state that announced it
    arrived: timed on the decider's own clock, never the node's.
    """

    since: float  # the state's starting_since: which restart this is
    received_mono: float
    limit: float
    up: bool = False  # a fresh tip of a block made after the restart came in

    def left(self, now: Now) -> float:
        """Seconds of the wait left; 0 when it is over."""
        if self.up:
            return 0.0
        return max(0.0, self.received_mono + self.limit - now.mono)


@dataclass
class NodeView:
    name: str
    priority: int
    last_tip: TipReport | None = None
    tip_time: float | None = None  # of the last ok report
    fresh_streak: int = 0  # consecutive reports that were fresh when received
    skew: float | None = None  # received_at - sent_at of the last live report
    state: NodeState | None = None
    offline_since: float | None = None  # mono time of the latest Last Will (t_off)
    command: Command | None = None
    # The connection of the latest Will counted in offline_since: a Will of another connection
    # restarts the wait (the actuator's fence clock restarted with that connection's contact).
    offline_conn: str | None = None
    online_conn: str | None = None  # the connection of the latest online report
    # A connection whose clean-stop report we saw: its Will, if it comes, promises no fence.
    stopped_conn: str | None = None
    # Why its last tip was refused (a time ahead of our clock): not eligible while it lasts.
    refused_tip: str | None = None
    # Whether the epoch its state claims is backed by a signed command (see facts.StateSeen).
    claim_trusted: bool = True
    start: StartGrace | None = None  # a restart for a role change under way (``starting``)
    # Since when (our monotonic clock) its actuator has reported producer applied and the node
    # seen not forging (NodeState.forging false); None while it forges or nobody can tell.
    not_forging_since: float | None = None

    def not_forging_for(self, now: Now) -> float:
        """How long it has been a producer seen not forging; 0 when it is not."""
        return 0.0 if self.not_forging_since is None else max(0.0, now.mono - self.not_forging_since)

    def starting(self, now: Now) -> bool:
        """Its actuator restarted it for a role change and it may still be coming up."""
        return self.start is not None and self.start.left(now) > 0

    def promises_fence(self) -> bool:
        """Whether the offline actuator promised to fence its node (not a clean stop, fencing on)."""
        s = self.state
        if s is None or s.fence_after <= 0 or s.stopped:
            return False
        return s.conn is None or s.conn != self.stopped_conn

    def age(self, now: Now) -> float:
        """Tip age on the decider's wall clock; a node without an ok report is infinitely stale."""
        if self.tip_time is None:
            return math.inf
        return max(0.0, now.wall - self.tip_time)

    @property
    def online(self) -> bool:
        return self.state is not None and self.state.online


@dataclass
class Transition:
    """A producer change in progress: relays at ``epoch`` first, then ``to`` promoted."""

    kind: str  # bootstrap, failover, switchover, failback, resync, recovery
    from_: str | None
    to: str
    epoch: int
    reason: str
    started: Now
    phase: Phase = "demote"
    forced: bool = False  # an operator asserted the old producer is dead: no ack wait
    operator: bool = False  # requested by an operator: keep the chosen target
    promoted_mono: float | None = None
    # What the target's actuator said when it was sent producer, to tell its answer from old news:
    # the apply error it already had, and whether it has since reported applying producer.
    target_error: str | None = None
    target_applying: bool = False
    request_id: str | None = None
    abandoned: frozenset[str] = frozenset()  # candidates given up on in this change
    blocked_by: frozenset[str] = frozenset()  # nodes that might have been producing at the start
    # Everyone that had to stop at some step of this change (it may retarget several times).
    must_stop: frozenset[str] = frozenset()


@dataclass
class PoolView:
    """One pool as the decider sees it; changed only through its ``PoolMachine``, which
    relies on that to know when the pool is settled (see ``bpfailover.decider.pool``)."""

    id: str
    nodes: dict[str, NodeView]
    initial_producer: str | None
    dry_run: bool
    epoch: int = 0  # epoch of this decider's current commands
    producer: str | None = None  # the producer of the last completed change
    transition: Transition | None = None
    last_change_mono: float | None = None
    changes: deque[float] = field(default_factory=deque)  # mono times of automatic changes
    # The same instants as unix times, for the retained status: a restarted decider (or the other
    # decider taking over) restores the flap history from them (``recovery``).
    last_change_wall: float | None = None
    changes_wall: deque[float] = field(default_factory=deque)
    paused: bool = False
    paused_until: float | None = None  # wall
    frozen: bool = False
    maintenance: dict[str, float | None] = field(default_factory=dict)  # node -> wall until
    recovered: bool = False
    read_back_status: DeciderStatus | None = None  # our own retained status, read before recovery
    alerts: set[str] = field(default_factory=set)  # raised and not yet cleared
    shadow: tuple[str | None, str] | None = None  # last would-be decision published to dry-run
    last_status: tuple[object, ...] | None = None
    last_status_mono: float | None = None

    def known_epoch(self) -> int:
        """The highest epoch anyone has seen: our commands, retained commands, node states."""
        top = self.epoch
        for node in self.nodes.values():
            if node.command is not None:
                top = max(top, node.command.epoch)
            if node.state is not None and node.claim_trusted:
                top = max(top, node.state.epoch)
        if self.transition is not None:
            top = max(top, self.transition.epoch)
        return top

    def in_maintenance(self, name: str, now: Now) -> bool:
        if name not in self.maintenance:
            return False
        until = self.maintenance[name]
        return until is None or until > now.wall

    def is_paused(self, now: Now) -> bool:
        return self.paused and (self.paused_until is None or self.paused_until > now.wall)
