"""The decider service against the real broker (TLS, passwords, ACLs), with small timings.

The test plays the nodes: each fake node connects as its own broker user, publishes
tips and, as a well-behaved actuator, applies the role commands it receives (epoch
rule) and reports its NodeState. An admin observer records every message of the pool.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bpfailover.decider.model import Now
from bpfailover.decider.service import DeciderService
from bpfailover.link import Incoming, MqttLink
from bpfailover.logs import LOG_FORMAT, EscapingFormatter
from bpfailover.protocol.signing import (
    SignatureError,
    load_signing_key,
    load_verify_key,
    sign,
    verify_command,
)
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import (
    ControlRequest,
    DeciderStatus,
    DecisionEvent,
    NodeState,
    RoleCommand,
    TipReport,
    decode,
)
from bpfailover.settings import BpfConfig, DeciderSettings, load_config
from tests.brokers import BrokerHandle, wait_for

pytestmark = pytest.mark.broker

FAST = {
    "stale_after": 2.0,
    "tick": 0.1,
    "rise": 2,
    "min_switch_interval": 0.0,
    "startup_grace": 0.6,
    "apply_timeout": 3.0,
    "fence_margin": 0.5,
    "status_interval": 1.0,
    "max_clock_skew": 2.0,
}
TIP_EVERY = 0.2


def _operator_key(broker: BrokerHandle) -> Ed25519PrivateKey:
    return load_signing_key(broker.bundle / "keys" / "operator-signing.key")


class FakeNode:
    """A node's publisher and actuator in one: tips every TIP_EVERY s, roles applied at once.

    Two links, as on a real node: the publisher's user writes the tip, the actuator's user
    reads the role and writes the state.
    """

    def __init__(
        self, broker: BrokerHandle, name: str, *, fence_after: float = 3.0, verify: bool = False
    ) -> None:
        self.name = name
        self.key = load_verify_key(broker.bundle / "keys" / "command-signing.pub") if verify else None
        self.pool = broker.pool
        self.topics = Topics(broker.prefix)
        self.fence_after = fence_after
        self.role, self.epoch = "relay", 0
        self.command: RoleCommand | None = None  # the signed command behind its epoch
        self.stalled_at: float | None = None
        self.kes_periods_left: int | None = None  # reported in its tips when set
        self.received: list[RoleCommand] = []
        self.link = MqttLink(
            broker.mqtt_settings(f"{name}-actuator"),
            f"test-{name}-{time.monotonic_ns()}",
            subscriptions=[self.topics.role(self.pool, name)],
        )
        self.tip_link = MqttLink(
            broker.mqtt_settings(f"{name}-publisher"), f"test-{name}-tip-{time.monotonic_ns()}"
        )
        self._stop = threading.Event()
        self._seq = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FakeNode:
        self.link.start(attempts=1)
        self.tip_link.start(attempts=1)
        self.report()
        self._thread.start()
        return self

    def report(self) -> None:
        state = NodeState(
            pool=self.pool,
            node=self.name,
            boot="test",
            online=True,
            role=self.role,  # type: ignore[arg-type]
            epoch=self.epoch,
            fence_after=self.fence_after,
            updated_at=time.time(),
            command=self.command,
        )
        self.link.publish_wait(self.topics.state(self.pool, self.name), state.to_json(), retain=True)

    def tip(self) -> None:
        now = time.time()
        self._seq += 1
        tip_time = self.stalled_at if self.stalled_at is not None else now - 0.1
        report = TipReport(
            pool=self.pool,
            node=self.name,
            boot="test",
            seq=self._seq,
            sent_at=now,
            ok=True,
            tip_time=tip_time,
            kes_periods_left=self.kes_periods_left,
        )
        self.tip_link.publish(self.topics.tip(self.pool, self.name), report.to_json(), retain=True)

    def stall(self) -> None:
        self.stalled_at = time.time() - 0.1

    def _run(self) -> None:
        next_tip = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_tip:
                self.tip()
                next_tip = time.monotonic() + TIP_EVERY
            item = self.link.get(timeout=0.05)
            if isinstance(item, Incoming) and item.payload:
                cmd = decode(RoleCommand, item.payload, pool=self.pool, node=self.name)
                if self.key is not None:
                    try:
                        verify_command(cmd, self.key)
                    except SignatureError:
                        continue
                self.received.append(cmd)
                if cmd.epoch > self.epoch:  # the actuator's epoch rule, enough for these tests
                    self.role, self.epoch, self.command = cmd.role, cmd.epoch, cmd
                    self.report()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.link.stop()
        self.tip_link.stop()


@dataclass
class Observer:
    """Everything published under the pool, as the test admin saw it, in order."""

    link: MqttLink
    topics: Topics
    pool: str
    seen: list[tuple[str, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            item = self.link.get(timeout=0.05)
            if isinstance(item, Incoming) and item.payload and not item.retain:
                self.seen.append((item.topic, item.payload))

    def of_kind(self, kind: str) -> list[bytes]:
        return [p for t, p in self.seen if self.topics.parse(t).kind == kind]

    def roles(self) -> list[RoleCommand]:
        return [RoleCommand.model_validate_json(p) for p in self.of_kind("role")]

    def dryruns(self) -> list[RoleCommand]:
        return [RoleCommand.model_validate_json(p) for p in self.of_kind("dryrun")]

    def events(self) -> list[DecisionEvent]:
        return [DecisionEvent.model_validate_json(p) for p in self.of_kind("events")]

    def statuses(self) -> list[DeciderStatus]:
        return [DeciderStatus.model_validate_json(p) for p in self.of_kind("decider")]


@pytest.fixture
def clean(broker: BrokerHandle) -> Iterator[BrokerHandle]:
    broker.clear_retained()
    yield broker
    broker.clear_retained()


@pytest.fixture
def observer(clean: BrokerHandle) -> Iterator[Observer]:
    topics = Topics(clean.prefix)
    link = MqttLink(
        clean.mqtt_settings("admin"),
        f"test-observer-{time.monotonic_ns()}",
        subscriptions=[f"{clean.prefix}/{clean.pool}/#"],
    )
    link.start(attempts=1)
    obs = Observer(link, topics, clean.pool)
    thread = threading.Thread(target=obs.run, daemon=True)
    thread.start()
    yield obs
    obs._stop.set()
    thread.join(timeout=2)
    link.stop()


@pytest.fixture
def nodes(clean: BrokerHandle) -> Iterator[Callable[..., FakeNode]]:
    made: list[FakeNode] = []

    def make(name: str, **kw: Any) -> FakeNode:
        node = FakeNode(clean, name, **kw).start()
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def decider_config(broker: BrokerHandle, **overrides: object) -> BpfConfig:
    config = load_config(broker.config_path("decider"))
    settings = DeciderSettings(**{**config.decider.model_dump(), **FAST, **overrides})
    return config.model_copy(update={"decider": settings})


class Running:
    def __init__(self, service: DeciderService) -> None:
        self.service = service
        self.stop = threading.Event()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.service.serve(self.stop)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def start_decider(clean: BrokerHandle) -> Iterator[Callable[..., Running]]:
    made: list[Running] = []

    def start(**overrides: object) -> Running:
        running = Running(DeciderService(decider_config(clean, **overrides)))
        made.append(running)
        return running

    yield start
    for running in made:
        running.close()


def test_dry_run_publishes_only_to_the_dry_run_topic(
    start_decider: Callable[..., Running], nodes: Callable[..., FakeNode], observer: Observer
) -> None:
    bp1, bp2 = nodes("bp1"), nodes("bp2")
    start_decider(dry_run=True)
    wait_for(lambda: any(c.role == "producer" for c in observer.dryruns()), 10, "a dry-run bootstrap")
    bp1.stall()
    wait_for(
        lambda: any(c.node == "bp2" and c.role == "producer" for c in observer.dryruns()),
        10,
        "a dry-run failover to bp2",
    )
    dry = [(c.node, c.role, c.epoch, c.dry_run) for c in observer.dryruns()]
    assert dry == [
        ("bp2", "relay", 1, True),
        ("bp3", "relay", 1, True),
        ("bp1", "producer", 1, True),
        ("bp1", "relay", 2, True),
        ("bp3", "relay", 2, True),
        ("bp2", "producer", 2, True),
    ]
    assert observer.roles() == [], "nothing on any role topic"
    assert bp1.received == [] and bp2.received == []
    changes = [e for e in observer.events() if e.kind in ("bootstrap", "failover", "promoted")]
    assert changes and all(e.dry_run for e in changes)
    assert observer.statuses()[-1].dry_run


def test_a_real_failover_goes_across_the_broker(
    clean: BrokerHandle,
    start_decider: Callable[..., Running],
    nodes: Callable[..., FakeNode],
    observer: Observer,
) -> None:
    bp1, bp2 = nodes("bp1"), nodes("bp2")
    running = start_decider()
    # In a new pool bp1 need not wait for bp2, so bp2 may apply its relay command just after.
    wait_for(lambda: bp1.role == "producer" and bp2.epoch == 1, 10, "bp1 bootstrapped as producer")
    assert bp1.epoch == bp2.epoch == 1 and bp2.role == "relay"
    stalled = time.monotonic()
    bp1.stall()
    wait_for(lambda: bp2.role == "producer", 15, "bp2 to apply producer after bp1's tip went stale")
    took = time.monotonic() - stalled
    assert FAST["stale_after"] - 0.5 < took < FAST["stale_after"] + 3.0
    assert (bp1.role, bp1.epoch, bp2.epoch) == ("relay", 2, 2)
    # bp2 may have applied its command before the observer, on its own connection, saw it.
    wait_for(
        lambda: any(c.role == "producer" and c.epoch == 2 for c in observer.roles()),
        5,
        "the observer to see the promotion",
    )
    order = [(c.node, c.role, c.epoch) for c in observer.roles() if c.epoch == 2]
    assert order[0] == ("bp1", "relay", 2) and order[-1] == ("bp2", "producer", 2), "demote first"
    key = load_verify_key(clean.bundle / "keys" / "command-signing.pub")
    for command in observer.roles():
        verify_command(command, key)
    failover = next(e for e in observer.events() if e.kind == "failover")
    assert (failover.from_, failover.to, failover.epoch) == ("bp1", "bp2", 2)
    # (ages in events are rounded to the millisecond: just past stale_after may read as equal)
    assert failover.inputs["bp1"].age is not None and failover.inputs["bp1"].age >= FAST["stale_after"]
    wait_for(
        lambda: (
            DeciderStatus.model_validate_json(
                clean.retained(Topics(clean.prefix).decider(clean.pool))[
                    Topics(clean.prefix).decider(clean.pool)
                ]
            ).producer
            == "bp2"
        ),
        5,
        "the retained status to name bp2",
    )
    running.close()
    assert running.code == 0
    status = DeciderStatus.model_validate_json(
        clean.retained(Topics(clean.prefix).decider(clean.pool))[Topics(clean.prefix).decider(clean.pool)]
    )
    assert status.online is False and status.epoch == 2 and status.producer == "bp2"


def test_a_restarted_decider_recovers_without_commanding_anything(
    start_decider: Callable[..., Running], nodes: Callable[..., FakeNode], observer: Observer
) -> None:
    bp1, bp2 = nodes("bp1"), nodes("bp2")
    first = start_decider()
    wait_for(lambda: bp1.role == "producer", 10, "bp1 bootstrapped as producer")
    first.close()
    sent = len(observer.roles())
    start_decider()
    wait_for(
        lambda: any(e.kind == "recovered" for e in observer.events()), 10, "the second decider to recover"
    )
    time.sleep(1.0)  # a few ticks: it must stay quiet
    assert len(observer.roles()) == sent
    recovered = [e for e in observer.events() if e.kind == "recovered"][-1]
    assert recovered.reason == "bp1 is producer at epoch 1"
    assert bp1.epoch == bp2.epoch == 1


def test_control_requests_are_answered_and_bad_input_is_rejected_not_fatal(
    clean: BrokerHandle,
    start_decider: Callable[..., Running],
    nodes: Callable[..., FakeNode],
    observer: Observer,
) -> None:
    bp1, bp2 = nodes("bp1"), nodes("bp2")
    running = start_decider()
    wait_for(lambda: bp1.role == "producer", 10, "bp1 bootstrapped as producer")
    topics = Topics(clean.prefix)
    clean.publish(topics.tip(clean.pool, "bp2"), b"{not json", retain=False)
    clean.publish(
        topics.tip(clean.pool, "bp2"),
        TipReport(
            pool=clean.pool, node="bp1", boot="x", seq=1, sent_at=time.time(), ok=True, tip_time=time.time()
        ).to_json(),
    )
    clean.publish(topics.state(clean.pool, "bp2"), b"x" * 9000)
    wait_for(lambda: running.service.rejections.total() >= 3, 5, "three rejections")
    assert running.service.rejections.counts == {"malformed": 1, "topic_mismatch": 1, "oversized": 1}

    operator = MqttLink(clean.mqtt_settings("operator", keepalive=5), f"test-operator-{time.monotonic_ns()}")
    operator.start(attempts=1)
    def answer(request_id: str) -> DecisionEvent:
        return wait_for(
            lambda: next(
                (e for e in observer.events() if e.request_id == request_id and e.kind == "control"), None
            ),
            5,
            f"the answer to {request_id}",
        )

    try:
        # Unsigned (or signed with another key, or stale): refused, nothing changes.
        forged = ControlRequest(
            request_id="forged-1",
            pool=clean.pool,
            action="failover",
            to="bp2",
            force=True,
            sent_at=time.time(),
        )
        operator.publish_wait(topics.control(clean.pool), forged.to_json())
        refused = answer("forged-1")
        assert refused.ok is False and "unsigned" in refused.reason
        stale = clean.control(request_id="stale-1", action="pause").model_copy(update={"sig": None})
        stale = sign(stale.model_copy(update={"sent_at": time.time() - 3600}), _operator_key(clean))
        operator.publish_wait(topics.control(clean.pool), stale.to_json())
        assert answer("stale-1").ok is False and "stale" in answer("stale-1").reason

        request = clean.control(request_id="req-1", action="switchover", to="bp2", requested_by="test")
        operator.publish_wait(topics.control(clean.pool), request.to_json())
        accepted = answer("req-1")
        assert accepted.ok and accepted.reason == "switchover: switchover to bp2 started at epoch 2"
        wait_for(lambda: bp2.role == "producer", 5, "bp2 promoted by the switchover")
        assert bp1.role == "relay"
        # The same signed bytes again: a replay, refused (the answer to req-1 stays the first one).
        before = len(observer.events())
        operator.publish_wait(topics.control(clean.pool), request.to_json())
        # The answer to the replay, not the switchover's own later events (promoted, ...).
        replay = wait_for(
            lambda: next(
                (e for e in observer.events()[before:] if e.request_id == "req-1" and e.kind == "control"),
                None,
            ),
            5,
            "the answer to the replay",
        )
        assert replay.ok is False and "seen before" in replay.reason
    finally:
        operator.stop()
    assert running.thread.is_alive(), "the decider survived the bad input"


@pytest.mark.broker
def test_control_request_fields_with_newlines_and_ansi_escapes_log_as_one_escaped_line(
    clean: BrokerHandle,
    start_decider: Callable[..., Running],
    nodes: Callable[..., FakeNode],
    observer: Observer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    nodes("bp1")
    nodes("bp2")
    start_decider()
    topics = Topics(clean.prefix)
    forged = "x\n2026-01-01 00:00:00 WARNING bpfailover.decider: \x1b[31mforged"
    operator = MqttLink(clean.mqtt_settings("operator", keepalive=5), f"test-operator-{time.monotonic_ns()}")
    operator.start(attempts=1)
    try:
        request = ControlRequest(request_id=f"r{forged}", action="pause", requested_by=forged)
        wait_for(lambda: observer.statuses(), 10, "the decider's first status")
        operator.publish_wait(topics.control(clean.pool), request.to_json())
        wait_for(
            lambda: any(e.request_id == request.request_id for e in observer.events()), 5, "the answer"
        )
    finally:
        operator.stop()
    formatter = EscapingFormatter(LOG_FORMAT)
    lines = [formatter.format(r) for r in caplog.records if "forged" in r.getMessage()]
    assert lines, "the request was logged"
    for line in lines:
        assert "\n" not in line and "\x1b" not in line, line
        assert "x\\n2026-01-01 00:00:00 WARNING bpfailover.decider: \\x1b[31mforged" in line


def test_a_crash_leaves_an_accurate_offline_status_through_the_will(
    clean: BrokerHandle, nodes: Callable[..., FakeNode], observer: Observer, tmp_path: Path
) -> None:
    bp1 = nodes("bp1")
    nodes("bp2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPF_")}
    env.update({f"BPF_DECIDER__{k.upper()}": str(v) for k, v in FAST.items()})
    log_file = tmp_path / "decider.log"
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bpfailover.cli", "decider", "-c", str(clean.config_path("decider"))],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: bp1.role == "producer", 15, "bp1 bootstrapped as producer")
        topics = Topics(clean.prefix)
        request = clean.control(request_id="m-1", action="maintenance", node="bp3")
        clean.publish(topics.control(clean.pool), request.to_json())
        wait_for(
            lambda: "maintenance ['bp3']" in log_file.read_text(),
            10,
            "the presence Will to carry the maintenance",
        )
        process.kill()  # a crash: no clean disconnect, no goodbye status
        process.wait(5)
        status_topic = topics.decider(clean.pool)

        def retained_status() -> DeciderStatus:
            return DeciderStatus.model_validate_json(clean.retained(status_topic)[status_topic])

        wait_for(lambda: not retained_status().online, 10, "the Will's offline status")
        status = retained_status()
        assert status.maintenance == {"bp3": None} and status.producer == "bp1" and status.epoch == 1
        assert status.transition is None, "the bootstrap was over"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_sigterm_exits_cleanly_saying_offline(
    clean: BrokerHandle, nodes: Callable[..., FakeNode], observer: Observer
) -> None:
    nodes("bp1")
    nodes("bp2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPF_")}
    env.update({f"BPF_DECIDER__{k.upper()}": str(v) for k, v in FAST.items()})
    process = subprocess.Popen(
        [sys.executable, "-m", "bpfailover.cli", "decider", "-c", str(clean.config_path("decider"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: any(s.producer == "bp1" for s in observer.statuses()), 15, "bp1 bootstrapped")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        offline = [s for s in observer.statuses() if not s.online]
        assert len(offline) == 1 and offline[0].producer == "bp1" and offline[0].epoch == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_forged_and_unsigned_role_commands_do_not_steer_the_decider(
    clean: BrokerHandle,
    start_decider: Callable[..., Running],
    nodes: Callable[..., FakeNode],
) -> None:
    from bpfailover.protocol.signing import generate_key, sign_command

    topics = Topics(clean.prefix)
    forged = RoleCommand(
        pool=clean.pool, node="bp2", role="producer", epoch=10000, issued_at=time.time(), decider="intruder"
    )
    # Sent before the decider starts, so it finds them retained while it recovers.
    clean.publish(topics.role(clean.pool, "bp2"), forged.to_json(), retain=True)
    clean.publish(
        topics.role(clean.pool, "bp3"),
        sign_command(forged.model_copy(update={"node": "bp3"}), generate_key()).to_json(),
        retain=True,
    )
    bp1, bp2 = nodes("bp1", verify=True), nodes("bp2", verify=True)
    running = start_decider()
    wait_for(lambda: bp1.role == "producer", 10, "bp1 bootstrapped as producer despite the forgeries")
    assert bp2.role == "relay"
    assert bp1.epoch == 1, "the forged epoch 10000 was not adopted"
    assert running.service.rejections.counts["unsigned"] >= 1
    assert running.service.rejections.counts["bad_signature"] >= 1
    assert running.service.core.view(clean.pool).known_epoch() == 1


def test_metrics_endpoint_and_webhook_report_a_failover(
    clean: BrokerHandle,
    start_decider: Callable[..., Running],
    nodes: Callable[..., FakeNode],
) -> None:
    import json
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from tests.brokers import free_port

    port = free_port()
    try:
        bp1, bp2 = nodes("bp1"), nodes("bp2")
        start_decider(metrics_port=port, webhook_url=f"http://127.0.0.1:{server.server_port}/hook")
        wait_for(lambda: bp1.role == "producer", 10, "bp1 bootstrapped as producer")
        bp1.stall()
        wait_for(lambda: bp2.role == "producer", 15, "failover to bp2")
        hook = wait_for(
            lambda: next((e for e in received if e["kind"] == "failover"), None), 10, "webhook POST"
        )
        assert (hook["from"], hook["to"], hook["epoch"]) == ("bp1", "bp2", 2)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                return answer.read().decode()

        def scraped_bp2() -> str | None:
            text = scrape()
            return text if 'node="bp2"' in text and "failover" in text else None

        text = wait_for(scraped_bp2, 10, "metrics naming bp2")
        assert "bpfailover_" in text
        assert any(
            line.startswith("bpfailover_") and "epoch" in line and line.endswith(" 2.0")
            for line in text.splitlines()
        ), "the epoch gauge reads 2"
    finally:
        server.shutdown()


def test_nothing_is_decided_while_the_role_command_connection_is_down(
    start_decider: Callable[..., Running], nodes: Callable[..., FakeNode], observer: Observer
) -> None:
    bp1, bp2 = nodes("bp1"), nodes("bp2")
    running = start_decider()
    service = running.service
    view = service.core.view(bp1.pool)
    wait_for(lambda: view.producer == "bp1" and view.transition is None, 10, "bp1 bootstrapped as producer")
    service.commands.stop()  # only the connection for role commands goes
    wait_for(lambda: not service.core.link_up, 5, "the decider to notice the command link is down")
    bp1.stall()
    wait_for(
        lambda: service.core.view(bp1.pool).nodes["bp1"].age(service_now()) > FAST["stale_after"] + 1.0,
        10,
        "bp1's tip to be stale for a while",
    )
    assert [c for c in observer.roles() if c.epoch > 1] == [], "decided while commands could not go out"
    assert service.core.view(bp1.pool).transition is None
    service.commands.start(persistent=True)
    wait_for(lambda: bp2.role == "producer", 10, "the failover once both connections are up")
    assert (bp1.role, bp1.epoch) == ("relay", 2)


def service_now() -> Now:
    return Now(time.monotonic(), time.time())
