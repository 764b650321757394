"""The simulated network: an event loop, links with faults, an MQTT broker and its clients.

Everything runs on one simulated clock (``Loop.now``, seconds) and one seeded random
generator, so a run is a pure function of its seed and fault schedule. Only what the
safety protocol depends on is modelled:

- links: a fixed latency plus an extra delay, FIFO per direction, and a ``mode``: ``up``,
  ``down`` (nothing passes), ``lossy`` (CONNECT/CONNACK, pings, SUBSCRIBE pass; every
  PUBLISH and PUBACK is black-holed), ``tx_lost`` / ``rx_lost`` (one direction cut); what
  a live connection cannot send is held, not lost (TCP), see ``Link``;
- the broker: retained messages (with periodic snapshots, so that it can come back from
  a crash with an older copy, or with nothing), clean sessions, a Last Will per
  connection published when the connection dies (1.5 x keepalive of silence, or at once
  on a TCP close it sees) and not on a clean DISCONNECT, session takeover, QoS-1
  deliveries with optional duplicates;
- the client: paho's behaviour as ``bpfailover.link.MqttLink`` uses it: reconnect with
  backoff, a new connection id and Will before every connect, resubscribe on connect,
  resend unacknowledged QoS-1 publishes on reconnect (dropping superseded ``latest``
  ones), keepalive pings, and ``acked_sent_at`` (the contact clock reading of the newest
  acknowledged publish).

A client belongs to a ``Proc`` (a process on a host): when the process is paused or its
host suspended, nothing it does runs, and what arrives for it waits until it runs again.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

CONTROL = "control"  # CONNECT, CONNACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT, TCP close
DATA = "data"  # PUBLISH, PUBACK
UP, DOWN = "c2b", "b2c"  # directions: client to broker, broker to client

CONNECT_TIMEOUT = 5.0
RECONNECT_MIN, RECONNECT_MAX = 0.5, 10.0
SNAPSHOT_EVERY = 5.0
SNAPSHOTS_KEPT = 80


class Loop:
    """A priority queue of (time, seq, callback): the whole simulation's only clock."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.after_event: Callable[[], None] = lambda: None
        self.events = 0

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, fn))

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.at(self.now + delay, fn)

    def run_until(self, end: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= end:
            when, _, fn = heapq.heappop(queue)
            self.now = when
            fn()
            self.events += 1
            self.after_event()
        self.now = max(self.now, end)


class Proc(Protocol):
    """What a client needs of the process it belongs to."""

    def run(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` now if the process runs, later (on resume) if it is paused; never if it died."""

    def alive_at(self) -> int:
        """The incarnation number; a callback of an older incarnation is dropped."""


class Link:
    """The path between one client and the broker.

    A connection is a TCP stream: nothing on it is lost while it lives. A packet the link
    cannot carry now is held, and everything after it on the same stream waits behind it
    (TCP delivers in order); when the link carries it again the stream flows on, and an
    endpoint drops what belongs to a connection that died meanwhile. So ``lossy`` (small
    packets pass, every PUBLISH/PUBACK is black-holed, as with a path-MTU black hole)
    lets a connection be made and then stalls it at its first publish, until keepalive
    ends it: the link flaps. A new connection (its CONNECT, or the CONNACK to it) that
    cannot pass is simply lost: the client's connect times out.
    """

    def __init__(self, loop: Loop, name: str, latency: float = 0.005) -> None:
        self.loop = loop
        self.name = name
        self.latency = latency
        self._mode = "up"
        self.extra_delay = 0.0
        self._tail = {UP: 0.0, DOWN: 0.0}
        self._held: dict[tuple[str, str], deque[tuple[str, Callable[[], None]]]] = {}

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = mode
        for key in list(self._held):
            direction = key[0]
            queue = self._held[key]
            while queue and self.passes(queue[0][0], direction):
                _kind, fn = queue.popleft()
                self._deliver(direction, fn)
            if not queue:
                del self._held[key]

    def passes(self, kind: str, direction: str) -> bool:
        mode = self._mode
        if mode == "up":
            return True
        if mode == "down":
            return False
        if mode == "lossy":
            return kind == CONTROL
        if mode == "tx_lost":
            return direction == DOWN
        if mode == "rx_lost":
            return direction == UP
        raise ValueError(mode)

    def send(self, kind: str, direction: str, fn: Callable[[], None], stream: str | None = None) -> bool:
        """Deliver ``fn`` at the far end after the latency, in order; False when it is lost.

        ``stream``: the connection it belongs to (held, not lost); None for a new connection.
        """
        if stream is not None:
            key = (direction, stream)
            queue = self._held.get(key)
            if queue is not None or not self.passes(kind, direction):
                if queue is None:
                    queue = self._held[key] = deque()
                queue.append((kind, fn))
                return True
        elif not self.passes(kind, direction):
            return False
        self._deliver(direction, fn)
        return True

    def _deliver(self, direction: str, fn: Callable[[], None]) -> None:
        loop = self.loop
        when = loop.now + self.latency + self.extra_delay + loop.rng.random() * self.latency
        when = max(when, self._tail[direction] + 1e-6)
        self._tail[direction] = when
        loop.at(when, fn)


_MATCHES: dict[tuple[str, str], bool] = {}


def matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` and a trailing ``#``)."""
    key = (pattern, topic)
    found = _MATCHES.get(key)
    if found is None:
        found = _MATCHES[key] = _matches(pattern, topic)
    return found


def _matches(pattern: str, topic: str) -> bool:
    if pattern == topic:
        return True
    p, t = pattern.split("/"), topic.split("/")
    if p and p[-1] == "#":
        return t[: len(p) - 1] == p[:-1] or all(a in ("+", b) for a, b in zip(p[:-1], t, strict=False))
    return len(p) == len(t) and all(a in ("+", b) for a, b in zip(p, t, strict=True))


@dataclass
class Conn:
    """The broker's side of one connection."""

    client: Client
    conn_id: str
    will: tuple[str, bytes] | None
    keepalive: float
    last_heard: float
    subs: list[str] = field(default_factory=list)
    open: bool = True


class Broker:
    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.up = True
        self.retained: dict[str, bytes] = {}
        self.conns: dict[str, Conn] = {}  # client id -> the connection open now
        self.snapshots: deque[tuple[float, dict[str, bytes]]] = deque(maxlen=SNAPSHOTS_KEPT)
        self.dup_rate = 0.0  # chance that a delivery to a subscriber is sent twice
        self.log: list[tuple[float, str, str]] = []  # (time, what, detail): wills, restarts
        self.generation = 0  # +1 per restart: packets addressed to an older broker are dropped
        loop.later(0.0, self._housekeeping)

    # --- housekeeping ---------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        """Snapshots of the retained store, and connections silent for 1.5 x keepalive."""
        loop = self.loop
        if self.up:
            if not self.snapshots or loop.now - self.snapshots[-1][0] >= SNAPSHOT_EVERY:
                self.snapshots.append((loop.now, dict(self.retained)))
            for conn in list(self.conns.values()):
                if loop.now - conn.last_heard > 1.5 * conn.keepalive:
                    self.drop(conn, will=True, why="keepalive")
        loop.later(0.5, self._housekeeping)

    def snapshot_before(self, when: float) -> dict[str, bytes]:
        """The newest snapshot taken at or before ``when`` (the oldest one kept if none is)."""
        chosen: dict[str, bytes] = {}
        for taken, store in self.snapshots:
            if taken <= when or not chosen:
                chosen = store
        return dict(chosen)

    # --- life -----------------------------------------------------------------------------------

    def crash(self) -> None:
        """The broker process dies: connections close (clients on a working link notice), no Wills."""
        if not self.up:
            return
        self.up = False
        self.generation += 1
        self.log.append((self.loop.now, "crash", ""))
        for conn in list(self.conns.values()):
            self.drop(conn, will=False, why="broker crash")

    def restart(self, retained: dict[str, bytes] | None = None, how: str = "restart") -> None:
        """Back up with ``retained`` (None: what it had; an older snapshot: a rollback; {}: amnesia).

        A broker that is up crashes first: retained messages are only lost or rolled back by a restart."""
        if self.up:
            self.crash()
        if retained is not None:
            self.retained = dict(retained)
        self.up = True
        self.log.append((self.loop.now, how, f"{len(self.retained)} retained"))

    # --- packets from clients -------------------------------------------------------------------

    def connect(self, client: Client, conn_id: str, will: tuple[str, bytes] | None, keepalive: float) -> None:
        if not self.up:
            return
        old = self.conns.get(client.client_id)
        if old is not None:
            self.drop(old, will=True, why="takeover")  # mosquitto publishes the Will of a taken-over session
        conn = Conn(client, conn_id, will, keepalive, self.loop.now)
        self.conns[client.client_id] = conn
        generation = self.generation
        client.link.send(CONTROL, DOWN, lambda: client.connack(conn_id, generation))

    def _current(self, client: Client, conn_id: str) -> Conn | None:
        conn = self.conns.get(client.client_id)
        if not self.up or conn is None or conn.conn_id != conn_id or not conn.open:
            return None
        conn.last_heard = self.loop.now
        return conn

    def subscribe(self, client: Client, conn_id: str, filters: list[str]) -> None:
        conn = self._current(client, conn_id)
        if conn is None:
            return
        conn.subs.extend(filters)
        client.link.send(CONTROL, DOWN, lambda: client.suback(conn_id), conn_id)
        for topic, payload in list(self.retained.items()):
            if any(matches(f, topic) for f in filters):
                self._deliver(conn, topic, payload, retain=True)

    def publish(
        self, client: Client, conn_id: str, mid: int, topic: str, payload: bytes, retain: bool
    ) -> None:
        conn = self._current(client, conn_id)
        if conn is None:
            return
        self._route(topic, payload, retain)
        client.link.send(DATA, DOWN, lambda: client.puback(conn_id, mid), conn_id)

    def ping(self, client: Client, conn_id: str) -> None:
        if self._current(client, conn_id) is not None:
            client.link.send(CONTROL, DOWN, lambda: client.pingresp(conn_id), conn_id)

    def disconnect(self, client: Client, conn_id: str) -> None:
        """A clean DISCONNECT: the Will is discarded."""
        conn = self._current(client, conn_id)
        if conn is not None:
            self.drop(conn, will=False, why="clean disconnect", notify=False)

    def closed(self, client: Client, conn_id: str) -> None:
        """The client's TCP connection closed without a DISCONNECT (its process died): the Will."""
        conn = self._current(client, conn_id)
        if conn is not None:
            self.drop(conn, will=True, why="connection closed", notify=False)

    # --- out ------------------------------------------------------------------------------------

    def drop(self, conn: Conn, *, will: bool, why: str, notify: bool = True) -> None:
        if not conn.open:
            return
        conn.open = False
        if self.conns.get(conn.client.client_id) is conn:
            del self.conns[conn.client.client_id]
        if notify:
            client, conn_id = conn.client, conn.conn_id
            client.link.send(CONTROL, DOWN, lambda: client.closed(conn_id, why), conn_id)
        if will and conn.will is not None and self.up:
            self.log.append((self.loop.now, "will", f"{conn.client.client_id} {conn.conn_id} ({why})"))
            topic, payload = conn.will
            self._route(topic, payload, retain=True)

    def _route(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        for conn in list(self.conns.values()):
            if any(matches(f, topic) for f in conn.subs):
                self._deliver(conn, topic, payload, retain=False)

    def _deliver(self, conn: Conn, topic: str, payload: bytes, *, retain: bool) -> None:
        client, conn_id = conn.client, conn.conn_id
        client.link.send(DATA, DOWN, lambda: client.message(conn_id, topic, payload, retain), conn_id)
        if self.dup_rate and self.loop.rng.random() < self.dup_rate:
            client.link.send(DATA, DOWN, lambda: client.message(conn_id, topic, payload, retain), conn_id)


class Handler(Protocol):
    def on_connected(self, client: Client, conn_id: str) -> None: ...
    def on_disconnected(self, client: Client, why: str) -> None: ...
    def on_subscribed(self, client: Client) -> None: ...
    def on_message(self, client: Client, topic: str, payload: bytes, retain: bool) -> None: ...


@dataclass
class Pub:
    mid: int
    topic: str
    payload: bytes
    retain: bool
    latest: bool
    sent_at: float
    done: bool = False
    acked: bool = False


class Client:
    """paho as ``MqttLink`` uses it, for one process incarnation."""

    def __init__(
        self,
        loop: Loop,
        broker: Broker,
        link: Link,
        proc: Any,
        client_id: str,
        handler: Handler,
        *,
        keepalive: float,
        contact_clock: Callable[[], float],
        subscriptions: list[str] | None = None,
        will: Callable[[str], tuple[str, bytes]] | tuple[str, bytes] | None = None,
    ) -> None:
        self.loop = loop
        self.broker = broker
        self.link = link
        self.proc = proc
        self.incarnation = proc.incarnation
        self.client_id = client_id
        self.handler = handler
        self._keepalive = keepalive
        self.contact_clock = contact_clock
        self.subscriptions = list(subscriptions or [])
        self.will = will
        self.state = "idle"  # idle, connecting, connected
        self.active = False
        self.conn = ""
        self._conn_seq = 0
        self._mid = 0
        self.inflight: list[Pub] = []
        self.acked_sent_at: float | None = None
        self._backoff = RECONNECT_MIN
        self._last_tx = 0.0
        self._last_rx = 0.0
        self._ping_sent: float | None = None
        self._generation = -1
        self.on_rx: Callable[[], None] | None = None  # every packet received (a mutant's contact)

    def keepalive(self) -> float:
        """``MqttLink.keepalive``: the broker imposes none here."""
        return self._keepalive

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def _mine(self) -> bool:
        return self.active and self.proc.incarnation == self.incarnation

    def _in_proc(self, fn: Callable[[], None]) -> None:
        """Arrivals and timers run in the process: later if it is paused, never if it died."""
        if self._mine():
            self.proc.run(lambda: fn() if self._mine() else None)

    # --- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.active = True
        self._attempt()
        self._arm_keepalive()

    def _attempt(self) -> None:
        if not self._mine() or self.state != "idle":
            return
        self._conn_seq += 1
        conn_id = f"{self.client_id}#{self.incarnation}.{self._conn_seq}"
        self.conn_pending = conn_id
        self.state = "connecting"
        will = self.will(conn_id) if callable(self.will) else self.will
        keepalive = self._keepalive
        self._tx()
        self.link.send(CONTROL, UP, lambda: self.broker.connect(self, conn_id, will, keepalive))
        self.loop.later(CONNECT_TIMEOUT, lambda: self._in_proc(lambda: self._connect_timeout(conn_id)))

    def _connect_timeout(self, conn_id: str) -> None:
        if self.state == "connecting" and self.conn_pending == conn_id:
            self.state = "idle"
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        delay = self._backoff * (0.5 + self.loop.rng.random())
        self._backoff = min(RECONNECT_MAX, self._backoff * 2)
        self.loop.later(delay, lambda: self._in_proc(self._attempt))

    def _lost(self, why: str) -> None:
        if self.state != "connected":
            return
        self.state = "idle"
        self._ping_sent = None
        self.handler.on_disconnected(self, why)
        self._schedule_reconnect()

    def stop_clean(self) -> None:
        """``MqttLink.stop``: DISCONNECT (the broker discards the Will), then nothing more."""
        if self.state == "connected":
            conn_id = self.conn
            self.link.send(CONTROL, UP, lambda: self.broker.disconnect(self, conn_id), conn_id)
        self.state = "idle"
        self.active = False

    def killed(self) -> None:
        """The process died: the OS closes the socket; the broker sees it if the link carries it."""
        if self.state == "connected":
            conn_id = self.conn
            self.link.send(CONTROL, UP, lambda: self.broker.closed(self, conn_id), conn_id)
        self.state = "idle"
        self.active = False

    # --- arrivals (called by the link at the arrival instant) -------------------------------------

    def connack(self, conn_id: str, generation: int) -> None:
        self._in_proc(lambda: self._connack(conn_id, generation))

    def _connack(self, conn_id: str, generation: int) -> None:
        if self.state != "connecting" or self.conn_pending != conn_id:
            return
        self.state = "connected"
        self.conn = conn_id
        self._generation = generation
        self._backoff = RECONNECT_MIN
        self._rx()
        # paho's resend of unacknowledged publishes; MqttLink forgets superseded "latest" ones first.
        keep = []
        for pub in self.inflight:
            if pub.latest:
                pub.done = True
            else:
                keep.append(pub)
        self.inflight = keep
        self.handler.on_connected(self, conn_id)
        if self.subscriptions and self.state == "connected":
            self._tx()
            subs = list(self.subscriptions)
            self.link.send(CONTROL, UP, lambda: self.broker.subscribe(self, conn_id, subs), conn_id)
        for pub in list(self.inflight):
            self._send(pub)

    def suback(self, conn_id: str) -> None:
        self._in_proc(lambda: self._rx_if(conn_id, lambda: self.handler.on_subscribed(self)))

    def message(self, conn_id: str, topic: str, payload: bytes, retain: bool) -> None:
        self._in_proc(
            lambda: self._rx_if(conn_id, lambda: self.handler.on_message(self, topic, payload, retain))
        )

    def puback(self, conn_id: str, mid: int) -> None:
        self._in_proc(lambda: self._rx_if(conn_id, lambda: self._acked(mid)))

    def pingresp(self, conn_id: str) -> None:
        self._in_proc(lambda: self._rx_if(conn_id, lambda: None))

    def closed(self, conn_id: str, why: str) -> None:
        self._in_proc(lambda: self._lost(why) if self.conn == conn_id else None)

    def _rx_if(self, conn_id: str, fn: Callable[[], None]) -> None:
        if self.state == "connected" and self.conn == conn_id:
            self._rx()
            self._ping_sent = None
            fn()

    def _acked(self, mid: int) -> None:
        for i, pub in enumerate(self.inflight):
            if pub.mid == mid:
                del self.inflight[i]
                pub.done = pub.acked = True
                if self.acked_sent_at is None or pub.sent_at > self.acked_sent_at:
                    self.acked_sent_at = pub.sent_at
                return

    # --- out ------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, latest: bool = False) -> Pub:
        """QoS 1; queued while disconnected (paho), sent now if connected."""
        self._mid += 1
        pub = Pub(self._mid, topic, payload, retain, latest, self.contact_clock())
        self.inflight.append(pub)
        if self.state == "connected":
            self._send(pub)
        return pub

    def _send(self, pub: Pub) -> None:
        conn_id = self.conn
        self._tx()
        self.link.send(
            DATA,
            UP,
            lambda: self.broker.publish(self, conn_id, pub.mid, pub.topic, pub.payload, pub.retain),
            conn_id,
        )

    # --- keepalive ------------------------------------------------------------------------------

    def _tx(self) -> None:
        self._last_tx = self.loop.now

    def _rx(self) -> None:
        self._last_rx = self.loop.now
        if self.on_rx is not None:
            self.on_rx()

    def _arm_keepalive(self) -> None:
        self.loop.later(self._keepalive / 2, lambda: self._in_proc(self._keepalive_check))

    def _keepalive_check(self) -> None:
        now = self.loop.now
        if self.state == "connected":
            if self._ping_sent is not None and now - self._ping_sent >= self._keepalive:
                self._lost("keepalive: no answer from the broker")
            elif self._ping_sent is None and (
                now - self._last_tx >= self._keepalive or now - self._last_rx >= self._keepalive
            ):
                self._ping_sent = now
                conn_id = self.conn
                self._tx()
                self.link.send(CONTROL, UP, lambda: self.broker.ping(self, conn_id), conn_id)
        self._arm_keepalive()
