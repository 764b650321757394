"""The actuator's I/O shell: MQTT link, NodeState reports, the fencing clock and signals.

One thread does everything in order: read the link's inbox, check commands with
``policy``, let the ``controller`` apply them, and after every step ask the fencing
timer whether a producer has been out of broker contact for ``fence_after``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable

from actuator.controller import RoleController
from actuator.fence import FenceTimer
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
        if s.fence_after == 0:
            log.warning("actuator.fence_after = 0: self-fencing is OFF, there is no split-brain guarantee")
        elif s.fence_after < 2 * config.mqtt.keepalive:
            log.info(
                "fence_after %.0fs is below 2 x keepalive: a silent link is fenced once paho drops it",
                s.fence_after,
            )
        self.rejections = Rejections("actuator", log)
        self.link = MqttLink(
            config.mqtt,
            make_client_id("actuator", self.pool, self.node),
            subscriptions=[self.role_topic],
            will=(self.state_topic, self.node_state(online=False).to_json()),
            track_contact=True,  # fencing measures silence from the last PINGRESP too
        )
        self._stopping = threading.Event()
        self._link_started = False
        self._next_connect = 0.0
        self._next_fence_try = 0.0
        self._next_demotion_try = 0.0

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
            # A dry-run actuator never really fences, so it must not let the decider assume it did.
            fence_after=0.0 if self.dry_run else self.config.actuator.fence_after,
            pending=status.pending,
            error=status.error,
            rejected=status.rejected,
            updated_at=time.time(),
        )

    def publish_state(self) -> None:
        """Publish the retained NodeState now (if connected) and refresh the Last Will."""
        self.link.set_will(self.state_topic, self.node_state(online=False).to_json())
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
        self.publish_state()  # refresh the will before the first connect
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
        try:
            # One attempt, then paho keeps trying in the background: an unreachable broker
            # must not stop this process, or it could not fence its node.
            self.link.start(attempts=1, persistent=True)
            self._link_started = True
        except BrokerRefused as exc:
            log.error("%s; retrying in %.0fs (fencing stays armed meanwhile)", exc, RECONNECT_AFTER_REFUSAL)
            self._next_connect = self.clock() + RECONNECT_AFTER_REFUSAL

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
