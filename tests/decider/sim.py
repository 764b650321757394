"""A fake pool for the decider's core: a clock, publishers, actuators and a retained store.

No broker and no threads. The actuators follow the role protocol exactly (epoch rule,
self-fencing after fence_after without broker contact, Last Will on disconnect), so
tests can ask both "what did the decider command?" and "was any instant with two
producers on the nodes themselves?".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bpfailover.decider.actions import Action, PublishDryRun, PublishEvent, PublishRole, PublishStatus
from bpfailover.decider.core import Decider
from bpfailover.decider.model import Now
from bpfailover.protocol.wire import (
    ControlRequest,
    DeciderStatus,
    DecisionEvent,
    NodeState,
    RoleCommand,
    TipReport,
)
from bpfailover.settings import DeciderSettings, PoolSpec

POOL = "pool1"
KEEPALIVE = 5.0
WALL0 = 1_700_000_000.0
DEFAULTS: dict[str, Any] = {
    "stale_after": 60.0,
    "tick": 1.0,
    "rise": 2,
    "min_switch_interval": 120.0,
    "max_failovers": 3,
    "flap_window": 3600.0,
    "startup_grace": 10.0,
    "max_clock_skew": 5.0,
    "apply_timeout": 20.0,
    "fence_margin": 2.0,
    "status_interval": 30.0,
}


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = WALL0

    def now(self) -> Now:
        return Now(self.mono, self.wall)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@dataclass
class Actuator:
    """A well-behaved actuator (or a broken one, on request)."""

    name: str
    fence_after: float = 15.0
    connected: bool = True
    role: str = "relay"  # applied on the node
    stored_role: str = "relay"
    epoch: int = 0
    fenced: bool = False
    error: str | None = None
    boot: str = "boot-1"
    auto: bool = True  # apply commands as soon as they arrive
    fail_promote: bool = False  # a promotion fails (restart command broken)
    dry_run: bool = False  # applies nothing; what it would apply stays pending
    report_pending: bool = False  # reports "applying <role>" before each apply, like the real one
    pending: str | None = None
    rejected: str | None = None
    stopped: bool = False  # a clean stop: offline, no fence promised
    conn: int = 0  # the connection: each one has its own Will
    lost_at: float | None = None
    inbox: deque[RoleCommand] = field(default_factory=deque)
    # env-swap's restart: each role change restarts the node for the Sim's ``restart_time``; an
    # actuator with ``start_timeout`` says so in its state (NodeState.starting_since) meanwhile.
    start_timeout: float | None = None
    starting_since: float | None = None
    # What it sees its node do (NodeState.forging): None unknown. ``forging_stuck`` makes the node
    # forge (True) or not (False) whatever its role, as a real node can disagree with its files.
    observes: bool = False
    forging_stuck: bool | None = None

    @property
    def forging(self) -> bool | None:
        if self.forging_stuck is not None:
            return self.forging_stuck
        return self.role == "producer" if self.observes else None

    def state(self, now: Now, *, online: bool = True) -> NodeState:
        return NodeState(
            pool=POOL,
            node=self.name,
            boot=self.boot,
            online=online,
            role=self.role,  # type: ignore[arg-type]
            epoch=self.epoch,
            fenced=self.fenced,
            fence_after=0.0 if self.stopped and not online else self.fence_after,
            error=self.error,
            dry_run=self.dry_run,
            pending=self.pending,  # type: ignore[arg-type]
            rejected=self.rejected,
            updated_at=now.wall,
            conn=f"c{self.conn}",
            stopped=self.stopped and not online,
            starting_since=self.starting_since if online else None,
            start_timeout=self.start_timeout if online and self.starting_since is not None else None,
            forging=self.forging if online and self.observes else None,
        )

    def apply(self, cmd: RoleCommand) -> None:
        """The actuator epoch rule (common.md, role protocol 3)."""
        if self.dry_run:
            if cmd.epoch >= self.epoch:  # accepted, and only reported: the node is not touched
                self.epoch = cmd.epoch
                self.pending = None if cmd.role == self.role else cmd.role
            return
        if cmd.epoch > self.epoch:
            if cmd.role == "producer" and self.fail_promote:
                self.error = "restart command failed"
                return
            self.epoch, self.stored_role, self.role = cmd.epoch, cmd.role, cmd.role
            self.fenced, self.error = False, None
        elif cmd.epoch == self.epoch and cmd.role == self.stored_role:
            if cmd.role == "producer" and self.role != "producer":
                # Fenced (or failed) at this epoch: a producer command is carried out once.
                self.rejected = f"reapply: producer at epoch {cmd.epoch} again"
        else:
            self.error = f"rejected {cmd.role} at epoch {cmd.epoch} (have {self.stored_role} at {self.epoch})"


@dataclass
class Publisher:
    """Reports a tip every ``interval``; ``chain`` is live, stalled (tip frozen) or dead (silent)."""

    name: str
    chain: str = "live"
    tip_time: float = WALL0
    seq: int = 0
    boot: str = "pub-1"
    skew: float = 0.0  # its clock minus the true clock
    lag: float = 0.0  # how far its tip trails the chain's (still fresh when below stale_after)
    down_until: float = -1.0  # mono: the node restarts (replays its ledger) and no tip can be read


class Sim:
    def __init__(
        self,
        nodes: dict[str, int] | None = None,
        *,
        initial: str | None = "bp1",
        pool_dry_run: bool | None = None,
        fence_after: float = 15.0,
        interval: float = 10.0,
        restart_time: float = 0.0,
        **overrides: Any,
    ) -> None:
        self.nodes = nodes if nodes is not None else {"bp1": 100, "bp2": 90}
        self.settings = DeciderSettings(**{**DEFAULTS, **overrides})
        self.spec = PoolSpec(
            id=POOL,
            nodes=[{"name": n, "priority": p} for n, p in self.nodes.items()],  # type: ignore[misc]
            initial_producer=initial,
            dry_run=pool_dry_run,
        )
        self.clock = Clock()
        self.interval = interval
        self.restart_time = restart_time  # how long a node is down after each role change
        self.actuators = {n: Actuator(n, fence_after=fence_after) for n in self.nodes}
        self.publishers = {n: Publisher(n) for n in self.nodes}
        self.retained: dict[tuple[str, str], Any] = {}
        self.decider_up = True  # its link to the broker
        self.echo = True  # the broker delivers the decider's own role commands back to it
        self.lose_commands = False  # the decider's role commands never reach the broker
        self.roles: list[tuple[float, RoleCommand]] = []  # (mono, command) published to role topics
        self.held: list[RoleCommand] = []  # those the broker received (not lost)
        self.dryruns: list[RoleCommand] = []
        self.events: list[DecisionEvent] = []
        self.statuses: list[DeciderStatus] = []
        self.overlaps: list[tuple[float, list[str]]] = []
        self.on_promote: Callable[[RoleCommand], None] | None = None
        # What the current decider was told: node -> (last state, mono time first seen offline)
        self.seen: dict[str, tuple[NodeState, float | None]] = {}
        self._queue: deque[Callable[[], list[Action]]] = deque()
        self._outbox: deque[Action] = deque()
        self._publishing = False
        self.decider = self._new_decider()
        self._next_tips = self.clock.mono

    # --- plumbing ---------------------------------------------------------------------------

    def _new_decider(self) -> Decider:
        return Decider(self.settings, [self.spec], "dec-1", keepalive=KEEPALIVE, now=self.clock.now())

    @property
    def now(self) -> Now:
        return self.clock.now()

    def _deliver(self, fn: Callable[[], list[Action]]) -> None:
        if self.decider_up:
            self._queue.append(fn)

    def _drain(self) -> None:
        while self._queue:
            self._execute(self._queue.popleft()())

    def _execute(self, actions: Iterable[Action]) -> None:
        """Publish in order, as the service does: actions that come of publishing these (an
        actuator applies, the decider answers) are published after all of these, not between."""
        self._outbox.extend(actions)
        if self._publishing:
            return
        self._publishing = True
        try:
            while self._outbox:
                self._publish(self._outbox.popleft())
        finally:
            self._publishing = False
        self._check_overlap()

    def _publish(self, action: Action) -> None:
        if isinstance(action, PublishRole):
            cmd = action.command
            if cmd.role == "producer" and self.on_promote is not None:
                self.on_promote(cmd)
            self.roles.append((self.clock.mono, cmd))
            if self.lose_commands:
                return
            self.held.append(cmd)
            self.retained[("role", cmd.node)] = cmd
            if self.echo:
                self._deliver(lambda c=cmd: self.decider.on_role(POOL, c, self.now, retained=False))
            act = self.actuators[cmd.node]
            if act.connected:
                act.inbox.append(cmd)
                if act.auto:
                    self.process(cmd.node)
        elif isinstance(action, PublishDryRun):
            self.dryruns.append(action.command)
            self.retained[("dryrun", action.node)] = action.command
        elif isinstance(action, PublishStatus):
            self.statuses.append(action.status)
            self.retained[("decider", "")] = action.status
        elif isinstance(action, PublishEvent):
            self.events.append(action.event)
        self._check_overlap()

    def _check_overlap(self) -> None:
        acts = self.actuators.values()
        producing = [a.name for a in acts if a.forging or (a.role == "producer" and a.forging is None)]
        if len(producing) > 1:
            self.overlaps.append((self.clock.mono, producing))

    def _state_to_decider(self, state: NodeState) -> list[Action]:
        before = self.seen.get(state.node)
        offline_since = None
        if not state.online:
            offline_since = before[1] if before is not None and before[1] is not None else self.clock.mono
        self.seen[state.node] = (state, offline_since)
        return self.decider.on_state(POOL, state, self.now)

    def _report(self, node: str, *, online: bool = True) -> None:
        state = self.actuators[node].state(self.now, online=online)
        self.retained[("state", node)] = state
        self._deliver(lambda: self._state_to_decider(state))

    def publish_state(self, node: str, *, online: bool = True) -> None:
        self._check_overlap()
        self._report(node, online=online)
        self._drain()

    # --- the world ----------------------------------------------------------------------------

    def start(self, producer: str | None = None, epoch: int = 0) -> None:
        """Actuators report (``producer`` already producing at ``epoch``), the decider connects."""
        for name, act in self.actuators.items():
            if producer is not None:
                act.epoch = epoch
                act.role = act.stored_role = "producer" if name == producer else "relay"
            self.publish_state(name)
        self.decider.on_link(True, self.now)
        self.send_tips()

    def connect_decider(self, *, fresh: bool = False) -> None:
        """The decider's link comes (back) up: it gets every retained message."""
        self.decider_up = True
        if fresh:  # a new decider process knows nothing yet
            self.seen = {}
        else:  # offline nodes are timed again from now: they may have come and gone unseen
            self.seen = {n: (s, None if s.online else self.clock.mono) for n, (s, _) in self.seen.items()}
        self._execute(self.decider.on_link(True, self.now))
        for (kind, _node), msg in list(self.retained.items()):
            if kind == "tip":
                self._deliver(
                    lambda m=msg: self.decider.on_tip(
                        POOL, m, self.now, received_at=self.now.wall, retained=True
                    )
                )
            elif kind == "state":
                self._deliver(lambda m=msg: self._state_to_decider(m))
            elif kind == "role":
                self._deliver(lambda m=msg: self.decider.on_role(POOL, m, self.now, retained=True))
            elif kind == "decider":
                self._deliver(lambda m=msg: self.decider.on_status(POOL, m, self.now, retained=True))
        self._drain()

    def drop_decider(self) -> None:
        self.decider_up = False
        self._execute(self.decider.on_link(False, self.now))

    def restart_decider(self, *, lose_status: bool = False) -> None:
        """A crash and restart: a new core, fed what the broker retained."""
        if lose_status:
            self.retained.pop(("decider", ""), None)
        self.decider = self._new_decider()
        self.connect_decider(fresh=True)

    def lose_retained_roles(self) -> None:
        for key in [k for k in self.retained if k[0] == "role"]:
            del self.retained[key]

    def tip(self, node: str) -> None:
        pub = self.publishers[node]
        if pub.chain == "dead" or self.now.mono < pub.down_until:
            return
        if pub.chain == "live":
            pub.tip_time = self.now.wall - 1.0 - pub.lag
        pub.seq += 1
        report = TipReport(
            pool=POOL,
            node=node,
            boot=pub.boot,
            seq=pub.seq,
            sent_at=self.now.wall + pub.skew,
            ok=True,
            slot=int(pub.tip_time - WALL0) + 1000,
            tip_time=pub.tip_time,
        )
        self.retained[("tip", node)] = report
        self._deliver(lambda: self.decider.on_tip(POOL, report, self.now, received_at=self.now.wall))
        self._drain()

    def send_tips(self) -> None:
        for name in self.publishers:
            self.tip(name)

    def process(self, node: str) -> None:
        """The actuator applies what it received and reports."""
        act = self.actuators[node]
        if not act.connected:
            return
        while act.inbox:
            cmd = act.inbox.popleft()
            if act.report_pending and not act.dry_run and cmd.epoch > act.epoch:
                act.pending = cmd.role
                self._report(node)  # delivered in order, before the outcome (not drained: it is busy)
                act.pending = None
            before = act.role
            act.apply(cmd)
            if act.role != before:
                self._restart(node)
        self._check_overlap()
        self.publish_state(node)

    def _restart(self, node: str) -> None:
        """The role changed on the node: with ``restart_time``, it restarts and is silent meanwhile."""
        if self.restart_time <= 0:
            return
        self.publishers[node].down_until = self.clock.mono + self.restart_time
        act = self.actuators[node]
        if act.start_timeout is not None:
            act.starting_since = self.now.wall

    def cut(self, node: str, *, will: bool = True) -> None:
        """The actuator loses the broker; the broker publishes its Will (now, or later via ``will``)."""
        act = self.actuators[node]
        act.connected = False
        act.lost_at = self.clock.mono
        act.inbox.clear()
        if will:
            self.publish_will(node)

    def publish_will(self, node: str) -> None:
        self.publish_state(node, online=False)

    def stop_cleanly(self, node: str) -> None:
        """SIGTERM: the actuator says it stops and promises no fence; its node runs on as it is."""
        act = self.actuators[node]
        act.stopped = True
        self.publish_state(node, online=False)
        act.connected = False
        act.inbox.clear()

    def reconnect(self, node: str) -> None:
        act = self.actuators[node]
        act.connected = True
        act.conn += 1
        act.stopped = False
        act.lost_at = None
        self.publish_state(node)
        cmd = self.retained.get(("role", node))
        if cmd is not None:
            act.inbox.append(cmd)
            if act.auto:
                self.process(node)

    def _fence(self) -> None:
        for act in self.actuators.values():
            if (
                not act.connected
                and not act.stopped
                and act.role == "producer"
                and act.fence_after > 0
                and act.lost_at is not None
                and self.clock.mono - act.lost_at >= act.fence_after
            ):
                act.role, act.fenced = "relay", True
                self._restart(act.name)

    def tick(self) -> None:
        self._fence()
        if self.decider_up:
            self._execute(self.decider.tick(self.now))
            self._drain()

    def run(self, seconds: float, step: float = 1.0, until: Callable[[], bool] | None = None) -> bool:
        """Advance in steps: actuators fence, publishers report every interval, the decider ticks."""
        end = self.clock.mono + seconds
        while self.clock.mono < end - 1e-9:
            self.clock.advance(step)
            if self.clock.mono >= self._next_tips:
                self._next_tips = self.clock.mono + self.interval
                self.send_tips()
            self.tick()
            if until is not None and until():
                return True
        return False

    def control(self, action: str, request_id: str = "r1", **fields: Any) -> DecisionEvent:
        request = ControlRequest(request_id=request_id, action=action, **fields)  # type: ignore[arg-type]
        self._execute(self.decider.on_control(POOL, request, self.now))
        self._drain()
        answers = [e for e in self.events if e.kind == "control" and e.request_id == request_id]
        return answers[-1]

    # --- what happened ------------------------------------------------------------------------

    def producer_commands(self) -> list[RoleCommand]:
        return [c for _, c in self.roles if c.role == "producer"]

    def producer(self) -> str | None:
        """The node the decider last commanded producer."""
        cmds = self.producer_commands()
        return cmds[-1].node if cmds else None

    def promoted_at(self, node: str, after: float = 0.0) -> float | None:
        for at, c in self.roles:
            if c.role == "producer" and c.node == node and at >= after:
                return at
        return None

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def bootstrapped(self) -> None:
        """Start a pool and let bp1 (or the initial producer) be bootstrapped."""
        self.start()
        assert self.run(60, until=lambda: self.decider.view(POOL).producer is not None), "no bootstrap"
        self.run(2)
