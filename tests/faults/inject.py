"""Bad messages injected while a scenario runs: malformed, forged and replayed.

Published as the TEST-ONLY admin user (the only account the bundle's ACL lets write
every topic; in production a node may write only its own tip and state, and only
the decider may write role commands). Never retained, so nothing genuine on the
broker is overwritten; every subscriber still receives each one live.

Kinds (each names its target so a scenario can tell what it sent):

- ``malformed``: bytes that are not JSON, on tip, state, role, control topics;
- ``schema``: JSON of the wrong shape or with unknown fields;
- ``mismatch``: a valid message whose pool/node differs from its topic;
- ``oversized``: more than the 8 KiB payload limit;
- ``unsigned``: a producer RoleCommand for a standby at a high epoch, no signature;
- ``forged``: the same, signed with a key that is not the decider's;
- ``replayed``: a genuine, signed RoleCommand seen earlier on the wire, sent again
  (an older epoch by the time it arrives), and a genuine TipReport sent again
  (same boot and seq: a duplicate the decider must ignore).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho

from bpfailover.protocol.signing import generate_key, sign_command
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import RoleCommand, TipReport
from tests.faults import clients

KINDS = ("malformed", "schema", "mismatch", "oversized", "unsigned", "forged", "replayed")


@dataclass
class Injected:
    at: float
    kind: str
    topic: str


@dataclass
class Injector:
    """A thread publishing one bad message every ``period`` seconds until stopped."""

    pool: str
    nodes: list[str]
    host: str
    port: int
    credentials: tuple[str, str]
    ca_file: Path | None
    prefix: str = "bpfailover"
    period: float = 0.25
    kinds: tuple[str, ...] = KINDS
    # Which nodes' role topics may receive forged/unsigned producer commands. Empty: none.
    role_targets: tuple[str, ...] = ()
    genuine: Callable[[], tuple[list[RoleCommand], list[TipReport]]] | None = None
    replay_roles: bool = True  # False: replay genuine tips only, no role command
    seed: int = 7
    sent: list[Injected] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = Topics(self.prefix)
        self._rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: paho.Client | None = None
        self._forger = generate_key()

    def start(self) -> None:
        self._client = clients.connect(
            clients.admin_client("injector", self.ca_file, self.credentials), self.host, self.port
        )
        self._thread = threading.Thread(target=self._run, name="fault-injector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        clients.stop(self._stop, self._thread, self._client)

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for item in self.sent:
            found[item.kind] = found.get(item.kind, 0) + 1
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            kind = self._rng.choice(self.kinds)
            with contextlib.suppress(Exception):  # an injector hiccup must not fail the scenario
                for topic, payload in self.build(kind):
                    self.publish(kind, topic, payload)

    def publish(self, kind: str, topic: str, payload: bytes) -> None:
        if self._client is None or not self._client.is_connected():
            return
        self._client.publish(topic, payload, qos=1, retain=False)
        self.sent.append(Injected(time.monotonic(), kind, topic))

    # --- the messages ----------------------------------------------------------------------------

    def _any_topic(self, node: str) -> str:
        t = self.topics
        options = [t.tip(self.pool, node), t.state(self.pool, node), t.control(self.pool)]
        if self.role_targets:
            options.append(t.role(self.pool, self._rng.choice(self.role_targets)))
        return self._rng.choice(options)

    def _role_command(self, node: str, *, key: object | None, epoch: int) -> bytes:
        cmd = RoleCommand(
            pool=self.pool, node=node, role="producer", epoch=epoch, issued_at=time.time(),
            decider="forged-by-fault-injector", reason="injected",
        )
        if key is not None:
            cmd = sign_command(cmd, key)  # type: ignore[arg-type]
        return cmd.to_json()

    def build(self, kind: str) -> list[tuple[str, bytes]]:
        node = self._rng.choice(self.nodes)
        t = self.topics
        if kind == "malformed":
            return [(self._any_topic(node), self._rng.choice([b"{not json", b"\x00\xff\xfe", b"[1, 2"]))]
        if kind == "schema":
            body = self._rng.choice([
                {"v": 1, "pool": self.pool, "node": node},
                {"v": 2, "pool": self.pool, "node": node, "role": "producer", "epoch": 1},
                {"v": 1, "pool": self.pool, "node": node, "role": "king", "epoch": -1, "extra": True},
            ])
            return [(self._any_topic(node), json.dumps(body).encode())]
        if kind == "mismatch":
            other = next((n for n in self.nodes if n != node), node + "x")
            tip = TipReport(
                pool=self.pool, node=other, boot="injected", seq=1, sent_at=time.time(), ok=True,
                slot=1, block=1, tip_time=time.time(),
            )
            return [(t.tip(self.pool, node), tip.to_json())]
        if kind == "oversized":
            return [(self._any_topic(node), b'{"v": 1, "pad": "' + b"x" * 9000 + b'"}')]
        if kind in ("unsigned", "forged"):
            if not self.role_targets:
                return []
            target = self._rng.choice(self.role_targets)
            key = self._forger if kind == "forged" else None
            return [(t.role(self.pool, target), self._role_command(target, key=key, epoch=10_000))]
        if kind == "replayed":
            if self.genuine is None:
                return []
            commands, tips = self.genuine()
            out: list[tuple[str, bytes]] = []
            if commands and self.replay_roles:
                old = self._rng.choice(commands)
                out.append((t.role(self.pool, old.node), old.to_json()))
            if tips:
                tip = self._rng.choice(tips)
                out.append((t.tip(self.pool, tip.node), tip.to_json()))
            return out
        raise ValueError(f"unknown injection kind {kind!r}")
