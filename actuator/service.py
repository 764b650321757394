"""The actuator's I/O shell: MQTT link, the boot clock, signals, around ``bpfailover.actuator.core``.

One thread does everything in order: check the fence (first, so that a host resuming
from a suspend fences before it looks at anything that arrived meanwhile), read the
link's inbox, hand commands and connection events to the core, and tick it. Only
connecting runs on a thread of its own, so that a slow or refusing broker never holds
up a fence. Every connection gets its own Last Will, naming the connection.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable

from bpfailover.actuator.contact import ContactMemory, boot_clock
from bpfailover.actuator.controller import RoleController
from bpfailover.actuator.core import ActuatorCore, PublishState
from bpfailover.actuator.methods import build_method
from bpfailover.actuator.methods.base import demotion_bound
from bpfailover.actuator.policy import Expected
from bpfailover.actuator.state import StateStore
from bpfailover.actuator.watchdog import Watchdog, watchdog_restart_bound
from bpfailover.link import BrokerRefused, Incoming, LinkError, LinkEvent, MqttLink, make_client_id
from bpfailover.logs import log_exception
from bpfailover.protocol.fence import FENCE_SLACK
from bpfailover.protocol.signing import KeyLoadError, load_verify_key
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import NodeState
from bpfailover.rejections import Rejections
from bpfailover.settings import BpfConfig, ConfigError

log = logging.getLogger("bpfailover.actuator")

TICK = 0.25  # seconds between fencing checks when nothing arrives
RECONNECT_AFTER_REFUSAL = 30.0
SHUTDOWN_PUBLISH_TIMEOUT = 5.0
CONNECT_SOCKET_TIMEOUTS = 15.0  # paho's TCP connect and TLS handshake timeouts, on top of connect_timeout


class ActuatorService:
    def __init__(self, config: BpfConfig, *, clock: Callable[[], float] = boot_clock) -> None:
        s = config.actuator
        self.config = config
        self.pool = config.require_pool_id()
        self.node = config.require_node_name()
        self.clock = clock
        self.boot = uuid.uuid4().hex[:12]
        self.dry_run = s.dry_run
        topics = Topics(config.mqtt.prefix)
        self.role_topic = topics.role(self.pool, self.node)
        self.state_topic = topics.state(self.pool, self.node)
        try:
            verify_key = load_verify_key(s.verify_key) if s.verify_key else None
        except KeyLoadError as exc:
            raise ConfigError(f"actuator.verify_key: {exc}") from None
        if verify_key is None:
            log.warning("actuator.verify_key is not set: role commands are accepted unsigned")
        self.method = build_method(s)
        self.controller = RoleController(
            self.pool,
            self.node,
            self.method,
            StateStore(s.state_dir, self.pool, self.node),
            dry_run=s.dry_run,
        )
        self.rejections = Rejections("actuator", log)
        self.memory = ContactMemory(s.state_dir)
        self.watchdog = Watchdog.from_env()
        # Hung: killed after the watchdog's interval, restarted, and it fences at once (its last
        # contact is kept). A busy loop (a command running, a retry pause) keeps feeding it.
        supervisor = 0.0
        if self.watchdog.interval is not None:
            supervisor = watchdog_restart_bound(self.watchdog.interval)
        self.core = ActuatorCore(
            controller=self.controller,
            expected=Expected(self.role_topic, self.pool, self.node, verify_key),
            fence_after=s.fence_after,
            keepalive=config.mqtt.keepalive,
            demotion_bound=demotion_bound(s),
            method_name=self.method.name,
            boot=self.boot,
            memory=self.memory,
            clock=clock,
            wall=time.time,
            emit=self._emit,
            rejections=self.rejections,
            supervisor_bound=supervisor,
            on_alive=self._alive,
            start_timeout=s.start_timeout,
        )
        self.fence = self.core.fence
        self._log_fence_settings()
        self.link = MqttLink(
            config.mqtt,
            # Unique per process: with a predictable id, anyone holding this node's broker
            # credentials could take the session over and silence the real reports.
            make_client_id("actuator", self.pool, self.node, unique=True),
            subscriptions=[self.role_topic],
            will=self._will,
            contact_clock=clock,
        )
        self._stopping = threading.Event()
        self._stop_reason = ""
        self._link_started = False
        self._connector: threading.Thread | None = None
        self._next_connect = 0.0

    @property
    def fence_promise(self) -> float:
        return self.core.fence_promise

    @property
    def advertised_fence_after(self) -> float:
        return self.core.advertised_fence_after

    def _log_fence_settings(self) -> None:
        s, keepalive = self.config.actuator, self.config.mqtt.keepalive
        if s.fence_after == 0:
            log.warning("actuator.fence_after = 0: self-fencing is OFF, there is no split-brain guarantee")
            return
        if self.fence.effective > s.fence_after:
            log.warning(
                "actuator.fence_after %gs is below 2 x mqtt.keepalive (%gs): a producer cut off from the "
                "broker is fenced only after %gs of silence; advertising fence_after %gs (with the demotion)",
                s.fence_after,
                keepalive,
                self.fence.effective,
                self.fence_promise,
            )
        log.info(
            "fence: due at most %gs after the last acknowledged report, node demoted within %gs more "
            "(apply_timeout %gs%s, + %gs); advertising fence_after %gs%s",
            self.fence.effective,
            self.fence_promise - self.fence.effective,
            s.apply_timeout,
            " for the restart, then for stop_command" if s.stop_command else "",
            FENCE_SLACK,
            self.fence_promise,
            " (NodeState says 0: dry-run)" if self.dry_run else "",
        )

    def _alive(self) -> None:
        """The core has just checked the fence: the only place that feeds systemd's watchdog."""
        self.watchdog.ping(self.clock())

    # --- reporting --------------------------------------------------------------------------

    def node_state(self, *, online: bool) -> NodeState:
        return self.core.node_state(online=online)

    def _will(self, conn: str) -> tuple[str, bytes]:
        """The Last Will of a new connection (called by the link just before it connects)."""
        return self.state_topic, self.core.will_state(conn).to_json()

    def _emit(self, action: PublishState) -> None:
        if not self.link.connected.is_set():
            return
        self.link.publish(self.state_topic, action.state.to_json(), retain=True, latest=True)
        log.debug("reported %s", action.state.model_dump_json())

    def publish_state(self) -> None:
        """Publish the retained NodeState now (if connected)."""
        self.core.report()

    # --- the loop ---------------------------------------------------------------------------

    def stop(self, why: str = "") -> None:
        """Ask the loop to end after its current step. Safe in a signal handler: it only sets
        a flag (no logging there: a handler that logs can re-enter a write under way)."""
        self._stop_reason = why
        self._stopping.set()

    def run(self) -> int:
        log.info(
            "actuator %s/%s starting: method %s, fence_after %gs%s, role topic %s",
            self.pool,
            self.node,
            self.method.name,
            self.config.actuator.fence_after,
            ", DRY-RUN" if self.dry_run else "",
            self.role_topic,
        )
        # Ready first: with the BindsTo recipe cnode waits for us, and start-up may restart cnode.
        self.watchdog.ready(f"{self.pool}/{self.node}: starting")
        self.core.start()
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except Exception:  # the actuator of a producer must outlive its own bugs
                    log_exception(log, "internal error in the actuator loop (continuing)")
                    self._stopping.wait(TICK)
        finally:
            if self._stop_reason:
                log.info("received %s; exiting after the current step", self._stop_reason)
            self._shutdown()
        return 0

    def _step(self) -> None:
        core = self.core
        # The fence first: after a suspend, before anything that arrived meanwhile is looked at.
        core.on_contact(self.link.acked_sent_at)
        core.check_fence()
        self._ensure_link()
        item = self.link.get(timeout=self._wait())
        core.on_contact(self.link.acked_sent_at)
        core.check_fence()
        if isinstance(item, Incoming):
            core.on_command(item.topic, item.payload)
        elif isinstance(item, LinkEvent):
            self._on_link_event(item)
        core.tick()

    def _wait(self) -> float:
        """How long to wait for the next message: until the fence would be due, at most a tick."""
        left = self.core.seconds_to_fence()
        return TICK if left is None else min(TICK, max(left, 0.01))

    def _ensure_link(self) -> None:
        if self._link_started or self.clock() < self._next_connect:
            return
        if self._connector is not None and self._connector.is_alive():
            return
        # A first connection attempt blocks (TCP, TLS, CONNACK: many seconds against a dead or
        # refusing broker); on this thread it would hold up a fence that falls due meanwhile.
        self._connector = threading.Thread(target=self._connect, name="actuator-connect", daemon=True)
        self._connector.start()

    def _connect(self) -> None:
        """On the connector thread: one attempt, then paho keeps trying in the background.

        An unreachable broker must not stop this process, or it could not fence its node.
        """
        try:
            self.link.start(attempts=1, persistent=True)
        except BrokerRefused as exc:
            log.error("%s; retrying in %.0fs (fencing stays armed meanwhile)", exc, RECONNECT_AFTER_REFUSAL)
            self._next_connect = self.clock() + RECONNECT_AFTER_REFUSAL
        except Exception:
            log_exception(log, "internal error connecting; retrying in %.0fs", RECONNECT_AFTER_REFUSAL)
            self._next_connect = self.clock() + RECONNECT_AFTER_REFUSAL
        else:
            self._link_started = True

    def _on_link_event(self, event: LinkEvent) -> None:
        if event.kind == "connected":
            self.core.on_connected(event.conn, self.link.keepalive())
        else:
            log.warning("%s/%s: broker connection lost: %s", self.pool, self.node, event.reason)
            self.core.on_disconnected()

    def _shutdown(self) -> None:
        """A clean stop: say so (no fence will happen), or demote the node if that cannot be said.

        The working connection is dropped without a DISCONNECT (its Will, which promises a
        fence, fires now), and the report goes out on a last connection whose own Will is
        that same report. A lost DISCONNECT can then only leave "stopped" on the broker,
        never a Will promising a fence that nobody will carry out.
        """
        log.info("%s/%s: stopping; reporting a clean stop", self.pool, self.node)
        self.watchdog.stopping("stopping")
        if self._connector is not None:
            # Let an attempt under way finish, so that paho is not started behind our back.
            self._connector.join(self.config.mqtt.connect_timeout + CONNECT_SOCKET_TIMEOUTS)
        was_connected = self.link.connected.is_set()
        if self._link_started:
            self.link.abort()
        reported = was_connected and self._report_stop_within(self._stop_budget())
        if not reported:
            self.core.stop_unreported()

    def _stop_budget(self) -> float:
        """How long the clean-stop report may take: never past the moment the fence is due."""
        budget = self.config.mqtt.connect_timeout + CONNECT_SOCKET_TIMEOUTS + SHUTDOWN_PUBLISH_TIMEOUT
        left = self.core.seconds_to_fence()
        return budget if left is None else min(budget, left)

    def _report_stop_within(self, seconds: float) -> bool:
        """``_report_stop`` on a thread, waited for ``seconds``: connecting may hang on a dead link."""
        result: list[bool] = []
        worker = threading.Thread(target=lambda: result.append(self._report_stop()), daemon=True)
        worker.start()
        worker.join(max(0.0, seconds))
        if not result:
            log.warning("the clean-stop report could not be sent within %.1fs; demoting instead", seconds)
        return bool(result and result[0])

    def _report_stop(self) -> bool:
        """The clean-stop report on a last connection (same client id); True once acknowledged."""

        def will(conn: str) -> tuple[str, bytes]:
            return self.state_topic, self.core.stop(conn).to_json()

        final = MqttLink(self.config.mqtt, self.link.client_id, will=will, contact_clock=self.clock)
        try:
            final.start(attempts=1)
            last = self.core.stop(final.conn).to_json()
            final.publish_wait(self.state_topic, last, retain=True, timeout=SHUTDOWN_PUBLISH_TIMEOUT)
            return True
        except LinkError as exc:
            log.warning("could not report the clean stop: %s", exc)
            return False
        finally:
            with contextlib.suppress(Exception):
                final.stop()


def run(config: BpfConfig) -> int:
    """``bpfailover actuator -c FILE``: run until SIGTERM or SIGINT; return the exit code."""
    service = ActuatorService(config)

    def on_signal(signum: int, _frame: object) -> None:
        service.stop(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    return service.run()
