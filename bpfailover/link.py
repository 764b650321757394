"""The MQTT link: a thin, typed layer over paho-mqtt 2.x shared by every component.

It connects with TLS (CA verification and hostname checking) and credentials,
sets a Last Will, retries the first connection with tenacity (bounded, with
jitter), lets paho reconnect afterwards and resubscribes on every connect. paho's
callbacks only record facts and enqueue them: no exception can escape into the
network thread. Services read ``Incoming`` messages and ``LinkEvent``s from
``link.inbox`` on their own thread. QoS-1 publishes are tracked by message id to
the broker's acknowledgement, and a refusal (e.g. an ACL reason code on MQTT 5)
is reported, never swallowed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from bpfailover.logs import log_exception
from bpfailover.settings import ConfigError, MqttSettings

log = logging.getLogger("bpfailover.link")


# Topic-filter bytes per SUBSCRIBE: a decider of hundreds of pools subscribes to thousands of
# filters, and one packet of them all would exceed a broker's max_packet_size (the bundle's
# mosquitto allows 16 KiB and disconnects a client that sends more).
SUBSCRIBE_BYTES = 8 * 1024


def subscribe_batches(
    topics: list[str], budget: int = SUBSCRIBE_BYTES, most: int | None = None
) -> list[list[str]]:
    """``topics`` in order, cut into batches whose encoded filters fit ``budget`` bytes each,
    and of at most ``most`` filters each (AWS IoT Core takes 8 per SUBSCRIBE)."""
    batches: list[list[str]] = []
    size = budget + 1
    for topic in topics:
        cost = len(topic.encode()) + 3  # length prefix and options byte
        if size + cost > budget or (most is not None and len(batches[-1]) >= most):
            batches.append([])
            size = 0
        batches[-1].append(topic)
        size += cost
    return batches


def spread_subscriptions(filters: list[str], per_connection: int | None) -> list[list[str]]:
    """``filters`` in order, cut into one list per connection (at least one, maybe empty) where a
    broker limits the subscriptions of one connection (AWS IoT Core: 50 by default)."""
    if per_connection is None or len(filters) <= per_connection:
        return [list(filters)]
    return [filters[i : i + per_connection] for i in range(0, len(filters), per_connection)]


CLIENT_ID_HASH = 8  # hex digits of the hash that ends a shortened client id (32 bits)


def fit_client_id(client_id: str, limit: int) -> str:
    """``client_id`` if it has at most ``limit`` characters, else its readable start, a dash and
    a hash of the whole id: never a plain truncation, which could give two ids one value (two
    actuators of one pool, whose ids differ only at the end)."""
    if len(client_id) <= limit:
        return client_id
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:CLIENT_ID_HASH]
    head = client_id[: max(0, limit - CLIENT_ID_HASH - 1)].rstrip("-")
    return f"{head}-{digest}" if head else digest[:limit]


class LinkError(Exception):
    """The broker cannot be used: unreachable, TLS failure, or credentials refused."""


class BrokerUnreachable(LinkError):
    """No connection could be made (refused, timed out); worth retrying."""


class BrokerRefused(LinkError):
    """The broker answered and said no (bad credentials, not authorised); not worth retrying."""


class PublishError(LinkError):
    """A publish that the broker refused, or that was not acknowledged in time."""


class Incoming(NamedTuple):
    """One message from the broker (a tuple: made once per message on paho's thread, so cheap)."""

    topic: str
    payload: bytes
    retain: bool
    received_at: float  # wall clock, for comparing with payload timestamps
    received_mono: float  # monotonic clock, for measuring intervals


@dataclass(frozen=True)
class LinkEvent:
    kind: str  # "connected", "disconnected", or (with ``mark_subscribed``) "subscribed"
    reason: str
    at_mono: float
    session_present: bool = False
    link: str = ""  # the client id of the link it happened to (links may share an inbox)
    conn: str = ""  # "connected": the id of this connection, also in its Last Will (``will``)


WillFactory = Callable[[str], tuple[str, bytes]]


class Delivery:
    """The fate of one QoS-1 publish, filled in from paho's network thread.

    Every delivery of a link shares the link's condition: a decider publishes thousands at
    once, and an Event (a lock and a condition) for each of them costs more than the publish.
    """

    def __init__(self, topic: str, mid: int, settled: threading.Condition, sent_at: float = 0.0) -> None:
        self.topic = topic
        self.mid = mid
        self.sent_at = sent_at  # the link's contact clock when it was handed to paho
        self.refused: str | None = None
        self.done = False
        self._settled = settled

    def finish(self, refused: str | None = None) -> None:
        with self._settled:
            self.refused = refused
            self.done = True
            self._settled.notify_all()

    def wait(self, timeout: float) -> None:
        """Block until the broker acknowledged; raise PublishError on refusal or timeout."""
        with self._settled:
            if not self._settled.wait_for(lambda: self.done, timeout):
                raise PublishError(f"publish to {self.topic} not acknowledged within {timeout:g}s")
        if self.refused:
            raise PublishError(f"broker refused publish to {self.topic}: {self.refused}")


def make_client_id(component: str, pool: str = "", node: str = "", *, unique: bool = False) -> str:
    """A stable client id per component instance; ``unique`` adds a random suffix (CLI tools).

    Full length here: ``MqttLink`` fits it to the broker's limit (``fit_client_id``)."""
    parts = ["bpf", component, pool, node]
    if unique:
        parts.append(uuid.uuid4().hex[:8])
    return "-".join(p for p in parts if p)


def _reason_text(reason: object) -> str:
    if isinstance(reason, ReasonCode):
        return str(reason.getName())
    return str(reason)


def _is_failure(reason: object) -> bool:
    if isinstance(reason, ReasonCode):
        return bool(reason.is_failure)
    return bool(reason)


class MqttLink:
    """One broker connection for one service."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        subscriptions: Iterable[str] = (),
        will: tuple[str, bytes] | WillFactory | None = None,
        on_connect: Callable[[], None] | None = None,
        inbox: queue.SimpleQueue[Incoming | LinkEvent] | None = None,
        track_contact: bool = False,
        suffix: str = "",
        inflight: int = 20,
        mark_subscribed: bool = False,
        contact_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``will``: a fixed (topic, payload), or a factory called with each new connection's id
        just before it connects, so that each connection's Will is its own.

        ``contact_clock``: the clock of ``acked_sent_at`` and ``Delivery.sent_at`` (the
        actuator fences on a clock that keeps running while the host is suspended).
        """
        self.settings = settings
        # ``suffix`` tells apart a service's extra connections, also under a configured client_id;
        # an id too long for the broker is shortened by hashing, the suffix included.
        self.client_id = fit_client_id((settings.client_id or client_id) + suffix, settings.client_id_limit())
        self.subscriptions: list[str] = list(subscriptions)
        self.inbox: queue.SimpleQueue[Incoming | LinkEvent] = (
            inbox if inbox is not None else queue.SimpleQueue()
        )
        self.connected = threading.Event()
        # Set once the broker acknowledged every subscription of the current connection.
        self.subscribed = threading.Event()
        self._sub_pending: dict[int, list[str]] = {}
        self._sub_early: set[int] = set()
        self._sub_sending = 0  # _subscribe calls still sending batches: not all mids are known yet
        self.refused: str | None = None
        self.last_contact_mono: float | None = None
        self._contact_clock = contact_clock
        # When the latest publish the broker acknowledged was handed over, on ``contact_clock``:
        # the broker surely heard from us at or after that instant (a PUBACK may come late).
        self.acked_sent_at: float | None = None
        self.conn = ""  # the id of the current (or last) connection
        self._next_conn = uuid.uuid4().hex[:12]
        self._will_factory: WillFactory | None = will if callable(will) else None
        self._on_connect_hook = on_connect
        self._deliveries: dict[int, Delivery] = {}
        self._settled = threading.Condition()
        self._early: dict[int, str | None] = {}
        self._lock = threading.Lock()
        self._first_connack = threading.Event()
        self._started = False
        self._latest_mids: set[int] = set()
        self._stopping = False
        self._track_contact = track_contact
        self._inflight = inflight
        self._mark_subscribed = mark_subscribed
        self._client = self._build_client(will if isinstance(will, tuple) else None)

    # --- set-up -----------------------------------------------------------------------------

    def _build_client(self, will: tuple[str, bytes] | None) -> paho.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=True,
        )
        if s.tls:
            ca = str(s.ca_file) if s.ca_file else None
            try:
                client.tls_set(
                    ca_certs=ca,
                    certfile=str(s.cert_file) if s.cert_file else None,
                    keyfile=str(s.key_file) if s.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"mqtt: cannot load TLS files (ca_file/cert_file/key_file): {exc}"
                ) from None
            client.tls_insecure_set(False)
        else:
            log.warning(
                "mqtt.tls is false: credentials and role commands travel in plaintext to %s:%s",
                s.host,
                s.port,
            )
        username = s.username
        password = s.secret()
        if username:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        # Jitter so that a fleet of nodes does not reconnect in lockstep after a broker restart.
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=10)  # type: ignore[arg-type]
        client.max_inflight_messages_set(self._inflight)
        client.on_pre_connect = self._guard(self._handle_pre_connect)
        client.on_connect = self._guard(self._handle_connect)
        client.on_disconnect = self._guard(self._handle_disconnect)
        client.on_message = self._guard(self._handle_message)
        client.on_publish = self._guard(self._handle_publish)
        client.on_subscribe = self._guard(self._handle_subscribe)
        if self._track_contact:
            # Only to see PINGRESPs (last_contact_mono); it makes paho format a line per packet.
            client.on_log = self._guard(self._handle_log)
        return client

    def set_will(self, topic: str, payload: bytes) -> None:
        """Replace the Last Will; takes effect on the next (re)connect."""
        self._client.will_set(topic, payload, qos=1, retain=True)

    def keepalive(self) -> float:
        """The keepalive in force: an MQTT 5 broker may impose its own (Server Keep Alive; AWS IoT
        raises anything below 30 s), which paho adopts in this attribute of its own."""
        value = getattr(self._client, "_keepalive", None)
        if isinstance(value, int | float) and value > 0:
            return float(value)
        return float(self.settings.keepalive)

    # --- paho callbacks (network thread): record, enqueue, never raise ------------------------

    def _handle_pre_connect(self, client: paho.Client, _u: object) -> None:
        """Before every (re)connect: a new connection id, and the Will that names it."""
        self._next_conn = uuid.uuid4().hex[:12]
        if self._will_factory is not None:
            topic, payload = self._will_factory(self._next_conn)
            client.will_set(topic, payload, qos=1, retain=True)

    @staticmethod
    def _guard(fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*args: object) -> None:
            try:
                fn(*args)
            except Exception:
                log_exception(log, "internal error in MQTT callback %s (ignored)", fn.__name__)

        return wrapped

    def _handle_connect(
        self, client: paho.Client, _u: object, flags: object, reason: object, properties: object
    ) -> None:
        if _is_failure(reason):
            self.refused = _reason_text(reason)
            log.error(
                "broker %s:%s refused connection: %s", self.settings.host, self.settings.port, self.refused
            )
            self._first_connack.set()
            return
        self.refused = None
        self.last_contact_mono = time.monotonic()
        self.conn = self._next_conn
        # QoS-1 publishes in flight: ours, within the broker's Receive Maximum (MQTT 5), which
        # paho does not apply by itself; a broker may disconnect a client that exceeds it. paho's
        # setter refuses an open connection, hence its attribute; the resends of the next
        # reconnect are chosen with the value set here, this connection's.
        allowed = getattr(properties, "ReceiveMaximum", None)
        if hasattr(client, "_max_inflight_messages"):
            client._max_inflight_messages = min(self._inflight, allowed) if allowed else self._inflight
        self._drop_superseded(client)
        self._subscribe(list(self.subscriptions))
        self.connected.set()
        self._first_connack.set()
        present = bool(getattr(flags, "session_present", False))
        log.info("connected to %s:%s as %s", self.settings.host, self.settings.port, self.client_id)
        self.inbox.put(
            LinkEvent("connected", "ok", time.monotonic(), present, self.client_id, conn=self.conn)
        )
        if self._on_connect_hook is not None:
            self._on_connect_hook()

    def _handle_disconnect(self, _c: object, _u: object, _flags: object, reason: object, _p: object) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        with self._lock:
            self._sub_pending.clear()
        with self._lock:
            pending = list(self._deliveries.values())
        if was:
            # A disconnect we asked for is routine; anything else is worth a warning.
            log.log(
                logging.INFO if self._stopping else logging.WARNING,
                "disconnected from %s:%s: %s (%d publishes pending)",
                self.settings.host,
                self.settings.port,
                _reason_text(reason),
                len(pending),
            )
            self.inbox.put(
                LinkEvent("disconnected", _reason_text(reason), time.monotonic(), link=self.client_id)
            )

    def _handle_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        now = time.monotonic()
        self.last_contact_mono = now
        self.inbox.put(
            Incoming(message.topic, bytes(message.payload), bool(message.retain), time.time(), now)
        )

    def _handle_publish(self, _c: object, _u: object, mid: int, reason: object, _p: object) -> None:
        self.last_contact_mono = time.monotonic()
        refused = _reason_text(reason) if _is_failure(reason) else None
        with self._lock:
            self._latest_mids.discard(mid)
            delivery = self._deliveries.pop(mid, None)
            if delivery is None:
                self._early[mid] = refused
                return
            if not refused and (self.acked_sent_at is None or delivery.sent_at > self.acked_sent_at):
                self.acked_sent_at = delivery.sent_at
        if refused:
            log.error("broker refused publish to %s: %s", delivery.topic, refused)
        delivery.finish(refused)

    def _drop_superseded(self, client: paho.Client) -> None:
        """Forget unacknowledged ``latest`` publishes before paho resends them after a reconnect.

        paho resends every unacknowledged QoS-1 message on reconnect. For a retained
        "latest value" (a tip, a node state) that would briefly put an outdated value back
        on the broker; the service publishes a fresh one on connect instead. This runs in
        on_connect, which paho calls before its resend loop.
        """
        with self._lock:
            if not self._latest_mids:
                return
            latest = set(self._latest_mids)
        dropped: list[int] = []
        with client._out_message_mutex:  # paho has no public API for this
            for mid in list(client._out_messages):
                if mid in latest:
                    del client._out_messages[mid]
                    dropped.append(mid)
        with self._lock:
            for mid in dropped:
                self._latest_mids.discard(mid)
                delivery = self._deliveries.pop(mid, None)
                if delivery is not None:
                    delivery.finish("superseded: not resent after reconnect")
        if dropped:
            log.debug("dropped %d outdated unacknowledged publishes after reconnect", len(dropped))

    def _subscribe(self, topics: list[str]) -> None:
        """Send SUBSCRIBEs for ``topics`` (batched under the packet limit); ``subscribed`` is set
        once every SUBACK is in."""
        if not topics:
            if not self._sub_pending:
                self._all_subscribed()
            return
        self.subscribed.clear()
        with self._lock:
            self._sub_sending += 1
        sent = True
        try:
            for batch in subscribe_batches(topics, most=self.settings.filters_per_subscribe()):
                result, mid = self._client.subscribe([(t, 1) for t in batch])
                if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                    log.warning("subscribe to %s not sent: %s", ", ".join(batch), paho.error_string(result))
                    sent = False
                    return
                with self._lock:
                    if mid in self._sub_early:  # the SUBACK beat us here (subscribe from another thread)
                        self._sub_early.discard(mid)
                    else:
                        self._sub_pending[mid] = batch
        finally:
            with self._lock:
                self._sub_sending -= 1
                done = sent and not self._sub_pending and not self._sub_sending
            if done:
                self._all_subscribed()

    def _all_subscribed(self) -> None:
        self.subscribed.set()
        if self._mark_subscribed:
            # In the inbox's order: what comes after it arrived after the SUBACKs.
            self.inbox.put(LinkEvent("subscribed", "ok", time.monotonic(), link=self.client_id))

    def _handle_subscribe(self, _c: object, _u: object, mid: int, reasons: list[object], _p: object) -> None:
        with self._lock:
            if mid not in self._sub_pending:
                self._sub_early.add(mid)
                return
            topics = self._sub_pending.pop(mid)
            done = not self._sub_pending and not self._sub_sending
        if done:
            self._all_subscribed()
        for topic, reason in zip(topics, reasons, strict=False):
            if _is_failure(reason) or (isinstance(reason, ReasonCode) and reason.value >= 0x80):
                log.error("broker refused subscription to %s: %s", topic, _reason_text(reason))

    def _handle_log(self, _c: object, _u: object, _level: int, text: str) -> None:
        if text.startswith("Received "):
            self.last_contact_mono = time.monotonic()

    # --- lifecycle --------------------------------------------------------------------------

    def _attempt(self) -> None:
        s = self.settings
        self._first_connack.clear()
        try:
            self._client.connect(s.host, s.port, keepalive=int(s.keepalive))
        except ssl.SSLCertVerificationError as exc:
            raise BrokerRefused(
                f"TLS verification of {s.host}:{s.port} failed: {exc.verify_message}; "
                "check mqtt.ca_file and that mqtt.host matches the certificate"
            ) from None
        except ssl.SSLError as exc:
            raise BrokerUnreachable(f"TLS handshake with {s.host}:{s.port} failed: {exc}") from None
        except (TimeoutError, OSError) as exc:
            raise BrokerUnreachable(f"cannot reach broker {s.host}:{s.port}: {exc}") from None
        self._client.loop_start()
        if not self._first_connack.wait(s.connect_timeout):
            self._client.loop_stop()
            raise BrokerUnreachable(f"no answer from broker {s.host}:{s.port} within {s.connect_timeout:g}s")
        if self.refused is not None:
            self._client.loop_stop()
            self._client.disconnect()
            raise BrokerRefused(
                f"broker {s.host}:{s.port} refused connection: {self.refused} "
                "(check mqtt.username and the password)"
            )

    def start(self, *, attempts: int = 5, persistent: bool = False) -> None:
        """Connect, retrying unreachable brokers ``attempts`` times with jittered backoff.

        With ``persistent`` a broker that stays unreachable is not an error: paho keeps
        trying in the background and the service learns of the connection from its inbox.
        Refused credentials and failed certificate checks always raise.
        """
        if self._started:
            return
        retrying = Retrying(
            stop=stop_after_attempt(max(1, attempts)),
            wait=wait_random_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception_type(BrokerUnreachable),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "broker not reachable (attempt %d/%d): %s",
                rs.attempt_number,
                attempts,
                rs.outcome.exception() if rs.outcome else "",
            ),
        )
        try:
            retrying(self._attempt)
        except BrokerUnreachable as exc:
            if not persistent:
                raise
            log.warning("%s; will keep trying in the background", exc)
            s = self.settings
            self._client.connect_async(s.host, s.port, keepalive=int(s.keepalive))
            self._client.loop_start()
        except RetryError as exc:  # pragma: no cover - reraise=True makes this unreachable
            raise BrokerUnreachable(str(exc)) from None
        self._started = True

    def stop(self) -> None:
        """Disconnect cleanly (no Last Will) and stop the network thread."""
        self._stopping = True
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self.connected.clear()
            self._started = False
            self._stopping = False

    def abort(self) -> None:
        """Drop the connection as a crash would (no DISCONNECT), so the broker sends the Last Will."""
        self._client.loop_stop()  # first, so that paho cannot reconnect behind our back
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self.connected.clear()
        self._started = False

    # --- use --------------------------------------------------------------------------------

    def subscribe(self, topic: str) -> None:
        """Add a subscription, kept across reconnects."""
        if topic not in self.subscriptions:
            self.subscriptions.append(topic)
        if self.connected.is_set():
            self._subscribe([topic])

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, latest: bool = False) -> Delivery:
        """Publish at QoS 1; the returned Delivery completes on the broker's PUBACK.

        While disconnected paho queues the message and sends it after reconnecting.
        ``latest`` marks a value that a newer one replaces (a tip, a node state): if it is
        still unacknowledged when the connection drops, it is not resent on reconnect, and
        its Delivery ends as refused ("superseded"). Services that only want the latest
        value should also check ``connected`` before publishing.
        """
        sent_at = self._contact_clock()
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        delivery = Delivery(topic, info.mid, self._settled, sent_at)
        if latest:
            with self._lock:
                self._latest_mids.add(info.mid)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            delivery.finish(paho.error_string(info.rc))
            return delivery
        with self._lock:
            early = info.mid in self._early
            if early:
                refused = self._early.pop(info.mid)
                if not refused and (self.acked_sent_at is None or sent_at > self.acked_sent_at):
                    self.acked_sent_at = sent_at
            else:
                self._deliveries[info.mid] = delivery
        if early:
            delivery.finish(refused)
        return delivery

    def pending(self) -> int:
        """QoS-1 publishes not yet acknowledged by the broker."""
        with self._lock:
            return len(self._deliveries)

    def flush(self, timeout: float) -> bool:
        """Wait until every publish so far is acknowledged (or refused); False on timeout."""
        with self._lock:
            deliveries = list(self._deliveries.values())
        with self._settled:
            return self._settled.wait_for(lambda: all(d.done for d in deliveries), timeout)

    def publish_wait(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0
    ) -> None:
        self.publish(topic, payload, retain=retain).wait(timeout)

    def get(self, timeout: float | None = None) -> Incoming | LinkEvent | None:
        """The next message or connection event, or None after ``timeout`` seconds."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def serve(
        self,
        handler: Callable[[Incoming | LinkEvent], None],
        stop: threading.Event,
        *,
        tick: float | None = None,
        on_tick: Callable[[], None] | None = None,
        wake_in: Callable[[], float | None] | None = None,
        on_wake: Callable[[], None] | None = None,
        batch_pause: float = 0.0,
    ) -> None:
        """Hand every inbox item to ``handler`` on this thread until ``stop`` is set.

        An exception from ``handler``, ``on_tick`` or ``on_wake`` is logged and the loop goes
        on: one bad message must not stop the ones after it. ``on_tick`` runs at least every
        ``tick`` seconds; ``on_wake`` runs as soon as ``wake_in()`` (seconds from now, or None
        for never) comes due, so that a deadline is met to the millisecond, not the tick.

        ``batch_pause``: after the inbox runs empty, wait this long before waiting on it
        again. Under a stream of messages, paho's thread then hands over batches instead of
        waking this thread (a futex and a GIL hand-over) for every single message.
        """
        wait = tick if tick is not None else 0.5
        next_tick = time.monotonic() + wait
        while not stop.is_set():
            timeout = min(wait, next_tick - time.monotonic())
            wake = wake_in() if wake_in is not None else None
            if wake is not None:
                timeout = min(timeout, wake)
            item = self.get(timeout=max(0.0, timeout))
            if item is not None:
                self._call(handler, item)
                if batch_pause and self.inbox.empty():
                    time.sleep(batch_pause)
            if on_wake is not None and wake_in is not None:
                wake = wake_in()
                if wake is not None and wake <= 0:
                    self._call(on_wake)
            if on_tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + wait
                self._call(on_tick)

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            what = getattr(args[0], "topic", args[0]) if args else getattr(fn, "__name__", fn)
            log_exception(log, "error in %s (continuing)", what)

    def __enter__(self) -> MqttLink:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
