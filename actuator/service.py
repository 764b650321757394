"""The actuator's I/O shell: MQTT link, NodeState reports, the fencing clock and signals.

One thread does everything in order: read the link's inbox, check commands with
``policy``, let the ``controller`` apply them, and after every step ask the fencing
timer whether a producer has been out of broker contact for ``fence_after``. Only
connecting runs on a thread of its own, so that a slow or refusing broker never holds
up a fence.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable

from actuator.controller import RoleController
from actuator.fence import FENCE_SLACK, FenceTimer, advertised_for
from actuator.methods import build_method
from actuator.policy import CommandRejected, Expected, check_command
from actuator.state import StateStore
from bpfailover.link import BrokerRefused, Incoming, LinkEvent, MqttLink, PublishError, make_client_id
from bpfailover.rejections import Rejections
from bpfailover.settings import BpfConfig, ConfigError
from bpfailover.signing import KeyLoadError, load_verify_key
from bpfailover.topics import Topics
from bpfailover.wire import NodeState

log = logging.getLogger("bpfailover.actuator")

TICK = 0.25  # seconds between fencing checks when nothing arrives
RECONNECT_AFTER_REFUSAL = 30.0
DEMOTION_RETRY = 60.0  # seconds between further tries of a demotion that failed completely
SHUTDOWN_PUBLISH_TIMEOUT = 5.0
CONNECT_SOCKET_TIMEOUTS = 15.0  # paho's TCP connect and TLS handshake timeouts, on top of connect_timeout


class ActuatorService:
    def __init__(self, config: BpfConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
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
        self.expected = Expected(self.role_topic, self.pool, self.node, verify_key)
        self.method = build_method(s)
        self.controller = RoleController(
            self.pool,
            self.node,
            self.method,
            StateStore(s.state_dir, self.pool, self.node),
            dry_run=s.dry_run,
            on_change=self.publish_state,
        )
        self.fence = FenceTimer(s.fence_after, config.mqtt.keepalive, clock)
        # What NodeState.fence_after promises the decider: last broker contact -> node demoted, at most.
        self.fence_promise = advertised_for(s, config.mqtt.keepalive)
        self._log_fence_settings()
        self.rejections = Rejections("actuator", log)
        self._will_epoch = self.controller.epoch
        self.link = MqttLink(
            config.mqtt,
            make_client_id("actuator", self.pool, self.node),
            subscriptions=[self.role_topic],
            will=(self.state_topic, self.will_state().to_json()),
            track_contact=True,  # fencing measures silence from the last PINGRESP too
        )
        self._stopping = threading.Event()
        self._link_started = False
        self._connector: threading.Thread | None = None
        self._next_connect = 0.0
        self._next_fence_try = 0.0
        self._next_demotion_try = 0.0

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
            "fence: due at most %gs after the last broker contact, node demoted within %gs more "
            "(apply_timeout %gs%s, + %gs); advertising fence_after %gs%s",
            self.fence.effective,
            self.fence_promise - self.fence.effective,
            s.apply_timeout,
            " for the restart, then for stop_command" if s.stop_command else "",
            FENCE_SLACK,
            self.fence_promise,
            " (NodeState says 0: dry-run)" if self.dry_run else "",
        )

    # --- reporting --------------------------------------------------------------------------

    def node_state(self, *, online: bool) -> NodeState:
        status = self.controller.status()
        return NodeState(
            pool=self.pool,
            node=self.node,
            boot=self.boot,
            online=online,
            role=status.role,
            epoch=status.epoch,
            fenced=status.fenced,
            dry_run=self.dry_run,
            method=self.method.name,
            fence_after=self.advertised_fence_after,
            pending=status.pending,
            error=status.error,
            rejected=status.rejected,
            updated_at=time.time(),
        )

    @property
    def advertised_fence_after(self) -> float:
        """NodeState.fence_after: the longest time from the last broker contact until the node is
        demoted by its fence (actuator.fence); 0 when it makes no such promise.

        A dry-run actuator never really fences, so it must not let the decider assume it did.
        """
        return 0.0 if self.dry_run else self.fence_promise

    def will_state(self) -> NodeState:
        """The Last Will: offline, and no claim about the role.

        It is fixed when the connection is made and fires whenever this process dies,
        while the node keeps running whatever it ran then, which the Will cannot know. It
        carries the stored epoch (the highest this node accepted) as of the (re)connect.
        """
        return NodeState(
            pool=self.pool,
            node=self.node,
            boot=self.boot,
            online=False,
            role="unknown",
            epoch=self.controller.epoch,
            dry_run=self.dry_run,
            method=self.method.name,
            fence_after=self.advertised_fence_after,
            updated_at=time.time(),
        )

    def refresh_will(self, *, force: bool = False) -> None:
        """Give the next (re)connect a Will with the current stored epoch."""
        epoch = self.controller.epoch
        if force or epoch != self._will_epoch:
            self.link.set_will(self.state_topic, self.will_state().to_json())
            self._will_epoch = epoch

    def publish_state(self) -> None:
        """Publish the retained NodeState now (if connected) and refresh the Last Will."""
        self.refresh_will()
        if not self.link.connected.is_set():
            return
        state = self.node_state(online=True)
        self.link.publish(self.state_topic, state.to_json(), retain=True, latest=True)
        log.debug("reported %s", state.model_dump_json())

    # --- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
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
        self.controller.start()
        self.refresh_will(force=True)  # the stored epoch, before the first connect
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except Exception:  # the actuator of a producer must outlive its own bugs
                    log.exception("internal error in the actuator loop (continuing)")
                    self._stopping.wait(TICK)
        finally:
            self._shutdown()
        return 0

    def _step(self) -> None:
        self._ensure_link()
        item = self.link.get(timeout=self._wait())
        if isinstance(item, Incoming):
            self._on_message(item)
        elif isinstance(item, LinkEvent):
            self._on_link_event(item)
        self._check_fence()
        self._retry_demotion()

    def _wait(self) -> float:
        """How long to wait for the next message: until the fence would be due, at most a tick."""
        if not self.controller.might_forge() or self.clock() < self._next_fence_try:
            return TICK
        left = self.fence.seconds_left(
            connected=self.link.connected.is_set(), last_contact=self.link.last_contact_mono
        )
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
            log.exception("internal error connecting; retrying in %.0fs", RECONNECT_AFTER_REFUSAL)
            self._next_connect = self.clock() + RECONNECT_AFTER_REFUSAL
        else:
            self._link_started = True

    def _on_link_event(self, event: LinkEvent) -> None:
        if event.kind == "connected":
            log.info("%s/%s: broker connected; reporting state", self.pool, self.node)
            self.publish_state()
        else:
            log.warning("%s/%s: broker connection lost: %s", self.pool, self.node, event.reason)

    def _on_message(self, message: Incoming) -> None:
        try:
            verdict = check_command(
                message.topic,
                message.payload,
                self.expected,
                stored_epoch=self.controller.epoch,
                stored_role=self.controller.stored_role,
            )
        except CommandRejected as exc:
            self.rejections.reject(exc.reason, exc.detail, topic=message.topic)
            self.controller.note_rejection(exc.reason, exc.detail)
            self.publish_state()
            return
        except Exception as exc:  # never let one message kill the actuator
            log.exception("internal error checking a command on %s", message.topic)
            self.rejections.reject("internal", str(exc), topic=message.topic)
            return
        if verdict.kind == "cleared":
            log.info(
                "%s/%s: retained role command was cleared; keeping the current role", self.pool, self.node
            )
            return
        try:
            self.controller.on_command(verdict, abort=self._fence_due)
        except Exception:
            log.exception("internal error applying a command on %s", message.topic)
        self.publish_state()

    def _fence_due(self) -> bool:
        return self.fence.due(
            connected=self.link.connected.is_set(), last_contact=self.link.last_contact_mono
        )

    def _check_fence(self) -> None:
        if not self.controller.might_forge() or not self._fence_due() or self.clock() < self._next_fence_try:
            return
        silence = self.fence.silence(self.link.last_contact_mono)
        try:
            done = self.controller.fence(
                f"no broker contact for {silence:.1f}s (fence_after {self.fence.fence_after:g}s)"
            )
        except Exception:
            log.exception("internal error while fencing")
            done = False
        if not done and self.controller.might_forge():
            # Keep trying, but not in a tight loop of restarts.
            self._next_fence_try = self.clock() + max(self.fence.fence_after, 10.0)
        self.publish_state()

    def _retry_demotion(self) -> None:
        """Keep trying a demotion that failed, retries and stop_command included."""
        if self.dry_run or not self.controller.needs_demotion():
            self._next_demotion_try = self.clock() + DEMOTION_RETRY
            return
        if self.clock() < self._next_demotion_try:
            return
        self._next_demotion_try = self.clock() + DEMOTION_RETRY
        try:
            self.controller.converge_relay("retrying a demotion that failed")
        except Exception:
            log.exception("internal error while retrying a demotion")
        self.publish_state()

    def _shutdown(self) -> None:
        log.info("%s/%s: stopping; reporting offline", self.pool, self.node)
        if self._connector is not None:
            # Let an attempt under way finish, so that paho is not started behind our back.
            self._connector.join(self.config.mqtt.connect_timeout + CONNECT_SOCKET_TIMEOUTS)
        try:
            if self.link.connected.is_set():
                state = self.node_state(online=False)
                # A clean disconnect sends no will, so say offline ourselves first.
                self.link.publish_wait(
                    self.state_topic, state.to_json(), retain=True, timeout=SHUTDOWN_PUBLISH_TIMEOUT
                )
        except PublishError as exc:
            log.warning("could not report offline before stopping: %s", exc)
        finally:
            if self._link_started:
                self.link.stop()


def run(config: BpfConfig) -> int:
    """``bpfailover actuator -c FILE``: run until SIGTERM or SIGINT; return the exit code."""
    service = ActuatorService(config)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; exiting after the current step", signal.Signals(signum).name)
        service.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    return service.run()
