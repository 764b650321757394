"""The decider's I/O shell: MQTT in, the pure core, MQTT out.

One MqttLink for the work: per configured pool it subscribes to ``tip/+``, ``state/+``,
``role/+`` (its own retained commands, read back to recover, and echoed back as proof
that the broker holds them), ``decider`` (its own retained status), ``deciders/+`` and
``control``; with ``[mqtt] retained_wildcards = false`` to each node's exact tip, state and
role topics instead, spread over extra read-only connections where one may not hold them all
(``bpfailover.decider.subscriptions``).
Every message is decoded (invalid ones are counted by ``Rejections`` and ignored),
fed to the core, and the actions the core returns are published: statuses and events
on this link; role and dry-run commands (retained, signed when ``signing_key`` is set)
on a link of their own, so that a command never waits behind thousands of statuses
in one connection's queue. The core is evaluated on every message, every ``tick``, and
at the instant a producer's tip goes stale.

Nothing is decided before the retained messages are all read (``bpfailover.decider.retained``).

Presence: a second, idle connection carries the Last Will — the first pool's
DeciderStatus with ``online=false``. A Will is fixed when a connection is made, so
this connection is made again whenever anything in that status but ``updated_at``
changes (epoch, producer, pause, maintenance, freeze, the transition in progress and
its phase): a crash then leaves an accurate retained status behind instead of an old
one. Other pools have no Will: their presence is judged by ``DeciderStatus.updated_at``,
republished every ``status_interval``. SIGTERM and SIGINT publish ``online=false`` for
every pool and exit cleanly.

Two deciders (``bpfailover.decider.peers``): the work connection's own Last Will is this decider's
presence on ``{prefix}/{pool}/deciders/{id}`` (first pool) saying offline; the presence is
republished on every change of mode and at least every 10 s. The pool-status Will above
exists only while this decider is active (a standby's Will must not overwrite the active
one's status). Before connecting under its client id, the decider looks for a live process
with its decider id (``bpfailover.decider.probe``) and refuses to start if there is one; a broker
session taken over (MQTT 5 reason "Session taken over") or a duplicate seen later makes it
stop with exit code 1, so that two processes never take the session from each other in turn.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType

from bpfailover.decider.actions import (
    Action,
    PublishDryRun,
    PublishEvent,
    PublishPresence,
    PublishRole,
    PublishStatus,
    Reject,
)
from bpfailover.decider.alerts import KesWatch
from bpfailover.decider.alerts import from_settings as alerts_from_settings
from bpfailover.decider.control_gate import ControlGate
from bpfailover.decider.core import PRESENCE_INTERVAL, Decider
from bpfailover.decider.facts import (
    ControlAsked,
    Due,
    LinkChanged,
    PresenceSeen,
    RetainedReadDone,
    RoleReadBack,
    StateSeen,
    StatusReadBack,
    Tick,
    TipSeen,
)
from bpfailover.decider.invariants import check_invariants
from bpfailover.decider.metrics import DeciderMetrics
from bpfailover.decider.model import Now
from bpfailover.decider.probe import find_duplicate
from bpfailover.decider.retained import RetainedRead, expected_topics
from bpfailover.decider.subscriptions import decider_filters
from bpfailover.link import (
    BrokerRefused,
    Delivery,
    Incoming,
    LinkError,
    LinkEvent,
    MqttLink,
    make_client_id,
    spread_subscriptions,
)
from bpfailover.logs import log_exception
from bpfailover.protocol.signing import (
    KeyLoadError,
    SignatureError,
    claim_backed,
    load_signing_key,
    load_verify_key,
    sign,
    sign_command,
    verify,
    verify_command,
)
from bpfailover.protocol.topics import TopicError, Topics, check_id
from bpfailover.protocol.wire import (
    ControlRequest,
    DeciderStatus,
    DecisionEvent,
    NodeState,
    PayloadRejected,
    RoleCommand,
    TipReport,
    decode,
)
from bpfailover.rejections import Rejections
from bpfailover.settings import BpfConfig, ConfigError

log = logging.getLogger("bpfailover.decider")

SHUTDOWN_PUBLISH_TIMEOUT = 5.0
HANDBACK_FLUSH_TIMEOUT = 5.0  # seconds to wait for role commands in flight before deferring
TAKEN_OVER = "Session taken over"  # MQTT 5 DISCONNECT reason: a client with our id connected

EventListener = Callable[[DecisionEvent], None]


METRICS_REFRESH = 2.0  # seconds between refreshes of the per-node gauges
INFLIGHT = 500  # QoS-1 publishes in flight per connection (paho's default is 20)
BATCH_PAUSE = 0.002  # seconds: take messages in batches under load (MqttLink.serve)
MOSQUITTO_QUEUE = 1020  # mosquitto's default max_queued_messages 1000 plus 20 in flight


def wall_and_mono() -> Now:
    return Now(time.monotonic(), time.time())


def _event_line(event: DecisionEvent) -> str:
    who = f" {event.from_ or '-'}->{event.to or '-'}" if (event.from_ or event.to) else ""
    ages = " ".join(
        f"{name}={'-' if i.age is None else f'{i.age:.0f}s'}{'' if i.online else '(offline)'}"
        for name, i in event.inputs.items()
    )
    flags = " dry-run" if event.dry_run else ""
    answer = "" if event.ok is None else (" ok" if event.ok else " refused")
    head = f"pool={event.pool} {event.kind}{who} epoch={event.epoch}{flags}{answer}"
    return f"{head}: {event.reason} [ages {ages}]"


class Presence:
    """An idle connection whose Last Will says the decider is offline, kept up to date.

    Reconnecting (to change the Will) happens on its own thread, so that a slow or
    unreachable broker never holds up decisions; only the latest status counts.
    """

    def __init__(self, config: BpfConfig, client_id: str, topic: str) -> None:
        self.config = config
        self.client_id = client_id
        self.topic = topic
        self.link: MqttLink | None = None
        self.key: bytes | None = None  # of the Will in place
        self._wanted: DeciderStatus | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decider-presence", daemon=True)
        self._thread.start()

    @staticmethod
    def _key(status: DeciderStatus) -> bytes:
        """Everything the Will says but its timestamp: a change in any of it makes a new Will."""
        return status.model_copy(update={"updated_at": 0.0, "sig": None}).to_json()

    def update(self, status: DeciderStatus) -> None:
        """Ask for a Will carrying ``status``; returns at once."""
        with self._lock:
            if self._key(status) == self.key and self._wanted is None:
                return
            self._wanted = status
        self._wake.set()

    def clear(self) -> None:
        """No Will at all (a standby's must not overwrite the active decider's status); at once."""
        with self._lock:
            if self.key is None and self._wanted is None:
                return
            self._wanted, self._clear = None, True
        self._wake.set()

    _clear = False

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                status, self._wanted = self._wanted, None
                clear, self._clear = self._clear, False
            if clear and self.link is not None:
                self.link.stop()  # clean: the broker discards the Will
                self.link, self.key = None, None
                log.info("presence: no status Will while another decider is active")
            if status is None or self._stop.is_set() or self._key(status) == self.key:
                continue
            if self.link is not None:
                # A clean disconnect discards the older Will. (Connecting the new link first,
                # with the same client id, would be a takeover: the broker would publish it.)
                self.link.stop()
            self.link = MqttLink(
                self.config.mqtt, self.client_id, will=(self.topic, status.to_json()), suffix="-will"
            )
            try:
                self.link.start(attempts=1, persistent=True)
            except LinkError as exc:
                log.warning("presence connection failed: %s", exc)
            self.key = self._key(status)
            t = status.transition
            log.info(
                "presence: Will on %s now says offline at epoch %d, producer %s, paused %s, maintenance %s, "
                "transition %s",
                self.topic,
                status.epoch,
                status.producer,
                status.paused,
                sorted(status.maintenance) or "none",
                "none" if t is None else f"{t.kind} to {t.to} at epoch {t.epoch} ({t.phase})",
            )

    def stop(self) -> None:
        """Disconnect cleanly: the Will is not published (the caller says offline itself)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=15)
        if self.link is not None:
            self.link.stop()
            self.link = None


class DeciderService:
    metrics_served = False
    _metrics_due = 0.0

    def __init__(self, config: BpfConfig, *, listeners: list[EventListener] | None = None) -> None:
        if not config.pools:
            raise ConfigError("no [[pools]] configured: the decider needs at least one pool with its nodes")
        settings = config.decider
        fence_after = None
        if "actuator" in config.model_fields_set:
            # Judge by what such an actuator will advertise (its real worst case), not the raw key.
            from bpfailover.protocol.fence import advertised_for

            fence_after = advertised_for(config.actuator, config.mqtt.keepalive)
        check_invariants(settings, config.mqtt.keepalive, fence_after)
        self.decider_id = settings.id or "decider"
        try:
            check_id(self.decider_id, "decider.id")
        except TopicError as exc:
            raise ConfigError(str(exc)) from None
        self.signing_key = None
        if settings.signing_key is not None:
            try:
                self.signing_key = load_signing_key(settings.signing_key)
            except KeyLoadError as exc:
                raise ConfigError(f"decider.signing_key: {exc}") from None
        operator_key = None
        if settings.operator_key:
            try:
                operator_key = load_verify_key(settings.operator_key)
            except KeyLoadError as exc:
                raise ConfigError(f"decider.operator_key: {exc}") from None
        else:
            log.warning(
                "decider.operator_key is not set: control requests (failover --force included) are "
                "taken unsigned from anyone who may write the control topic"
            )
        self.control_gate = ControlGate(operator_key)
        self.config = config
        self.topics = Topics(config.mqtt.prefix)
        self.listeners = list(listeners or [])
        self.rejections = Rejections("decider", log)
        self.instance = uuid.uuid4().hex[:12]  # this process: tells a second one with our id apart
        self.core = Decider(
            settings,
            config.pools,
            self.decider_id,
            keepalive=config.mqtt.keepalive,
            now=wall_and_mono(),
            wait_for_read=True,
            instance=self.instance,
        )
        self.exit_code = 0
        self._stop: threading.Event | None = None
        self._presence_delivery: Delivery | None = None
        self._presence_refused = False
        self._mode = self.core.ctx.mode
        exact = not config.mqtt.retained_wildcards
        shares = spread_subscriptions(
            decider_filters(self.topics, config.pools, exact=exact),
            config.mqtt.subscriptions_per_connection(),
        )
        client_id = make_client_id("decider", self.decider_id)
        first = config.pools[0].id
        self.presence_topic = self.topics.presence(first, self.decider_id)
        will = self.core.presence(wall_and_mono(), online=False)
        assert will is not None
        # Up to one status and one event per pool at once (recovery, heartbeats): a wide window.
        self.link = MqttLink(
            config.mqtt,
            client_id,
            subscriptions=shares[0],
            inflight=INFLIGHT,
            mark_subscribed=True,
            will=(self.presence_topic, self._status_json(will.status)),
        )
        # More subscriptions than one connection may hold: read-only connections for the rest,
        # on the same inbox (client ids <id>-r1, <id>-r2, ...).
        self.readers = [
            MqttLink(
                config.mqtt,
                client_id,
                suffix=f"-r{i}",
                subscriptions=share,
                mark_subscribed=True,
                inbox=self.link.inbox,
            )
            for i, share in enumerate(shares[1:], start=1)
        ]
        subscribing = [self.link.client_id] + [r.client_id for r in self.readers]
        self.retained_read = RetainedRead(expected_topics(self.topics, config.pools), links=subscribing)
        self._subscribing = frozenset(subscribing)
        # One inbox: the command link's connection events reach the core too (see _link_event).
        self.commands = MqttLink(
            config.mqtt, client_id, suffix="-cmd", inflight=INFLIGHT, inbox=self.link.inbox
        )
        self._links_up = {link.client_id: False for link in (self.link, self.commands, *self.readers)}
        self.presence = Presence(config, client_id, self.topics.decider(config.pools[0].id))
        self.public_key = self.signing_key.public_key() if self.signing_key is not None else None
        self.metrics = DeciderMetrics()
        if settings.metrics_port:
            # Nobody reads the gauges otherwise; at thousands of pools they cost a recovery dearly.
            self.listeners.append(self.metrics.observe_event)
        self.kes_watch = KesWatch(settings.kes_alert_periods)
        try:
            self.alerts = alerts_from_settings(settings.webhook_url, format=settings.webhook_format)
        except ValueError as exc:  # its message never quotes the URL, which may hold a token
            raise ConfigError(f"decider.webhook_url: {exc}") from None
        if self.alerts is not None:
            self.listeners.append(self.alerts.submit)
            log.info("alerts to %s (%s)", self.alerts.where, settings.webhook_format)

    # --- in -----------------------------------------------------------------------------------

    def handle(self, item: Incoming | LinkEvent) -> None:
        now = wall_and_mono()
        if isinstance(item, LinkEvent):
            actions = self._link_event(item, now)
        else:
            if not self.core.read_done:
                self._watch_read(item, now)
            actions = self.dispatch(item, now)
        self.publish(actions)

    def _link_event(self, event: LinkEvent, now: Now) -> list[Action]:
        """Every connection must be up to decide: a command must not wait on a dead link while
        later ones are decided (they would go out together, in a burst, much later), and a
        reader connection that is down hides its pools' tips (they would all look stale)."""
        if event.kind == "subscribed":
            if not self.core.read_done:  # the retained read starts here
                self.retained_read.at_least = self._presence_wait()
                self.retained_read.subscribed(now.mono, event.link)
            if event.link in self._subscribing and not self._links_up.get(event.link, True):
                # Up only now: what it holds (its pools' tips, states, role commands) comes again
                # after its SUBACKs; decided on before, a standby's fresh tip on another
                # connection would meet a producer's tip gone stale while this one was down.
                self._links_up[event.link] = True
                return self.core.process(LinkChanged(all(self._links_up.values())), now)
            return []
        which = (
            "role commands"
            if event.link == self.commands.client_id
            else "work" if event.link == self.link.client_id else "reader"
        )
        log.info("broker link (%s) %s (%s)", which, event.kind, event.reason)
        if event.kind == "disconnected" and event.reason == TAKEN_OVER:
            # Another client connected with our client id: another decider with our id. Going on
            # would take the session back, and it would take it again, for ever: stop instead.
            self.core.process(LinkChanged(False), now)
            self._refuse(
                f"another decider with id {self.decider_id} is running (it took over this decider's broker "
                "session, same MQTT client id); give each decider its own [decider] id"
            )
            return []
        if event.link in self._subscribing and event.kind == "disconnected":
            self.retained_read.lost(event.link)  # a new connection sends everything retained again
        if event.link not in self._subscribing or event.kind == "disconnected":
            # (A subscribing connection is up at its SUBACKs, above; with none to wait for, that
            # event may even come before this one.)
            self._links_up[event.link] = event.kind == "connected"
        if event.kind == "connected" and event.link == self.link.client_id:
            self.core.ctx.keepalive = self.link.keepalive()  # a broker may impose its own
        up = all(self._links_up.values())
        if not up and event.kind == "disconnected" and self.core.link_up:
            log.warning("deciding nothing until both broker connections are back")
        return self.core.process(LinkChanged(up), now)

    def _watch_read(self, item: Incoming | None, now: Now) -> None:
        """Tell the core when the retained messages are all in (after a message, or a tick)."""
        read = self.retained_read
        if item is None:
            why = read.over(None, False, now.mono)
        else:
            why = read.over(item.topic, item.retain, now.mono)
        if why is None:
            return
        log.info("read %d retained messages in %.1fs (%s)", read.count, read.seconds, why)
        # Recover now (if the grace is over), not a tick later.
        self.publish(self.core.process(RetainedReadDone(), now))

    def _presence_wait(self) -> float:
        """How long the retained read lasts at least: where the broker sends no retained messages
        to wildcard filters, a decider with peers waits for their periodic presences."""
        mqtt = getattr(self.config, "mqtt", None)
        peers = self.core.peers
        if mqtt is None or mqtt.retained_wildcards or peers is None or not peers.multi():
            return 0.0
        return PRESENCE_INTERVAL + 2.0

    def dispatch(self, item: Incoming, now: Now) -> list[Action]:
        topic = item.topic
        try:
            where = self.topics.parse(topic)
        except TopicError as exc:
            self.rejections.reject("topic", str(exc), topic=topic)
            return []
        if not self.core.knows(where.pool):
            self.rejections.reject("unknown_pool", f"pool {where.pool!r} is not configured", topic=topic)
            return []
        if not item.payload:
            return []  # a retained message being cleared
        if where.kind == "deciders":
            try:
                status = decode(DeciderStatus, item.payload, pool=where.pool)
                if self.public_key is not None:
                    verify(status, self.public_key)
            except PayloadRejected as exc:
                self.rejections.reject(exc.reason, exc.detail, topic=topic)
                return []
            except SignatureError as exc:
                self.rejections.reject(exc.reason, str(exc), topic=topic)
                return []
            if status.decider != where.node:
                why = f"payload decider {status.decider!r} but topic {where.node!r}"
                self.rejections.reject("topic_mismatch", why, topic=topic)
                return []
            return self.core.process(PresenceSeen(where.pool, status, item.retain), now)
        if where.node is not None and not self.core.knows(where.pool, where.node):
            self.rejections.reject(
                "unknown_node", f"node {where.node!r} is not in pool {where.pool}", topic=topic
            )
            return []
        pool = where.pool
        try:
            if where.kind == "tip":
                report = decode(TipReport, item.payload, pool=pool, node=where.node)
                kes = self.kes_watch.observe(pool, report.node, report.kes_periods_left, now.wall)
                # (A standby keeps quiet: the active decider raises it.)
                quiet = kes is None or not self.core.active
                extra: list[Action] = [] if quiet else [PublishEvent(pool, kes)]  # type: ignore[arg-type]
                return extra + self.core.process(TipSeen(pool, report, item.received_at, item.retain), now)
            if where.kind == "state":
                state = decode(NodeState, item.payload, pool=pool, node=where.node)
                trusted = self.public_key is None or claim_backed(state, self.public_key)
                return self.core.process(StateSeen(pool, state, trusted), now)
            if where.kind == "role":
                command = decode(RoleCommand, item.payload, pool=pool, node=where.node)
                # Every command on a role topic must carry our key's signature, whichever
                # decider id it names: an unsigned or forged one must not steer the pool.
                if self.public_key is not None:
                    verify_command(command, self.public_key)
                return self.core.process(RoleReadBack(pool, command, item.retain), now)
            if where.kind == "decider":
                status = decode(DeciderStatus, item.payload, pool=pool)
                if self.public_key is not None:  # recovery trusts it: a forged "frozen" must not count
                    verify(status, self.public_key)
                return self.core.process(StatusReadBack(pool, status, item.retain), now)
            if where.kind == "control":
                if item.retain:
                    self.rejections.reject(
                        "retained_control", "control requests must not be retained (replayed)", topic=topic
                    )
                    return []
                request = decode(ControlRequest, item.payload, pool=pool)
                refused, by = self.control_gate.check(request, now.wall)
                log.info(
                    "pool=%s control %s request_id=%s by %s%s",
                    pool,
                    request.action,
                    request.request_id,
                    by,
                    f": refused: {refused}" if refused else "",
                )
                if refused is not None:
                    self.rejections.reject("control", refused, topic=topic)
                return self.core.process(ControlAsked(pool, request, refused, by), now)
        except PayloadRejected as exc:
            self.rejections.reject(exc.reason, exc.detail, topic=topic)
        except SignatureError as exc:
            self.rejections.reject(exc.reason, str(exc), topic=topic)
        return []

    # --- out ----------------------------------------------------------------------------------

    def _signed(self, status: DeciderStatus) -> DeciderStatus:
        """Statuses are signed like role commands: recovery and the standby trust what they say."""
        return sign(status, self.signing_key) if self.signing_key is not None else status

    def _status_json(self, status: DeciderStatus) -> bytes:
        return self._signed(status).to_json()

    def publish(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, PublishPresence):
                self._publish_presence(action.status)
                continue
            if isinstance(action, PublishRole | PublishDryRun):
                command = action.command
                if self.signing_key is not None:
                    command = sign_command(command, self.signing_key)
                dry = isinstance(action, PublishDryRun)
                topic = (self.topics.dryrun if dry else self.topics.role)(action.pool, action.node)
                self.commands.publish(topic, command.to_json(), retain=True)
                log.info(
                    "pool=%s node=%s epoch=%d %s%s: %s",
                    action.pool,
                    action.node,
                    command.epoch,
                    command.role,
                    " (dry-run)" if dry else "",
                    command.reason,
                )
            elif isinstance(action, Reject):
                topic = self.topics.tip(action.pool, action.node)
                self.rejections.reject(action.reason, action.detail, topic=topic)
            elif isinstance(action, PublishStatus):
                topic = self.topics.decider(action.pool)
                self.link.publish(topic, self._status_json(action.status), retain=True)
            elif isinstance(action, PublishEvent):
                event = action.event
                self.link.publish(self.topics.events(action.pool), event.to_json())
                routine = event.kind in ("control", "promoted", "recovered", "decider")
                level = logging.INFO if routine else logging.WARNING
                log.log(level, "%s", _event_line(event))
                for listener in self.listeners:
                    try:
                        listener(event)
                    except Exception:
                        log_exception(log, "event listener failed (ignored)")
        if actions:
            self._refresh_presence()
        if self.core.refused is not None:
            self._refuse(self.core.refused)

    def _publish_presence(self, status: DeciderStatus) -> None:
        if self._mode == "active" and status.mode != "active":
            # Handing over: every role command of ours must be at the broker before the other
            # decider learns that we defer, or one could arrive after its recovery.
            self.presence.clear()
            if not self.commands.flush(HANDBACK_FLUSH_TIMEOUT):
                log.warning("%d role commands not acknowledged before deferring", self.commands.pending())
        self._mode = status.mode or self._mode
        previous = self._presence_delivery
        if previous is not None and previous.done and previous.refused and not self._presence_refused:
            self._presence_refused = True
            log.warning(
                "the broker refuses this decider's presence on %s (%s): grant the decider user "
                "`topic readwrite %s/+` in the broker's ACL (docs/operations.md, Two deciders)",
                self.presence_topic,
                previous.refused,
                self.presence_topic.rsplit("/", 1)[0],
            )
        self._presence_delivery = self.link.publish(
            self.presence_topic, self._status_json(status), retain=True
        )

    def _refresh_presence(self) -> None:
        now = wall_and_mono()
        will = self.core.will(now)
        if will is not None and self.core.active:
            self.presence.update(self._signed(will.status))
        elif not self.core.active:
            self.presence.clear()

    def _refuse(self, line: str) -> None:
        """Stop the process with exit code 1 and one line saying why."""
        if self.exit_code == 0:
            log.error("%s", line)
        self.exit_code = 1
        if self._stop is not None:
            self._stop.set()

    def wake_in(self) -> float | None:
        """Seconds until a producer's tip goes stale (the serve loop wakes for it)."""
        due = self.core.next_due()
        if due is None or not self.core.ready(wall_and_mono()):
            return None  # not deciding yet: the first tick that may decide covers these pools
        return due - time.time()

    def on_due(self) -> None:
        self.publish(self.core.process(Due(), wall_and_mono()))

    def tick(self) -> None:
        if not self.core.read_done:
            self._watch_read(None, wall_and_mono())
        self.publish(self.core.process(Tick(), wall_and_mono()))
        now = wall_and_mono()
        if self.metrics_served and now.mono >= self._metrics_due:
            # Gauges are scraped every 15 s or so; refreshing them every tick would cost a
            # pass over every node of every pool per tick.
            self._metrics_due = now.mono + METRICS_REFRESH
            for pool in self.config.pools:
                self.metrics.observe_view(self.core.view(pool.id), self.core.ctx, now)

    # --- life ---------------------------------------------------------------------------------

    def serve(self, stop: threading.Event) -> int:
        self._stop = stop
        refresh = min(self.config.decider.status_interval, PRESENCE_INTERVAL) + 2.0
        line = find_duplicate(
            self.config.mqtt,
            self.presence_topic,
            self.config.pools[0].id,
            self.decider_id,
            self.instance,
            refresh,
        )
        if line is not None:
            log.error("%s", line)
            return 1
        try:
            self.link.start(persistent=True)
            self.commands.start(persistent=True)
            for reader in self.readers:
                reader.start(persistent=True)
        except BrokerRefused as exc:
            log.error("%s", exc)
            self.link.stop()
            self.commands.stop()
            for reader in self.readers:
                reader.stop()
            return 1
        pools = ", ".join(p.id for p in self.config.pools)
        settings = self.config.decider
        if settings.metrics_port:
            try:
                port = self.metrics.serve(settings.metrics_port, settings.metrics_address)
            except OSError as exc:
                log.error(
                    "cannot serve metrics on %s:%s: %s", settings.metrics_address, settings.metrics_port, exc
                )
                self.link.stop()
                self.commands.stop()
                for reader in self.readers:
                    reader.stop()
                return 1
            self.metrics_served = True
            log.info("metrics on http://%s:%d/metrics", settings.metrics_address, port)
        log.info(
            "decider %s (instance %s%s) serving %s (stale_after %gs, startup_grace %gs%s)",
            self.decider_id,
            self.instance,
            ", standby" if settings.standby else "",
            pools,
            settings.stale_after,
            settings.startup_grace,
            ", dry-run" if settings.dry_run else "",
        )
        if self.readers or not self.config.mqtt.retained_wildcards:
            count = len(self.link.subscriptions) + sum(len(r.subscriptions) for r in self.readers)
            log.info(
                "%s subscriptions: %d topic filters over %d connection(s)",
                "exact" if not self.config.mqtt.retained_wildcards else "wildcard",
                count,
                1 + len(self.readers),
            )
        retained = sum(1 + 3 * len(p.nodes) for p in self.config.pools)  # status; role, state, tip
        if retained > MOSQUITTO_QUEUE:
            log.warning(
                "serving %d pools: the broker sends up to %d retained messages at once when the decider "
                "subscribes; mosquitto drops what does not fit its per-client queue (max_queued_messages, "
                "1000 by default): set max_queued_messages to at least %d (docs/brokers.md)",
                len(self.config.pools),
                retained,
                retained + 1000,
            )
        try:
            self.link.serve(
                self.handle,
                stop,
                tick=settings.tick,
                on_tick=self.tick,
                wake_in=self.wake_in,
                on_wake=self.on_due,
                batch_pause=BATCH_PAUSE,
            )
        finally:
            self.shutdown()
        return self.exit_code

    def shutdown(self) -> None:
        deliveries = []
        actions = self.core.shutdown(wall_and_mono()) if self.link.connected.is_set() else []
        for action in actions:
            if isinstance(action, PublishStatus):
                topic = self.topics.decider(action.pool)
                deliveries.append(self.link.publish(topic, self._status_json(action.status), retain=True))
        gone = self.core.presence(wall_and_mono(), online=False)
        if gone is not None and self.link.connected.is_set() and self.exit_code == 0:
            # (A refused duplicate says nothing: the presence of our id is the other process's.)
            gone_json = self._status_json(gone.status)
            deliveries.append(self.link.publish(self.presence_topic, gone_json, retain=True))
        if not self.commands.flush(SHUTDOWN_PUBLISH_TIMEOUT):
            log.warning("%d role commands not acknowledged before exit", self.commands.pending())
        deadline = time.monotonic() + SHUTDOWN_PUBLISH_TIMEOUT
        for delivery in deliveries:
            try:
                delivery.wait(max(0.0, deadline - time.monotonic()))
            except LinkError as exc:
                log.warning("could not publish the offline status: %s", exc)
                break
        self.presence.stop()
        self.commands.stop()
        for reader in self.readers:
            reader.stop()
        self.link.stop()
        self.metrics.close()
        if self.alerts is not None:
            self.alerts.stop()
        log.info("decider %s stopped", self.decider_id)


def run(config: BpfConfig, *, stop: threading.Event | None = None) -> int:
    """``bpfailover decider``: serve until SIGTERM/SIGINT (or ``stop``); the exit code."""
    service = DeciderService(config)
    stop = stop if stop is not None else threading.Event()
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return service.serve(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
