"""The split-brain checker: every node's applied role over time, from two sources.

1. **The env files on disk** (ground truth of what each node would run): a sampler
   thread reads every node's ``env_file`` every ``period`` seconds (20 ms by default)
   and classifies it as ``producer`` (content equals ``producer_env``), ``relay``
   (equals ``relay_env``) or ``unknown``. A node whose machine the scenario killed is
   ``down`` from that instant (``mark_down``): a dead machine forges nothing, whatever
   its env file says. An ``unknown`` file is not counted as producing, but reported.
2. **The NodeState timeline on the broker**, read by a test-admin subscriber on the
   broker's own port (not through the node proxies): a node counts as producing from
   the receipt of a NodeState ``online, role producer`` until the receipt of its next
   NodeState. An offline producer (its Last Will) is not counted there, because the
   broker cannot know whether it fenced; the env files cover that case.

A scenario fails if two nodes are producer at the same instant in either source.

The subscriber also records every role command, decider status and decision event
with its receipt time, so a scenario can report its role changes and synchronise on
what went over the wire. All times are ``time.monotonic()`` of the test process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
from pydantic import ValidationError

from bpfailover.protocol.topics import TopicError, Topics
from bpfailover.protocol.wire import DeciderStatus, DecisionEvent, NodeState, RoleCommand, TipReport
from tests.faults import clients

log = logging.getLogger("tests.faults.checker")

T = TypeVar("T")
SAMPLE_PERIOD = 0.02


@dataclass(frozen=True)
class NodeFiles:
    """Where one node's applied role can be read on disk."""

    name: str
    env_file: Path
    producer_env: bytes
    relay_env: bytes

    def role(self) -> str:
        try:
            data = self.env_file.read_bytes()
        except FileNotFoundError:
            return "missing"
        if data == self.producer_env:
            return "producer"
        if data == self.relay_env:
            return "relay"
        return "unknown"


@dataclass(frozen=True)
class RoleChange:
    at: float  # monotonic
    node: str
    role: str  # producer, relay, unknown, missing, down
    source: str  # "env" or "state"


@dataclass(frozen=True)
class Overlap:
    source: str
    start: float
    end: float | None  # None: still overlapping when the checker stopped
    nodes: tuple[str, ...]

    def duration(self, until: float) -> float:
        return (self.end if self.end is not None else until) - self.start


@dataclass(frozen=True)
class Seen:
    """One message seen on the broker by the checker's subscriber."""

    at: float  # monotonic
    kind: str
    node: str | None
    retained: bool
    message: Any  # the decoded model, or the raw bytes when it did not decode


@dataclass
class _Timeline:
    """Current role per node and the overlaps found so far, for one source."""

    source: str
    roles: dict[str, str] = field(default_factory=dict)
    changes: list[RoleChange] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    _open: tuple[float, tuple[str, ...]] | None = None

    def update(self, at: float, roles: dict[str, str]) -> None:
        for node, role in roles.items():
            if self.roles.get(node) != role:
                self.roles[node] = role
                self.changes.append(RoleChange(at, node, role, self.source))
        producing = tuple(sorted(n for n, r in self.roles.items() if r == "producer"))
        if len(producing) > 1:
            if self._open is None or self._open[1] != producing:
                self._close(at)
                self._open = (at, producing)
        else:
            self._close(at)

    def _close(self, at: float) -> None:
        if self._open is not None:
            self.overlaps.append(Overlap(self.source, self._open[0], at, self._open[1]))
            self._open = None

    def all_overlaps(self) -> list[Overlap]:
        found = list(self.overlaps)
        if self._open is not None:
            found.append(Overlap(self.source, self._open[0], None, self._open[1]))
        return found


class SplitBrainChecker:
    """Samples env files and follows the broker; see the module docstring."""

    def __init__(
        self,
        pool: str,
        nodes: Iterable[NodeFiles],
        *,
        host: str,
        port: int,
        credentials: tuple[str, str],
        ca_file: Path | None,
        prefix: str = "bpfailover",
        period: float = SAMPLE_PERIOD,
    ) -> None:
        self.pool = pool
        self.nodes = {n.name: n for n in nodes}
        self.period = period
        self.topics = Topics(prefix)
        self._host, self._port = host, port
        self._credentials = credentials
        self._ca_file = ca_file
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._down: set[str] = set()
        self.env = _Timeline("env")
        self.state = _Timeline("state")
        self.seen: list[Seen] = []
        self.stale_states: list[tuple[float, NodeState]] = []
        self._last_state: dict[str, NodeState] = {}
        self.samples = 0
        self.max_gap = 0.0  # the longest time between two env samples: the blind spot
        self.started = 0.0
        self.stopped: float | None = None
        self._thread: threading.Thread | None = None
        self._client: paho.Client | None = None
        self._subscribed = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self.started = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="split-brain-sampler", daemon=True)
        self._thread.start()
        self._client = self._connect()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"checker: no subscription to the broker within {timeout:g}s")

    def stop(self) -> None:
        clients.stop(self._stop, self._thread, self._client)
        self.stopped = time.monotonic()

    def mark_down(self, node: str) -> None:
        """The node's whole machine is dead from now on: its env file no longer counts."""
        with self._lock:
            self._down.add(node)
        self._sample()

    def mark_up(self, node: str) -> None:
        with self._lock:
            self._down.discard(node)
        self._sample()

    # --- env sampling ---------------------------------------------------------------------------

    def _sample(self) -> None:
        with self._lock:
            down = set(self._down)
            roles = {name: "down" if name in down else files.role() for name, files in self.nodes.items()}
            now = time.monotonic()
            self.env.update(now, roles)
            self.samples += 1

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.period):
            self._sample()
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    # --- the broker -----------------------------------------------------------------------------

    def _connect(self) -> paho.Client:
        client = clients.admin_client("checker", self._ca_file, self._credentials)
        pool_filter = f"{self.topics.prefix}/{self.pool}/#"

        def on_connect(c: paho.Client, _u: object, _f: object, reason: Any, _p: object = None) -> None:
            if not reason.is_failure:
                c.subscribe(pool_filter, qos=1)

        def on_subscribe(*_a: object) -> None:
            self._subscribed.set()

        def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
            try:
                self._on_message(msg.topic, bytes(msg.payload), bool(msg.retain))
            except Exception:  # never kill paho's thread
                log.exception("checker: cannot record %s", msg.topic)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        return clients.connect(client, self._host, self._port)

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        now = time.monotonic()
        try:
            parsed = self.topics.parse(topic)
        except TopicError:
            return
        models: dict[str, Any] = {
            "tip": TipReport,
            "state": NodeState,
            "role": RoleCommand,
            "decider": DeciderStatus,
            "events": DecisionEvent,
        }
        model = models.get(parsed.kind)
        message: Any = payload
        if model is not None and payload:
            with contextlib.suppress(ValidationError, ValueError):
                message = model.model_validate_json(payload)
                node = getattr(message, "node", None)
                if parsed.node is not None and node is not None and node != parsed.node:
                    message = payload  # an injected topic/payload mismatch: not a real report
        with self._lock:
            self.seen.append(Seen(now, parsed.kind, parsed.node, retained, message))
            if parsed.kind == "state" and isinstance(message, NodeState) and parsed.node in self.nodes:
                last = self._last_state.get(parsed.node)
                if (message.online and last is not None and last.boot == message.boot
                        and message.updated_at <= last.updated_at):
                    # An older (or the same) report of the same process delivered again (paho resends QoS-1
                    # publishes that were in flight when a connection died): not the current role.
                    # (A Last Will carries the time it was set, so offline ones are never "older".)
                    self.stale_states.append((now, message))
                    return
                if message.online:
                    self._last_state[parsed.node] = message
                producing = message.online and message.role == "producer"
                current = {n: r for n, r in self.state.roles.items()}
                current[parsed.node] = "producer" if producing else (
                    message.role if message.online else "offline"
                )
                self.state.update(now, current)

    # --- queries -------------------------------------------------------------------------------

    def overlaps(self) -> list[Overlap]:
        with self._lock:
            return self.env.all_overlaps() + self.state.all_overlaps()

    def env_role(self, node: str) -> str:
        with self._lock:
            return self.env.roles.get(node, "?")

    def env_changes(self, after: float = 0.0) -> list[RoleChange]:
        with self._lock:
            return [c for c in self.env.changes if c.at >= after]

    def state_changes(self, after: float = 0.0) -> list[RoleChange]:
        with self._lock:
            return [c for c in self.state.changes if c.at >= after]

    def producer_since(self, node: str, after: float) -> float | None:
        """First instant at or after ``after`` at which ``node``'s env file says producer."""
        with self._lock:
            for change in self.env.changes:
                if change.node == node and change.role == "producer" and change.at >= after:
                    return change.at
            if self.env.roles.get(node) == "producer":
                last = max((c.at for c in self.env.changes if c.node == node), default=self.started)
                if last <= after:
                    return after
        return None

    def messages(self, kind: str, node: str | None = None, after: float = 0.0,
                 model: type[T] | None = None, retained: bool | None = None) -> list[tuple[float, T]]:
        """Decoded messages of ``kind`` (``tip``, ``state``, ``role``, ``decider``, ``events``);
        ``retained``: only those the broker delivered as retained (True) or live (False)."""
        with self._lock:
            found = [s for s in self.seen if s.kind == kind and s.at >= after
                     and (retained is None or s.retained == retained)]
        return [
            (s.at, s.message)
            for s in found
            if (node is None or s.node == node) and (model is None or isinstance(s.message, model))
        ]

    def latest_state(self, node: str) -> NodeState | None:
        states = self.messages("state", node, model=NodeState)
        return states[-1][1] if states else None

    def role_commands(self, after: float = 0.0) -> list[tuple[float, RoleCommand]]:
        """Role commands seen live (not retained re-deliveries), injected forgeries excluded."""
        with self._lock:
            found = [s for s in self.seen if s.kind == "role" and s.at >= after and not s.retained]
        return [
            (s.at, s.message) for s in found
            if isinstance(s.message, RoleCommand)
            and not s.message.decider.startswith(("forged", "fault-harness"))
            and not s.message.dry_run
        ]

    def highest_epoch(self) -> int:
        return max((c.epoch for _, c in self.role_commands()), default=0)

    def wait(self, predicate: Callable[[], T], timeout: float, message: str) -> T:
        """Poll ``predicate`` every sample period until truthy; raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}")
            time.sleep(self.period)

    # --- reporting -----------------------------------------------------------------------------

    def report(self, since: float) -> dict[str, Any]:
        """Role changes after ``since`` (seconds relative to it), overlaps and sampling facts."""
        until = self.stopped or time.monotonic()
        return {
            "overlaps": [
                {"source": o.source, "start": round(o.start - since, 3),
                 "duration": round(o.duration(until), 3), "nodes": list(o.nodes)}
                for o in self.overlaps()
            ],
            "env_changes": [
                f"{c.at - since:+.2f}s {c.node} {c.role}" for c in self.env_changes() if c.at >= since - 0.001
            ],
            "state_changes": [
                f"{c.at - since:+.2f}s {c.node} {c.role}"
                for c in self.state_changes()
                if c.at >= since - 0.001
            ],
            "role_commands": [
                f"{at - since:+.2f}s {c.node} {c.role}@{c.epoch}"
                for at, c in self.role_commands()
                if at >= since - 0.001
            ],
            "stale_states_ignored": [
                f"{at - since:+.2f}s {m.node} online={m.online} {m.role}@{m.epoch}"
                for at, m in self.stale_states
                if at >= since - 0.001
            ],
            "samples": self.samples,
            "max_sample_gap": round(self.max_gap, 3),
        }


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
