"""A running pool for the hostile-input suite: the real broker, an in-process decider, two
test nodes and one real actuator subprocess, an admin observer, and a publisher per bundle user.

bp1 and bp3 are test nodes (``TestNode``): each publishes tips as its publisher's broker user
and, as a well-behaved actuator under its actuator's user, applies the signed role commands it
receives and reports its state. bp2 is a real ``bpfailover actuator`` subprocess (env-swap on
files in a temp folder, its own nodes/bp2.actuator.toml) with a tip feeder under bp2's
publisher user. ``World.fail_over`` stalls the producer's tip and waits for a
real failover: the proof, after each batch, that the pool is not switched off.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from bpfailover.decider.model import Now
from bpfailover.decider.service import DeciderService
from bpfailover.link import Incoming, MqttLink
from bpfailover.protocol.signing import SignatureError, load_verify_key, verify_command
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import NodeState, PayloadRejected, RoleCommand, TipReport, decode
from bpfailover.settings import BpfConfig, DeciderSettings, load_config
from tests.actuator.helpers import NodeFiles
from tests.actuator.test_service import ActuatorProcess, overrides
from tests.brokers import ADMIN_USER, BrokerHandle, wait_for
from tests.decider.test_service import Observer as DeciderTestObserver

FAST = {
    "stale_after": 1.5,
    "tick": 0.05,
    "rise": 2,
    "min_switch_interval": 0.0,
    "max_failovers": 1000,
    "flap_window": 3600.0,
    "startup_grace": 0.5,
    "apply_timeout": 3.0,
    "fence_margin": 0.5,
    "status_interval": 1.0,
    "max_clock_skew": 2.0,
}
TIP_EVERY = 0.1
REPORT_EVERY = 0.5  # the real actuator's refresh here: fence_after / 4
BOOT = "node-boot"  # the nodes' own publisher boot id: hostile tips may reuse it


def now_pair() -> Now:
    return Now(time.monotonic(), time.time())


class Tips:
    """A publisher: a tip every TIP_EVERY s on the node's own connection; ``stall`` freezes it."""

    def __init__(self, link: MqttLink, topics: Topics, pool: str, name: str) -> None:
        self.link, self.topics, self.pool, self.name = link, topics, pool, name
        self.stalled_at: float | None = None
        self.boot = BOOT
        self._seq = 0
        self._next = 0.0

    def reboot(self) -> None:
        """A publisher restart: a new boot id, so hostile tips under the old one stop mattering."""
        self.boot, self._seq = f"{BOOT}-{uuid.uuid4().hex[:6]}", 0

    def due(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + TIP_EVERY
        now = time.time()
        self._seq += 1
        report = TipReport(
            pool=self.pool,
            node=self.name,
            boot=self.boot,
            seq=self._seq,
            sent_at=now,
            ok=True,
            tip_time=self.stalled_at if self.stalled_at is not None else now - 0.05,
        )
        self.link.publish(self.topics.tip(self.pool, self.name), report.to_json(), retain=True)


class TestNode:
    """A node's publisher and a well-behaved actuator in one (signed commands only, epoch rule).

    Junk on its role topic is ignored and counted, never fatal: it must survive what it is sent.
    """

    __test__ = False

    def __init__(self, broker: BrokerHandle, name: str, *, act: bool = True) -> None:
        self.name = name
        self.pool = broker.pool
        self.act = act
        self.topics = Topics(broker.prefix)
        self.key = load_verify_key(broker.bundle / "keys" / "command-signing.pub")
        self.role, self.epoch = "relay", 0
        self.command: RoleCommand | None = None
        self.refused = 0
        self.muted = False  # its actuator silenced (crashed, or kicked off by a session takeover)
        # As on a real node: the actuator's user reads the role and writes the state (only when
        # this node acts), the publisher's user writes the tip.
        self.link: MqttLink | None = None
        if act:
            self.link = MqttLink(
                broker.mqtt_settings(f"{name}-actuator", keepalive=5),
                f"test-{name}-{uuid.uuid4().hex[:8]}",
                subscriptions=[self.topics.role(self.pool, name)],
            )
        self.tip_link = MqttLink(
            broker.mqtt_settings(f"{name}-publisher", keepalive=5), f"test-{name}-tip-{uuid.uuid4().hex[:8]}"
        )
        self.tips = Tips(self.tip_link, self.topics, self.pool, name)
        self._stop = threading.Event()
        self._next_report = 0.0
        self.thread = threading.Thread(target=self._run, name=f"node-{name}", daemon=True)

    def start(self) -> TestNode:
        self.tip_link.start(attempts=1)
        if self.link is not None:
            self.link.start(attempts=1)
            self.report()
        self.thread.start()
        return self

    def report(self) -> None:
        if self.muted or self.link is None:
            return
        state = NodeState(
            pool=self.pool,
            node=self.name,
            boot="actuator",
            online=True,
            role=self.role,  # type: ignore[arg-type]
            epoch=self.epoch,
            fence_after=3.0,
            updated_at=time.time(),
            command=self.command,
        )
        self.link.publish(self.topics.state(self.pool, self.name), state.to_json(), retain=True)
        self._next_report = time.monotonic() + REPORT_EVERY

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tips.due()
            if self.act and time.monotonic() >= self._next_report:
                self.report()  # like the real actuator: a refresh within its fence time
            item = (self.link or self.tip_link).get(timeout=0.02)
            if not isinstance(item, Incoming) or not item.payload or not self.act:
                continue
            try:
                cmd = decode(RoleCommand, item.payload, pool=self.pool, node=self.name)
                verify_command(cmd, self.key)
            except (PayloadRejected, SignatureError):
                self.refused += 1
                continue
            if cmd.dry_run:
                self.refused += 1
            elif cmd.epoch > self.epoch:
                self.role, self.epoch, self.command = cmd.role, cmd.epoch, cmd
                self.report()
            elif cmd.epoch == self.epoch and cmd.role != self.role:
                self.refused += 1

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        if self.link is not None:
            self.link.stop()
        self.tip_link.stop()


class Observer(DeciderTestObserver):
    """The decider tests' observer, which also tells the decider's genuine role commands apart."""

    def genuine_roles(self, key: Any, since: int = 0) -> list[RoleCommand]:
        """Role commands signed by the decider's key, from index ``since`` of ``seen``."""
        found = []
        for topic, payload in self.seen[since:]:
            if self.topics.parse(topic).kind != "role":
                continue
            try:
                command = RoleCommand.model_validate_json(payload)
                verify_command(command, key)
            except (ValueError, SignatureError):
                continue
            found.append(command)
        return found


class Publisher:
    """A bare paho client logged in as one bundle user: publishes anything, QoS 1, and records
    which publishes the broker refused (MQTT 5 PUBACK reason: its ACL)."""

    def __init__(self, broker: BrokerHandle, user: str, password: str) -> None:
        self.user = user
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"hostile-{user}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.tls_set(ca_certs=str(broker.ca_file))
        self.client.username_pw_set(user, password)
        self.refused: list[str] = []
        self.refused_mids: set[int] = set()
        self.acked = 0
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"{user} cannot connect")

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._cond:
            self.acked += 1
            if reason is not None and getattr(reason, "is_failure", False):
                self.refused.append(str(reason))
                self.refused_mids.add(mid)
            self._cond.notify_all()

    def send(self, messages: Iterable[tuple[str, bytes, bool]], timeout: float = 10.0) -> list[bool]:
        """Publish every message; once the broker acknowledged them all, whether it took each
        (False: refused by its ACL)."""
        with self._cond:
            target = self.acked
        mids = []
        for topic, payload, retain in messages:
            mids.append(self.client.publish(topic, payload, qos=1, retain=retain).mid)
            target += 1
        with self._cond:
            if not self._cond.wait_for(lambda: self.acked >= target, timeout):
                raise TimeoutError(f"{self.user}: publishes not acknowledged within {timeout:g}s")
            return [mid not in self.refused_mids for mid in mids]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bundle_users(broker: BrokerHandle) -> dict[str, tuple[str, str]]:
    """Every broker user the bundle's ACL names that the handle can log in as: user -> creds.

    Found from the ACL, so users a later bundle adds (a publisher and an actuator user per
    node, a monitor) are covered as soon as ``BrokerHandle.credentials`` knows them.
    """
    acl = (broker.bundle / "broker" / "acl").read_text()
    users: dict[str, tuple[str, str]] = {}
    for name in re.findall(r"^user (\S+)$", acl, flags=re.M):
        if name == ADMIN_USER:
            continue
        try:
            users[name] = broker.credentials(name)
        except (KeyError, FileNotFoundError):
            continue
    return users


def writable(broker: BrokerHandle, user: str) -> list[str]:
    """The topic filters the bundle's ACL lets ``user`` write."""
    acl = (broker.bundle / "broker" / "acl").read_text()
    topics, current = [], None
    for line in acl.splitlines():
        if line.startswith("user "):
            current = line.split()[1]
        elif current == user and line.startswith("topic ") and line.split()[1] in ("write", "readwrite"):
            topics.append(line.split()[2])
    return topics


class World:
    """The running pool. ``mark()`` before a batch; ``check_quiet`` and ``fail_over`` after."""

    def __init__(self, broker: BrokerHandle, tmp: Path, files: NodeFiles) -> None:
        self.broker = broker
        self.pool = broker.pool
        self.topics = Topics(broker.prefix)
        self.key = load_verify_key(broker.bundle / "keys" / "command-signing.pub")
        self.files = files
        self.nodes: dict[str, TestNode] = {}
        self.sync_seen: list[str] = []
        self._syncs = 0
        self.publishers: dict[str, Publisher] = {}
        obs_link = MqttLink(
            broker.mqtt_settings(ADMIN_USER), f"hostile-observer-{uuid.uuid4().hex[:8]}",
            subscriptions=[f"{broker.prefix}/{broker.pool}/#"],
        )
        obs_link.start(attempts=1)
        self.observer = Observer(obs_link, self.topics, self.pool)
        self._obs_thread = threading.Thread(target=self.observer.run, daemon=True)
        self._obs_thread.start()
        self.nodes["bp1"] = TestNode(broker, "bp1").start()
        self.nodes["bp3"] = TestNode(broker, "bp3").start()
        # bp2: the real actuator, and its tips from a test publisher under bp2's publisher user.
        self.actuator = ActuatorProcess(
            broker.node_config("bp2", "actuator"), overrides(files), tmp / "actuator-bp2.log"
        )
        self.nodes["bp2"] = TestNode(broker, "bp2", act=False).start()
        wait_for(self._actuator_online, 15, "the real bp2 actuator to report online")
        self._start_decider()
        wait_for(lambda: self.settled() and self.view.producer == "bp1", 15, "bp1 bootstrapped")

    # --- set-up -----------------------------------------------------------------------------

    def decider_config(self) -> BpfConfig:
        config = load_config(self.broker.config_path("decider"))
        settings = DeciderSettings(**{**config.decider.model_dump(), **FAST})
        return config.model_copy(update={"decider": settings})

    def _start_decider(self) -> None:
        self.service = DeciderService(self.decider_config())
        self._wrap_rejections()
        self.stop = threading.Event()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._serve, name="decider", daemon=True)
        self.thread.start()

    def restart_decider(self) -> None:
        """Stop the decider cleanly and start a new one: it recovers from what the broker retains."""
        self.stop.set()
        self.thread.join(timeout=10)
        assert self.code == 0, f"the decider exited with {self.code}"
        self._start_decider()

    def _serve(self) -> None:
        self.code = self.service.serve(self.stop)

    def _wrap_rejections(self) -> None:
        """Record the topic of every rejection, so that a sentinel marks the end of a batch."""
        rejections = self.service.rejections
        original = rejections.reject

        def reject(reason: str, detail: str, *, topic: str = "") -> None:
            self.sync_seen.append(topic)
            original(reason, detail, topic=topic)

        rejections.reject = reject  # type: ignore[method-assign]

    def _actuator_online(self) -> bool:
        topic = self.topics.state(self.pool, "bp2")
        raw = self.broker.retained(topic).get(topic)
        return bool(raw) and NodeState.model_validate_json(raw).online

    def publisher(self, user: str) -> Publisher:
        if user not in self.publishers:
            if user == ADMIN_USER:
                username, password = self.broker.credentials(ADMIN_USER)
            else:
                username, password = bundle_users(self.broker)[user]
            self.publishers[user] = Publisher(self.broker, username, password)
        return self.publishers[user]

    # --- what the pool looks like -------------------------------------------------------------

    @property
    def view(self) -> Any:
        return self.service.core.view(self.pool)

    def settled(self) -> bool:
        """A producer that applied its role at the decider's epoch, nothing in progress."""
        view = self.view
        if view.producer is None or view.transition is not None:
            return False
        return self.applied_role(view.producer) == ("producer", view.epoch)

    def applied_role(self, name: str) -> tuple[str, int]:
        if name == "bp2":
            state = self.view.nodes["bp2"].state
            return (state.role, state.epoch) if state is not None and state.online else ("?", -1)
        node = self.nodes[name]
        return node.role, node.epoch

    def alive(self) -> list[str]:
        """What died: the decider thread, the actuator process, a test node's thread."""
        dead = [] if self.thread.is_alive() else [f"decider (exit code {self.code})"]
        if not self.actuator.alive():
            dead.append(f"bp2 actuator (exit code {self.actuator.proc.returncode})\n{self.actuator.tail()}")
        dead += [f"test node {n}" for n, node in self.nodes.items() if not node.thread.is_alive()]
        return dead

    def env(self) -> tuple[bytes, list[str]]:
        """The real actuator's env file and the restarts it ran."""
        return self.files.env_file.read_bytes(), self.files.restart.calls()

    def sync(self) -> None:
        """Wait until the decider has handled everything published so far.

        The admin publishes junk to an unknown node's tip topic after the batch was acknowledged;
        the broker queued the batch to the decider before acknowledging it, so the decider's
        rejection of the sentinel comes after every message of the batch.
        """
        self._syncs += 1
        topic = self.topics.tip(self.pool, f"sync{self._syncs}")
        self.publisher(ADMIN_USER).send([(topic, b"sentinel", False)])
        wait_for(lambda: topic in self.sync_seen, 10, f"the decider to reach sentinel {topic}")

    # --- the proof that the pool is not switched off -----------------------------------------

    def fail_over(self, timeout: float = 15.0) -> tuple[str, str]:
        """Stall the producer's tip; a real failover to another node must follow. Returns (from, to)."""
        wait_for(self.settled, 10, f"a settled pool before the failover (view: {self.describe()})")
        old = self.view.producer
        epoch = self.view.epoch
        self.nodes[old].tips.stalled_at = time.time() - 0.05
        deadline = time.monotonic() + timeout
        try:
            while not (self.view.producer != old and self.view.epoch > epoch and self.settled()):
                if time.monotonic() >= deadline:
                    pytest.fail(f"no failover away from {old} within {timeout:g}s: {self.describe()}")
                time.sleep(0.02)
        finally:
            self.nodes[old].tips.stalled_at = None
        new = self.view.producer
        assert self.applied_role(new)[0] == "producer" and self.applied_role(old)[0] == "relay"
        if "bp2" in (old, new):  # the real actuator swapped its env file
            assert self.files.env_role() == ("producer" if new == "bp2" else "relay")
        # Let the old producer report fresh tips again: it is a standby for the next proof.
        wait_for(lambda: self.view.nodes[old].fresh_streak >= FAST["rise"], 5, f"{old} fresh again")
        return old, new

    def describe(self) -> str:
        view = self.view
        txn = view.transition
        nodes = {
            n: (v.state.role if v.state else None, v.state.epoch if v.state else None, v.fresh_streak,
                round(v.age(now_pair()), 1) if not math.isinf(v.age(now_pair())) else None)
            for n, v in view.nodes.items()
        }
        t = None if txn is None else (txn.kind, txn.to, txn.epoch, txn.phase)
        return (
            f"producer={view.producer} epoch={view.epoch} paused={view.paused} frozen={view.frozen} "
            f"maintenance={dict(view.maintenance)} transition={t} nodes={nodes}"
        )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for publisher in self.publishers.values():
            publisher.close()
        for node in self.nodes.values():
            node.close()
        if self.actuator.alive():
            self.actuator.terminate()
        self.observer._stop.set()
        self._obs_thread.join(timeout=2)
        self.observer.link.stop()


def dumps(value: Any) -> str:
    """JSON text; ``Raw`` values are written as they are (4,300-digit numbers, NaN, ...)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, allow_nan=True)


@dataclass(frozen=True)
class Raw:
    text: str
