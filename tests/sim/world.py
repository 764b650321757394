"""The simulated pool: hosts with their clocks, cardano-nodes, publishers, the REAL actuator
core and the REAL decider core, all on the simulated network of ``tests.sim.net``.

The decider is driven through ``bpfailover.decider.service.DeciderService``'s own ``dispatch``,
``_link_event`` and ``_watch_read`` (only its I/O is replaced); the actuator through
``bpfailover.actuator.core.ActuatorCore`` in the order ``bpfailover.actuator.service.ActuatorService._step``
uses (contact, fence, the message, tick). Nothing here reads a real clock.

Checked after every event: **S**, no two nodes forge at once. At the end of a schedule
every fault is healed and **L** is checked: exactly one node forges within ``L_BOUND``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bpfailover.actuator import controller as controller_module
from bpfailover.actuator.commands import ApplyAborted
from bpfailover.actuator.controller import RoleController
from bpfailover.actuator.core import ActuatorCore, PublishState
from bpfailover.actuator.methods.base import ApplyError
from bpfailover.actuator.observe import Observed
from bpfailover.actuator.policy import Expected
from bpfailover.actuator.state import StoredState
from bpfailover.decider.actions import Action, PublishDryRun, PublishEvent, PublishRole, PublishStatus
from bpfailover.decider.alerts import KesWatch
from bpfailover.decider.core import Decider
from bpfailover.decider.model import Now
from bpfailover.decider.retained import RetainedRead
from bpfailover.decider.service import DeciderService
from bpfailover.link import Incoming, LinkEvent
from bpfailover.protocol.fence import advertised_fence_after
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import AppliedRole, DecisionEvent, Role, TipReport
from bpfailover.rejections import Rejections
from bpfailover.settings import ActuatorSettings, DeciderSettings, PoolSpec
from tests.sim.net import Broker, Client, Link, Loop

POOL = "pool1"
PREFIX = "bpfailover"
WALL0 = 1_700_000_000.0
KEEPALIVE = 2.0
TIP_INTERVAL = 2.0
ACTUATOR_TICK = 0.5  # the real TICK (actuator service) is 0.25; the wait is cut to the fence instant
SHUTDOWN_PUBLISH_TIMEOUT = 5.0  # bpfailover.actuator.service
# Set by tests.sim.mutants ("contact_any"): contact is any packet from the broker, as before the fix.
CONTACT_ANY_PACKET = False

DECIDER = DeciderSettings(
    stale_after=20.0,
    tick=1.0,
    rise=2,
    min_switch_interval=20.0,
    max_failovers=6,
    flap_window=200.0,
    startup_grace=4.0,
    max_clock_skew=5.0,
    apply_timeout=8.0,
    fence_margin=2.0,
    status_interval=10.0,
    not_forging_after=15.0,
)
ACTUATOR = ActuatorSettings(
    method="command", fence_after=6.0, apply_timeout=2.0, stop_command="sim-stop", state_dir=Path("/sim")
)
DEMOTION_BOUND = ACTUATOR.apply_timeout * (2 if ACTUATOR.stop_command else 1)
FENCE_ADVERTISED = advertised_fence_after(ACTUATOR.fence_after, KEEPALIVE, DEMOTION_BOUND)
FENCE_WAIT = FENCE_ADVERTISED + KEEPALIVE + DECIDER.fence_margin
# L: stale_after + fence wait + apply_timeout, plus what the healing itself takes: reconnect
# backoff (10 s), startup_grace, the retained read, `rise` fresh tips, min_switch_interval and
# one abandoned target (apply_timeout again).
L_BOUND = (
    DECIDER.stale_after
    + FENCE_WAIT
    + DECIDER.apply_timeout
    + 10.0
    + DECIDER.startup_grace
    + 2.0
    + DECIDER.rise * TIP_INTERVAL
    + DECIDER.min_switch_interval
    + DECIDER.apply_timeout
    + 5.0
)

QUIET = logging.getLogger("bpfailover.sim.quiet")
QUIET.disabled = True
QUIET.propagate = False


class Violation(BaseException):  # not Exception: the cores' "survive a bug" handlers must not eat it
    def __init__(self, kind: str, at: float, detail: str) -> None:
        super().__init__(f"{kind} at t={at:.3f}: {detail}")
        self.kind = kind
        self.at = at
        self.detail = detail


# --- hosts and processes ------------------------------------------------------------------------


class Host:
    """A machine: a boot clock (runs in suspend), a monotonic clock (stops), a wall clock."""

    def __init__(self, loop: Loop, name: str, *, boot0: float, wall_skew: float = 0.0) -> None:
        self.loop = loop
        self.name = name
        self.boot0 = boot0
        self.wall_skew = wall_skew
        self.suspended_since: float | None = None
        self.suspended_total = 0.0
        self.procs: list[Process] = []
        self.on_change: Callable[[], None] = lambda: None

    @property
    def suspended(self) -> bool:
        return self.suspended_since is not None

    def boot(self) -> float:
        return self.loop.now + self.boot0

    def mono(self) -> float:
        stopped = self.suspended_total + (
            self.loop.now - self.suspended_since if self.suspended_since is not None else 0.0
        )
        return self.loop.now - stopped + 1000.0 + self.boot0

    def wall(self) -> float:
        return WALL0 + self.loop.now + self.wall_skew

    def suspend(self) -> None:
        if self.suspended_since is None:
            self.suspended_since = self.loop.now
            self.on_change()

    def resume(self) -> None:
        if self.suspended_since is None:
            return
        self.suspended_total += self.loop.now - self.suspended_since
        self.suspended_since = None
        for proc in self.procs:
            proc.wake()
        self.on_change()  # the node forges again, if its actuator did not fence it just now


class Process:
    """One OS process: runs only while alive, not paused and its host not suspended."""

    def __init__(self, world: World, host: Host, name: str) -> None:
        self.world = world
        self.loop = world.loop
        self.host = host
        self.name = name
        self.incarnation = 0
        self.alive = False
        self.paused = False
        self.deferred: deque[Callable[[], None]] = deque()
        self.clients: list[Client] = []
        host.procs.append(self)

    @property
    def runnable(self) -> bool:
        return self.alive and not self.paused and not self.host.suspended

    def run(self, fn: Callable[[], None]) -> None:
        if not self.alive:
            return
        if self.runnable and not self.deferred:
            fn()
        else:
            self.deferred.append(fn)
            if self.runnable:
                self.wake()

    def timer(self, delay: float, fn: Callable[[], None]) -> None:
        incarnation = self.incarnation
        self.loop.later(delay, lambda: self.run(fn) if self.incarnation == incarnation else None)

    def wake(self) -> None:
        """Resumed (SIGCONT, host resume): the process's own first steps, then what waited."""
        if not self.runnable:
            return
        self.resumed()
        while self.deferred and self.runnable:
            self.deferred.popleft()()

    def resumed(self) -> None:
        """What the process does first after a pause (the actuator: its fence)."""

    def start(self) -> None:
        if self.alive:
            return
        self.incarnation += 1
        self.alive = True
        self.paused = False
        self.deferred.clear()
        self.clients = []
        self.started()

    def started(self) -> None:
        raise NotImplementedError

    def crash(self) -> None:
        """SIGKILL: gone at once; the OS closes its sockets."""
        if not self.alive:
            return
        self.alive = False
        self.deferred.clear()
        for client in self.clients:
            if not self.host.suspended:
                client.killed()
            else:
                client.active = False
        self.clients = []

    def pause(self) -> None:
        self.paused = True

    def unpause(self) -> None:
        if self.paused:
            self.paused = False
            self.wake()

    def client(self, link: Link, client_id: str, handler: Any, **kwargs: Any) -> Client:
        client = Client(
            self.loop, self.world.broker, link, self, client_id, handler, keepalive=KEEPALIVE, **kwargs
        )
        self.clients.append(client)
        return client


# --- the cardano-node and what the actuator keeps on its disk ------------------------------------


class Node:
    """A cardano-node: forges when its configuration says producer and it runs."""

    def __init__(self, world: World, name: str, priority: int, host: Host) -> None:
        self.world = world
        self.name = name
        self.priority = priority
        self.host = host
        self.forging = False  # its configuration: producer or relay
        # Runs with its keys in place but does not forge (it restarted with the non-producing
        # flag): a SIGHUP ends that, unless ``sighup_broken``.
        self.idle = False
        self.sighup_broken = False
        self._alive = True
        self.stalled = False
        self.tip_time = host.wall() - 1.0
        self.stored: StoredState | None = None  # the actuator's state file
        self.contact: tuple[float, float] | None = None  # the actuator's last-contact file

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, alive: bool) -> None:
        self._alive = alive
        self.world.changed()

    @property
    def producing(self) -> bool:
        return self.forging and not self.idle and self.alive and not self.host.suspended

    def sighup(self) -> None:
        if not self.sighup_broken:
            self.idle = False

    def tip(self) -> float:
        if self.alive and not self.stalled:
            self.tip_time = max(self.tip_time, self.host.wall() - self.world.loop.rng.random() * 2.0)
        return self.tip_time


class SimStore:
    """``bpfailover.actuator.state.StateStore`` on the node's simulated disk."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.path = Path(f"/sim/{node.name}/actuator-state.json")

    def load(self) -> StoredState | None:
        return self.node.stored

    def save(self, state: StoredState) -> None:
        self.node.stored = state.model_copy(update={"updated_at": 0.0})


class SimMemory:
    """``bpfailover.actuator.contact.ContactMemory`` on the node's disk (same boot: taken as it is)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def load(self, now_boot: float, now_wall: float) -> float | None:
        if self.node.contact is None:
            return None
        return min(self.node.contact[0], now_boot)

    def remember(self, at_boot: float, at_wall: float) -> None:
        if self.node.contact is None or self.node.contact[0] < at_boot:
            self.node.contact = (at_boot, at_wall)


class SimObserver:
    """``bpfailover.actuator.observe.ForgingObserver`` looking at the simulated node: it forges or
    not while it runs, unknown while it is dead."""

    configured = True

    def __init__(self, node: Node) -> None:
        self.node = node
        self.last = Observed(None)

    def look(self) -> Observed:
        node = self.node
        seen = Observed(node.forging and not node.idle, up=True)
        self.last = seen if node.alive else Observed(None, up=False)
        return self.last


class SimMethod:
    """A Method (``bpfailover.actuator.methods.base``) that switches the node's configuration at once (the
    sighup method: the switch is a SIGHUP, and the node is seen doing it)."""

    name = "sim"
    restarts_node = False  # it switches at once: no restart to wait for

    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = ACTUATOR
        self.observer = SimObserver(node)

    def observe(self) -> Observed:
        return self.observer.look()

    def can_reassert(self) -> bool:
        return True

    def reassert(
        self, role: Role, abort: Callable[[], bool] | None = None, alive: Callable[[], None] | None = None
    ) -> None:
        if self.detect_role() != role:
            raise ApplyError(f"the key files do not say {role}", "unknown")
        if role == "producer" and abort is not None and abort():
            raise ApplyAborted("sim: stopped to fence")
        self.node.sighup()
        self.node.world.changed()
        if role == "producer" and self.observe().forging is False:
            raise ApplyError("producer: not confirmed by the node (SIGHUP has no effect)", "producer")

    def check(self) -> None:
        pass

    def detect_role(self) -> AppliedRole | None:
        return "producer" if self.node.forging else "relay"

    def describe(self, role: Role) -> str:
        return f"sim: {role}"

    def apply(
        self, role: Role, abort: Callable[[], bool] | None = None, alive: Callable[[], None] | None = None
    ) -> None:
        if role == "producer" and abort is not None and abort():
            raise ApplyAborted("sim: stopped to fence")
        self.node.forging = role == "producer"
        self.node.sighup()
        self.node.world.changed()


def _inline_within(seconds: float, step: Callable[[], Any], what: str, alive: Any = None) -> Any:
    """``bpfailover.actuator.commands.within`` without its helper thread (the simulated disk never hangs)."""
    return step()


# --- publisher ----------------------------------------------------------------------------------


class Quiet:
    """A client handler that only publishes: nothing that arrives concerns it."""

    def on_connected(self, client: Client, conn_id: str) -> None:
        pass

    def on_disconnected(self, client: Client, why: str) -> None:
        pass

    def on_subscribed(self, client: Client) -> None:
        pass

    def on_message(self, client: Client, topic: str, payload: bytes, retain: bool) -> None:
        pass


class Publisher(Process, Quiet):
    def __init__(self, world: World, node: Node) -> None:
        super().__init__(world, node.host, f"publisher-{node.name}")
        self.node = node
        self.link = world.link(f"{node.name}/pub", node.host)
        self.topic = world.topics.tip(POOL, node.name)
        self.seq = 0

    def started(self) -> None:
        self.seq = 0
        self.boot = f"pub-{self.node.name}-{self.incarnation}"
        self.mqtt = self.client(
            self.link, f"publisher-{POOL}-{self.node.name}", self, contact_clock=self.host.boot
        )
        self.mqtt.start()
        self.timer(self.loop.rng.random() * TIP_INTERVAL, self.report)

    def report(self) -> None:
        node = self.node
        if node.alive and self.mqtt.connected:
            self.seq += 1
            tip = node.tip()
            report = TipReport(
                pool=POOL,
                node=node.name,
                boot=self.boot,
                seq=self.seq,
                sent_at=self.host.wall(),
                ok=True,
                slot=int(tip - WALL0) + 1000,
                tip_time=tip,
                source="simulate",
                forging=node.forging,
            )
            self.mqtt.publish(self.topic, report.to_json(), retain=True, latest=True)
        self.timer(TIP_INTERVAL, self.report)

# --- actuator -----------------------------------------------------------------------------------


class Actuator(Process):
    """The real ActuatorCore, driven as ``bpfailover.actuator.service`` drives it."""

    def __init__(self, world: World, node: Node) -> None:
        super().__init__(world, node.host, f"actuator-{node.name}")
        self.node = node
        self.link = world.link(f"{node.name}/act", node.host)
        self.role_topic = world.topics.role(POOL, node.name)
        self.state_topic = world.topics.state(POOL, node.name)
        self.stopping = False
        self.core: ActuatorCore | None = None

    def started(self) -> None:
        node = self.node
        self.stopping = False
        controller = RoleController(POOL, node.name, SimMethod(node), SimStore(node))  # type: ignore[arg-type]
        self.core = ActuatorCore(
            controller=controller,
            expected=Expected(self.role_topic, POOL, node.name),
            fence_after=ACTUATOR.fence_after,
            keepalive=KEEPALIVE,
            demotion_bound=DEMOTION_BOUND,
            method_name="sim",
            boot=f"act-{node.name}-{self.incarnation}",
            memory=SimMemory(node),
            clock=self.host.boot,
            wall=self.host.wall,
            emit=self._emit,
            rejections=Rejections("actuator", QUIET),
        )
        self.core.start()
        core = self.core
        self.mqtt = self.client(
            self.link,
            f"actuator-{POOL}-{node.name}",
            self,
            contact_clock=self.host.boot,
            subscriptions=[self.role_topic],
            will=lambda conn: (self.state_topic, core.will_state(conn).to_json()),
        )
        if CONTACT_ANY_PACKET:
            self.mqtt.on_rx = lambda: core.on_contact(self.host.boot())
        self.mqtt.start()
        self.timer(ACTUATOR_TICK, self._tick)

    def _emit(self, action: PublishState) -> None:
        if self.mqtt.connected:
            self.mqtt.publish(self.state_topic, action.state.to_json(), retain=True, latest=True)

    def _pre(self) -> ActuatorCore:
        core = self.core
        assert core is not None
        core.on_contact(self.mqtt.acked_sent_at)
        core.check_fence()
        return core

    def _tick(self) -> None:
        if self.stopping:
            return
        core = self._pre()
        core.tick()
        left = core.seconds_to_fence()
        self.timer(ACTUATOR_TICK if left is None else min(ACTUATOR_TICK, max(left, 0.01)), self._tick)

    def resumed(self) -> None:
        if self.stopping or self.core is None:
            return
        self._pre()  # the fence first, before anything that arrived meanwhile

    def on_connected(self, client: Client, conn_id: str) -> None:
        if not self.stopping:
            core = self._pre()
            core.on_connected(conn_id, KEEPALIVE)
            core.tick()

    def on_disconnected(self, client: Client, why: str) -> None:
        if not self.stopping:
            core = self._pre()
            core.on_disconnected()
            core.tick()

    def on_subscribed(self, client: Client) -> None:
        pass

    def on_message(self, client: Client, topic: str, payload: bytes, retain: bool) -> None:
        if not self.stopping:
            core = self._pre()
            core.on_command(topic, payload)
            core.tick()

    def sigterm(self) -> None:
        """A clean stop (``ActuatorService._shutdown``): report it, or demote when it cannot be said."""
        if not self.alive or self.stopping:
            return
        self.run(self._shutdown)

    def _shutdown(self) -> None:
        """As the service: drop the working connection (its Will fires), then send the report on
        a last connection of the same client id whose Will is that same report."""
        core = self.core
        assert core is not None
        self.stopping = True
        was_connected = self.mqtt.connected
        self.mqtt.killed()
        if not was_connected:
            self._exit(reported=False)
            return
        final = self.client(
            self.link,
            self.mqtt.client_id,
            Quiet(),
            contact_clock=self.host.boot,
            will=lambda conn: (self.state_topic, core.stop(conn).to_json()),
        )
        final.start()
        deadline = self.loop.now + SHUTDOWN_PUBLISH_TIMEOUT
        pub: list[Any] = []

        def wait() -> None:
            if final.connected and not pub:
                pub.append(final.publish(self.state_topic, core.stop(final.conn).to_json(), retain=True))
            if pub and pub[0].acked:
                self._exit(final, reported=True)
            elif self.loop.now >= deadline:
                self._exit(final, reported=False)
            else:
                self.timer(0.05, wait)

        wait()

    def _exit(self, final: Client | None = None, *, reported: bool) -> None:
        assert self.core is not None
        if not reported:
            self.core.stop_unreported()
        if final is not None:
            final.stop_clean()
        self.alive = False
        self.deferred.clear()
        self.clients = []


# --- decider ------------------------------------------------------------------------------------


class SimDeciderService(DeciderService):
    """DeciderService with its MQTT replaced by simulated clients; the rest is the real code."""

    def __init__(self, proc: DeciderProc, decider_id: str) -> None:
        world = proc.world
        self.proc = proc
        self.config = SimpleNamespace(pools=[world.spec])  # type: ignore[assignment]
        self.decider_id = decider_id
        self.topics = world.topics
        self.listeners = [proc.on_event]
        self.rejections = Rejections("decider", QUIET)
        self.signing_key = None
        self.public_key = None
        self.kes_watch = KesWatch(DECIDER.kes_alert_periods)
        self.alerts = None
        self.metrics_served = False
        self.core = Decider(
            DECIDER, [world.spec], decider_id, keepalive=KEEPALIVE, now=proc.now(), wait_for_read=True
        )
        self.retained_read = RetainedRead()

    def publish(self, actions: list[Action]) -> None:
        proc = self.proc
        for action in actions:
            if isinstance(action, PublishRole):
                topic = self.topics.role(action.pool, action.node)
                proc.commands.publish(topic, action.command.to_json(), retain=True)
                proc.world.commands.append((proc.loop.now, proc.decider_id, action.command))
            elif isinstance(action, PublishDryRun):
                topic = self.topics.dryrun(action.pool, action.node)
                proc.commands.publish(topic, action.command.to_json(), retain=True)
            elif isinstance(action, PublishStatus):
                proc.work.publish(self.topics.decider(action.pool), action.status.to_json(), retain=True)
            elif isinstance(action, PublishEvent):
                proc.work.publish(self.topics.events(action.pool), action.event.to_json())
                for listener in self.listeners:
                    listener(action.event)
        if actions:
            will = self.core.will(proc.now())
            if will is not None:
                proc.set_presence(will.status.to_json())


class DeciderProc(Process):
    def __init__(self, world: World, host: Host, decider_id: str) -> None:
        super().__init__(world, host, f"decider-{decider_id}")
        self.decider_id = decider_id
        self.links = {k: world.link(f"{decider_id}/{k}", host) for k in ("work", "cmd", "will")}
        self.service: SimDeciderService | None = None
        self.presence_will: bytes | None = None
        self._due_at: float | None = None

    def now(self) -> Now:
        return Now(self.host.mono(), self.host.wall())

    def started(self) -> None:
        topics = self.world.topics
        self.service = SimDeciderService(self, self.decider_id)
        subs = [
            topics.wildcard("tip", POOL),
            topics.wildcard("state", POOL),
            topics.wildcard("role", POOL),
            topics.decider(POOL),
            topics.control(POOL),
        ]
        cid = f"decider-{self.decider_id}"
        self.work = self.client(
            self.links["work"], cid, self, contact_clock=self.host.mono, subscriptions=subs
        )
        self.commands = self.client(self.links["cmd"], cid + "-cmd", self, contact_clock=self.host.mono)
        self.presence_will = None
        self.presence = self.client(
            self.links["will"],
            cid + "-will",
            self,
            contact_clock=self.host.mono,
            will=lambda conn: (topics.decider(POOL), self.presence_will) if self.presence_will else None,  # type: ignore[arg-type,return-value]
        )
        self.service.link = self.work  # type: ignore[assignment]
        self.service.commands = self.commands  # type: ignore[assignment]
        self.service._links_up = {self.work.client_id: False, self.commands.client_id: False}
        self.work.start()
        self.commands.start()
        self._due_at = None
        self.timer(DECIDER.tick, self._tick)

    def set_presence(self, payload: bytes) -> None:
        """Presence.update: the Will of the presence connection follows the status (the real one
        reconnects with the new Will; here the broker's copy is replaced in place)."""
        if payload == self.presence_will:
            return
        first = self.presence_will is None
        self.presence_will = payload
        if first:
            self.presence.start()
            return
        conn = self.world.broker.conns.get(self.presence.client_id)
        if conn is not None and conn.conn_id == self.presence.conn:
            conn.will = (self.world.topics.decider(POOL), payload)

    def on_event(self, event: DecisionEvent) -> None:
        self.world.events.append((self.loop.now, self.decider_id, event))

    # --- driving the service as its serve loop does ---------------------------------------------

    def _after(self) -> None:
        """Wake at the instant a producer's tip goes stale (``wake_in`` / ``on_due``)."""
        service = self.service
        assert service is not None
        due = service.core.next_due()
        if due is None or not service.core.ready(self.now()):
            return
        at = self.loop.now + max(0.0, due - self.host.wall())
        if self._due_at is not None and self._due_at <= at and self._due_at >= self.loop.now:
            return
        self._due_at = at
        self.timer(at - self.loop.now, self._on_due)

    def _on_due(self) -> None:
        self._due_at = None
        assert self.service is not None
        self.service.publish(self.service.core.due(self.now()))
        self._after()

    def _tick(self) -> None:
        service = self.service
        assert service is not None
        now = self.now()
        if not service.core.read_done:
            service._watch_read(None, now)
        service.publish(service.core.tick(now))
        self._after()
        self.timer(DECIDER.tick, self._tick)

    def _handle(self, item: Incoming | LinkEvent) -> None:
        service = self.service
        assert service is not None
        now = self.now()
        if isinstance(item, LinkEvent):
            actions = service._link_event(item, now)
        else:
            if not service.core.read_done:
                service._watch_read(item, now)
            actions = service.dispatch(item, now)
        service.publish(actions)
        self._after()

    def _ours(self, client: Client) -> bool:
        return client is self.work or client is self.commands

    def on_connected(self, client: Client, conn_id: str) -> None:
        if self._ours(client):
            self._handle(LinkEvent("connected", "ok", self.host.mono(), link=client.client_id, conn=conn_id))

    def on_disconnected(self, client: Client, why: str) -> None:
        if self._ours(client):
            self._handle(LinkEvent("disconnected", why, self.host.mono(), link=client.client_id))

    def on_subscribed(self, client: Client) -> None:
        if client is self.work:
            self._handle(LinkEvent("subscribed", "ok", self.host.mono(), link=client.client_id))

    def on_message(self, client: Client, topic: str, payload: bytes, retain: bool) -> None:
        if client is self.work:
            self._handle(Incoming(topic, payload, retain, self.host.wall(), self.host.mono()))


# --- the world ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    seed: int
    ok: bool
    violation: Violation | None
    sim_seconds: float
    events: int
    excluded: str | None = None  # why L was not judged (the protocol waits for an operator)
    notes: list[str] = field(default_factory=list)


class World:
    def __init__(self, seed: int, *, nodes: int = 3, deciders: int = 1) -> None:
        self.seed = seed
        self.loop = Loop(seed * 7919 + 17)
        self.loop.after_event = self._after_event
        self._changed = True
        self.topics = Topics(PREFIX)
        self.broker = Broker(self.loop)
        self.links: dict[str, Link] = {}
        self.host_links: dict[str, list[Link]] = {}
        self.hosts: dict[str, Host] = {}
        names = [f"bp{i + 1}" for i in range(nodes)]
        self.spec = PoolSpec(
            id=POOL,
            nodes=[{"name": n, "priority": 100 - 10 * i} for i, n in enumerate(names)],  # type: ignore[misc]
            initial_producer=names[0],
        )
        rng = self.loop.rng
        self.nodes: dict[str, Node] = {}
        self.actuators: dict[str, Actuator] = {}
        self.publishers: dict[str, Publisher] = {}
        for i, n in enumerate(names):
            host = self.host(n, boot0=1000.0 * (i + 1) + rng.random() * 100, wall_skew=rng.uniform(-1, 1))
            node = Node(self, n, 100 - 10 * i, host)
            self.nodes[n] = node
            self.actuators[n] = Actuator(self, node)
            self.publishers[n] = Publisher(self, node)
        self.deciders: list[DeciderProc] = []
        for d in range(deciders):
            host = self.host(f"dhost{d + 1}", boot0=500.0 + rng.random() * 100, wall_skew=rng.uniform(-1, 1))
            self.deciders.append(DeciderProc(self, host, f"dec{d + 1}"))
        self.events: list[tuple[float, str, DecisionEvent]] = []
        self.commands: list[tuple[float, str, Any]] = []
        self.trace: list[str] = []
        self.violation: Violation | None = None

    def host(self, name: str, **kwargs: Any) -> Host:
        host = Host(self.loop, name, **kwargs)
        host.on_change = self.changed
        self.hosts[name] = host
        self.host_links[name] = []
        return host

    def link(self, name: str, host: Host) -> Link:
        link = Link(self.loop, name, latency=0.002 + self.loop.rng.random() * 0.02)
        self.links[name] = link
        self.host_links[host.name].append(link)
        return link

    # --- properties -----------------------------------------------------------------------------

    def producing(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.producing]

    def changed(self) -> None:
        """Something that decides who forges changed (a role applied, a host, a node): check S."""
        self._changed = True
        self.check_safety()

    def _after_event(self) -> None:
        if self._changed:
            self.check_safety()

    def check_safety(self) -> None:
        self._changed = False
        if self.violation is not None:
            return
        forging = [n.name for n in self.nodes.values() if n.producing]
        if len(forging) > 1:
            self.violation = Violation("S", self.loop.now, f"{' and '.join(forging)} forge at once")
            raise self.violation

    def decider_view_producer(self) -> str | None:
        for d in self.deciders:
            if d.alive and d.service is not None:
                view = d.service.core.view(POOL)
                if view.producer is not None:
                    return view.producer
        return None

    def the_producer(self) -> str:
        """Resolves a fault's target ``producer`` when it fires."""
        forging = [n.name for n in self.nodes.values() if n.forging]
        if forging:
            return forging[0]
        return self.decider_view_producer() or next(iter(self.nodes))

    # --- running --------------------------------------------------------------------------------

    def start(self) -> None:
        for i, name in enumerate(self.nodes):
            self.loop.at(0.1 * i, self.publishers[name].start)
            self.loop.at(0.1 * i + 0.05, self.actuators[name].start)
        for d in self.deciders:
            self.loop.at(0.5, d.start)

    def heal(self) -> None:
        """Every fault ends: links up, hosts resumed, processes running, nodes alive, broker up."""
        for link in self.links.values():
            link.mode, link.extra_delay = "up", 0.0
        self.broker.dup_rate = 0.0
        if not self.broker.up:
            self.broker.restart()
        for host in self.hosts.values():
            host.resume()
        for node in self.nodes.values():
            node.alive, node.stalled = True, False
        for proc in [*self.publishers.values(), *self.actuators.values(), *self.deciders]:
            if proc.alive:
                proc.unpause()
            else:
                proc.start()

    def frozen_alerted(self) -> str | None:
        """The pool waits for an operator (flap budget spent), and the decider said so."""
        for d in self.deciders:
            if d.alive and d.service is not None:
                view = d.service.core.view(POOL)
                if view.frozen and any(e.kind == "frozen" for _, _, e in self.events):
                    return "frozen by the flap budget (alert raised)"
        return None


def _with_inline_within(fn: Callable[[], Outcome]) -> Outcome:
    original = controller_module.within
    controller_module.within = _inline_within  # type: ignore[assignment]
    try:
        return fn()
    finally:
        controller_module.within = original  # type: ignore[assignment]
