"""The actuator's sans-I/O core: facts in, NodeState reports out, and the role applied.

Everything the actuator decides happens here, driven by the shell (``bpfailover.actuator.service``)
or by the whole-system simulation (``tests/sim``) through the same few entry points:

    core.start()                          stored state, interrupted applies, the fence check
    core.on_connected(conn, keepalive)    a connection is up: report, with its id
    core.on_disconnected()
    core.on_contact(sent_at)              the broker acknowledged a report sent at ``sent_at``
    core.on_command(topic, payload)       a role command (checked by ``policy``)
    core.tick()                           the fence, the periodic report, demotion retries
    core.stop() / core.stop_unreported()  a clean stop, and what to do when it cannot be said

Reports leave through ``emit``; the clock (``clock``, CLOCK_BOOTTIME in the service) and
the wall clock (timestamps) are injected. The role itself is changed by the
``RoleController`` and its method: the only I/O the core starts, and bounded in time.

**Contact** — what resets the fence clock — is the broker's acknowledgement of this
actuator's own report, timed from when the report was sent: something the decider can
see too (the report reaches it), unlike a CONNACK or a PINGRESP. A link that connects
but loses every publish therefore fences on time, while the decider restarts its wait at
each connection's Last Will (each names its connection, ``NodeState.conn``). Reports are
refreshed every ``refresh_every`` seconds, so a healthy link is in contact at least that
often, and a decider that missed the retained copy still learns the state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bpfailover.actuator.controller import RoleController
from bpfailover.actuator.fence import FenceTimer
from bpfailover.actuator.policy import CommandRejected, Expected, check_command
from bpfailover.protocol.fence import advertised_fence_after
from bpfailover.protocol.wire import NodeState, RoleCommand
from bpfailover.rejections import Rejections

log = logging.getLogger("bpfailover.actuator")

FENCE_RETRY_MIN = 10.0  # seconds between tries of a fence that failed
DEMOTION_RETRY = 60.0  # seconds between further tries of a demotion that failed completely
REFRESH_MIN = 0.5  # seconds: the shortest report period, whatever fence_after says
OBSERVE_EVERY = 2.0  # seconds between looks at the node's forging state
REASSERT_MIN = 10.0  # seconds: at least this between re-applies of a role the node does not run


@dataclass(frozen=True)
class PublishState:
    """Publish this NodeState, retained, on the current connection."""

    state: NodeState


Emit = Callable[[PublishState], None]


class Memory(Protocol):
    """Where the last contact survives a restart (``bpfailover.actuator.contact.ContactMemory``)."""

    def load(self, now_boot: float, now_wall: float) -> float | None: ...

    def remember(self, at_boot: float, at_wall: float) -> None: ...


class ActuatorCore:
    def __init__(
        self,
        *,
        controller: RoleController,
        expected: Expected,
        fence_after: float,
        keepalive: float,
        demotion_bound: float,
        method_name: str,
        boot: str,
        memory: Memory,
        clock: Callable[[], float],
        wall: Callable[[], float],
        emit: Emit,
        rejections: Rejections,
        supervisor_bound: float = 0.0,
        on_alive: Callable[[], None] = lambda: None,
        start_timeout: float = 0.0,
    ) -> None:
        """``supervisor_bound``: how much later than its own timer a hung actuator's fence may come
        (the systemd watchdog's restart, ``bpfailover.actuator.watchdog``); ``on_alive``: called right after
        every fence check, the only proof of life the watchdog may be fed with; ``start_timeout``:
        how long the node may take to come up after a restart for a role change (reported)."""
        self.controller = controller
        self.pool, self.node = controller.pool, controller.node
        self.expected = expected
        self.fence = FenceTimer(fence_after, keepalive, clock)
        self.demotion_bound = demotion_bound
        self.supervisor_bound = supervisor_bound
        self.dry_run = controller.dry_run
        self.method_name = method_name
        self.boot = boot
        self.memory = memory
        self.clock = clock
        self.wall = wall
        self.emit = emit
        self.rejections = rejections
        self.on_alive = on_alive
        self.conn: str | None = None  # the connection up now
        self.last_conn = ""  # the latest connection, up or not
        self.contact: float | None = None  # ``clock`` instant of the latest acknowledged report
        self._next_refresh = math.inf
        self._next_fence_try = -math.inf
        self._next_demotion_try = -math.inf
        self._next_look = -math.inf
        self._next_reassert = -math.inf
        self.start_timeout = start_timeout
        self._restart: tuple[float, float] | None = None  # (wall, clock) of the latest role restart
        controller.on_change = self.report
        controller.alive = on_alive
        controller.on_restart = self._restarted

    # --- what the actuator promises and reports ---------------------------------------------

    @property
    def keepalive(self) -> float:
        return self.fence.keepalive

    @property
    def fence_promise(self) -> float:
        """Last contact -> node demoted by its fence, at most (``bpfailover.actuator.fence``)."""
        return advertised_fence_after(
            self.fence.fence_after, self.fence.keepalive, self.demotion_bound + self.supervisor_bound
        )

    @property
    def advertised_fence_after(self) -> float:
        """NodeState.fence_after; 0 when no fence is promised (a dry-run actuator never fences)."""
        return 0.0 if self.dry_run else self.fence_promise

    @property
    def refresh_every(self) -> float:
        """Seconds between reports on a healthy link: within a keepalive, and a few per fence time."""
        period = self.fence.keepalive
        if self.fence.fence_after > 0:
            period = min(period, self.fence.fence_after / 4)
        return max(REFRESH_MIN, period)

    def node_state(self, *, online: bool, stopped: bool = False) -> NodeState:
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
            method=self.method_name,
            fence_after=0.0 if stopped else self.advertised_fence_after,
            pending=status.pending,
            error=status.error,
            rejected=status.rejected,
            updated_at=self.wall(),
            conn=self.last_conn or None,
            stopped=stopped,
            command=self._backing(),
            forging=self.controller.forging,
            **self._starting(online and not stopped),
        )

    def _restarted(self) -> None:
        if self.start_timeout > 0:
            self._restart = (self.wall(), self.clock())

    def _starting(self, online: bool) -> dict[str, float]:
        """NodeState's starting_since and start_timeout while a restart for a role change may last."""
        if self._restart is not None and self.clock() - self._restart[1] >= self.start_timeout:
            self._restart = None
        if self._restart is None or not online:
            return {}
        return {"starting_since": self._restart[0], "start_timeout": self.start_timeout}

    def will_state(self, conn: str) -> NodeState:
        """The Last Will of connection ``conn``: offline, no claim about the role, and the fence it
        promises. It fires whenever this process dies, the node running whatever it ran then."""
        return NodeState(
            pool=self.pool,
            node=self.node,
            boot=self.boot,
            online=False,
            role="unknown",
            epoch=self.controller.epoch,
            dry_run=self.dry_run,
            method=self.method_name,
            fence_after=self.advertised_fence_after,
            updated_at=self.wall(),
            conn=conn,
            command=self._backing(),
        )

    def _backing(self) -> RoleCommand | None:
        """The signed command behind the epoch we report (the one stored with it)."""
        stored = self.controller.stored
        return stored.command if stored is not None else None

    def report(self) -> None:
        """Report the state now, if a connection is up."""
        if self.conn is None:
            return
        self.emit(PublishState(self.node_state(online=True)))
        self._next_refresh = self.clock() + self.refresh_every

    # --- inputs -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the stored state, then place the last contact (it may be long ago), then fence."""
        self.controller.start()
        remembered = self.memory.load(self.clock(), self.wall())
        if remembered is not None:
            self.fence.started = remembered
            if remembered > -math.inf:
                self.contact = remembered
        self.check_fence()

    def on_connected(self, conn: str, keepalive: float) -> None:
        self.conn = self.last_conn = conn
        if keepalive > 0 and keepalive != self.fence.keepalive:
            log.warning(
                "%s/%s: the broker set the keepalive to %gs (configured %gs); the fence and the "
                "advertised fence_after follow it",
                self.pool,
                self.node,
                keepalive,
                self.fence.keepalive,
            )
            self.fence.keepalive = keepalive
        log.info("%s/%s: broker connected (connection %s); reporting state", self.pool, self.node, conn)
        self.report()

    def on_disconnected(self) -> None:
        self.conn = None

    def on_contact(self, sent_at: float | None) -> None:
        """The broker acknowledged a report handed over at ``sent_at`` (on ``clock``)."""
        if sent_at is None or (self.contact is not None and sent_at <= self.contact):
            return
        self.contact = sent_at
        if not self.dry_run:  # a dry-run actuator leaves no trace on the node
            self.memory.remember(sent_at, self.wall() - (self.clock() - sent_at))

    def on_command(self, topic: str, payload: bytes) -> None:
        """A message on the role topic: checked, then applied; anything refused is counted and said."""
        controller = self.controller
        try:
            verdict = check_command(
                topic,
                payload,
                self.expected,
                stored_epoch=controller.epoch,
                stored_role=controller.stored_role,
                applied=controller.applied,
            )
        except CommandRejected as exc:
            self.rejections.reject(exc.reason, exc.detail, topic=topic)
            controller.note_rejection(exc.reason, exc.detail)
            self.report()
            return
        if verdict.kind == "cleared":
            log.info("%s/%s: retained role command cleared; keeping the current role", self.pool, self.node)
            return
        try:
            controller.on_command(verdict, abort=self.fence_due)
        finally:
            self.report()

    def tick(self) -> None:
        """The fence first, then the periodic report, a demotion that failed, and the node's
        forging state (a node that does not run its role is put back in line)."""
        self.check_fence()
        if self.conn is not None and self.clock() >= self._next_refresh:
            self.report()
        self._retry_demotion()
        self._watch_forging()

    def _watch_forging(self) -> None:
        """Look at the node's forging state now and then; report a change; re-apply a role the
        node is seen not to run (a relay seen forging, a producer seen not forging)."""
        if self.clock() < self._next_look or not self.controller.method.observer.configured:
            return
        self._next_look = self.clock() + OBSERVE_EVERY
        before = self.controller.forging
        self.controller.method.observe()
        role = self.controller.out_of_line()
        if role is not None and self.clock() >= self._next_reassert:
            wait = max(REASSERT_MIN, self.controller.method.settings.apply_timeout)
            self._next_reassert = self.clock() + wait
            seen = self.controller.forging
            what = {True: "seen forging", False: "seen not forging", None: "never SIGHUPed while up"}[seen]
            self.controller.reassert(role, f"{role} applied, but the node is {what}", abort=self.fence_due)
            self.report()
        elif self.controller.forging != before:
            self.report()

    # --- fencing ----------------------------------------------------------------------------

    def fence_due(self) -> bool:
        """Also the abort check of a promotion, polled while it runs: a proof of life each time."""
        due = self.fence.due(connected=self.conn is not None, last_contact=self.contact)
        self.on_alive()
        return due

    def seconds_to_fence(self) -> float | None:
        """Until the fence would be due if nothing is heard; None when nothing can need fencing."""
        if not self.controller.might_forge() or self.clock() < self._next_fence_try:
            return None
        return self.fence.seconds_left(connected=self.conn is not None, last_contact=self.contact)

    def check_fence(self) -> None:
        if not self.controller.might_forge() or self.clock() < self._next_fence_try or not self.fence_due():
            self.on_alive()
            return
        silence = self.fence.silence(self.contact)
        done = self.controller.fence(
            f"no broker contact for {silence:.1f}s (fence_after {self.fence.fence_after:g}s)"
        )
        if not done and self.controller.might_forge():
            # Keep trying, but not in a tight loop of restarts.
            self._next_fence_try = self.clock() + max(self.fence.fence_after, FENCE_RETRY_MIN)
        self.report()
        self.on_alive()

    def _retry_demotion(self) -> None:
        """Keep trying a demotion that failed, retries and stop_command included."""
        if self.dry_run or not self.controller.needs_demotion():
            self._next_demotion_try = self.clock() + DEMOTION_RETRY
            return
        if self.clock() < self._next_demotion_try:
            return
        self._next_demotion_try = self.clock() + DEMOTION_RETRY
        self.controller.converge_relay("retrying a demotion that failed")
        self.report()

    # --- a clean stop -----------------------------------------------------------------------

    def stop(self, conn: str) -> NodeState:
        """The last report of a clean stop, sent on connection ``conn``: offline, no fence promised.

        Nothing stays behind to fence the node, so the decider must not count on it: it waits
        for an acknowledgement or an operator instead. The shell sends it on a last connection
        of its own whose Will is this same report: whether that connection's DISCONNECT
        arrives or not, what the broker keeps says "stopped". (The Will of the connection
        before, which does promise a fence, fires when that one is dropped, before this.)
        """
        self.last_conn = conn
        return self.node_state(online=False, stopped=True)

    def stop_unreported(self) -> None:
        """The clean-stop report was not acknowledged: the decider may still count on our fence,
        which will not happen once we exit, so demote the node now."""
        if self.controller.might_forge():
            self.controller.fence("stopping, and the broker did not acknowledge the clean-stop report")
