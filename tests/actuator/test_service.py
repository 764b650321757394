"""The actuator service against a real mosquitto (TLS, passwords, ACL) from a `bpfailover init` bundle."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfailover.actuator.service import ActuatorService
from bpfailover.actuator.state import StoredState
from bpfailover.actuator.watchdog import watchdog_restart_bound
from bpfailover.protocol.signing import generate_key, load_signing_key, sign_command
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import NodeState
from bpfailover.settings import load_config
from tests.actuator.helpers import PRODUCER_ENV, NodeFiles, command, make_node_files
from tests.brokers import BrokerHandle, wait_for

pytestmark = pytest.mark.broker

FENCE_AFTER = 2.0
KEEPALIVE = 5
APPLY_TIMEOUT = 5
# NodeState.fence_after: the timer max(2, 2 x 5) + the demotion (restart, then stop_command:
# apply_timeout each) + 1 s of slack. See actuator/fence.py.
ADVERTISED = 10 + 2 * APPLY_TIMEOUT + 1.0


def overrides(files: NodeFiles, **extra: object) -> dict[str, str]:
    """BPF_* variables that point the bundle's node config at the test's own files."""
    values: dict[str, object] = {
        "BPF_ACTUATOR__ENV_FILE": files.env_file,
        "BPF_ACTUATOR__PRODUCER_ENV": files.producer_env,
        "BPF_ACTUATOR__RELAY_ENV": files.relay_env,
        "BPF_ACTUATOR__RESTART_COMMAND": files.restart.script,
        "BPF_ACTUATOR__STOP_COMMAND": files.stop.script,
        "BPF_ACTUATOR__STATE_DIR": files.state_dir,
        "BPF_ACTUATOR__FENCE_AFTER": FENCE_AFTER,
        "BPF_ACTUATOR__APPLY_TIMEOUT": APPLY_TIMEOUT,
        "BPF_ACTUATOR__APPLY_RETRY_WAIT": 0.05,
        "BPF_MQTT__KEEPALIVE": KEEPALIVE,
    }
    values.update(extra)
    return {k: str(v) for k, v in values.items()}


class Node:
    """Commands to and reports from one node of a test broker."""

    def __init__(self, broker: BrokerHandle, name: str) -> None:
        self.broker = broker
        self.name = name
        topics = Topics(broker.prefix)
        self.role_topic = topics.role(broker.pool, name)
        self.state_topic = topics.state(broker.pool, name)
        self.key = load_signing_key(broker.bundle / "keys" / "command-signing.key")

    def command(self, role: str, epoch: int, *, key: object = None, signed: bool = True) -> None:
        cmd = command(role, epoch, pool=self.broker.pool, node=self.name)
        if signed:
            cmd = sign_command(cmd, key or self.key)  # type: ignore[arg-type]
        self.broker.publish(self.role_topic, cmd.to_json(), retain=True)

    def state(self) -> NodeState | None:
        raw = self.broker.retained(self.state_topic).get(self.state_topic)
        return NodeState.model_validate_json(raw) if raw else None

    def wait_state(self, message: str, timeout: float = 10.0, **expected: object) -> NodeState:
        def matches() -> NodeState | None:
            state = self.state()
            if state and all(getattr(state, k) == v for k, v in expected.items()):
                return state
            return None

        return wait_for(matches, timeout, f"{self.name} NodeState {message} {expected}")

    def rejected(self) -> str:
        state = self.state()
        return (state.rejected or "") if state is not None else ""

    def clear(self) -> None:
        for topic in (self.role_topic, self.state_topic):
            self.broker.clear_retained(topic)


class ActuatorProcess:
    """``bpfailover actuator -c FILE`` as a real subprocess, its log in a file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        exe = shutil.which("bpfailover")
        argv = [exe] if exe else [sys.executable, "-m", "bpfailover.cli"]
        self.log = log
        self.started = time.time()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [*argv, "--log-level", "debug", "actuator", "-c", str(config)],
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 10.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def processes() -> Iterator[list[ActuatorProcess]]:
    """Actuator subprocesses, killed after the test; their logs show up when a test fails."""
    made: list[ActuatorProcess] = []
    yield made
    for proc in made:
        if proc.alive():
            proc.proc.kill()
            proc.proc.wait()
        print(f"--- {proc.log}\n{proc.tail()}")  # pytest shows teardown output of failed tests only


def start_actuator(
    broker: BrokerHandle, node: str, files: NodeFiles, processes: list[ActuatorProcess], **extra: object
) -> ActuatorProcess:
    config = broker.node_config(node, "actuator")
    proc = ActuatorProcess(config, overrides(files, **extra), files.root / "actuator.log")
    processes.append(proc)
    return proc


def test_producer_fences_when_the_broker_stops_and_is_promoted_again_only_at_a_higher_epoch(
    broker_factory, tmp_path: Path, processes: list[ActuatorProcess]
) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory()
    broker.require_own_broker("stops the broker")
    files = make_node_files(tmp_path)
    bp1 = Node(broker, "bp1")
    proc = start_actuator(broker, "bp1", files, processes)
    bp1.wait_state("online", online=True, role="relay", epoch=0, fence_after=ADVERTISED, method="env-swap")

    bp1.command("producer", 1)
    bp1.wait_state("promoted", role="producer", epoch=1, pending=None)
    assert files.restart.calls() == ['POOL_NAME="pool1"']

    stopped_at = time.time()
    broker.stop()
    wait_for(lambda: len(files.restart.calls()) == 2, FENCE_AFTER + 5, "the node to fence itself")
    fenced_at = files.restart.times()[-1]
    # Silence is counted from the last packet heard, which is at or before the stop.
    assert stopped_at <= fenced_at <= stopped_at + FENCE_AFTER + 1.5, proc.tail()
    assert files.restart.calls() == ['POOL_NAME="pool1"', '#POOL_NAME=""']
    state = files.store().load()
    assert state is not None and (state.epoch, state.role, state.fenced) == (1, "producer", True)
    assert proc.alive(), proc.tail()

    broker.start()  # the retained producer command at epoch 1 is delivered again: it does not count
    refused = bp1.wait_state(
        "fenced, refusing producer@1 again", timeout=20, online=True, role="relay", epoch=1, fenced=True
    )
    wait_for(
        lambda: "reapply" in bp1.rejected(), 10, "the retained producer@1 to be refused"
    )
    assert refused.fence_after == ADVERTISED
    bp1.command("producer", 2)  # the decider re-commands a fenced producer at a new epoch
    bp1.wait_state("re-promoted", timeout=20, online=True, role="producer", epoch=2, fenced=False)
    assert files.restart.calls() == ['POOL_NAME="pool1"', '#POOL_NAME=""', 'POOL_NAME="pool1"']
    assert proc.terminate() == 0


def test_stored_producer_without_broker_fences_reports_it_and_waits_for_a_command(
    broker_factory, tmp_path: Path, processes: list[ActuatorProcess]
) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory(start=False)
    broker.require_own_broker("starts the broker late")
    files = make_node_files(tmp_path)
    files.store().save(StoredState(pool="pool1", node="bp1", epoch=3, role="producer"))
    files.env_file.write_bytes(PRODUCER_ENV)
    bp1 = Node(broker, "bp1")
    proc = start_actuator(broker, "bp1", files, processes)

    wait_for(lambda: files.restart.calls(), FENCE_AFTER + 8, "the node to fence with no broker")
    assert files.env_role() == "relay"
    assert files.restart.times()[-1] - proc.started >= FENCE_AFTER
    assert proc.alive(), proc.tail()

    broker.start()
    bp1.wait_state("fenced", timeout=20, online=True, role="relay", epoch=3, fenced=True, error=None)
    bp1.command("producer", 3)  # its old epoch: perhaps a rolled-back copy, it does not count
    wait_for(lambda: "reapply" in bp1.rejected(), 10, "producer@3 to be refused")
    bp1.command("producer", 4)
    bp1.wait_state("re-promoted", role="producer", epoch=4, fenced=False)

    assert proc.terminate() == 0  # SIGTERM: clean exit; it says so, and that it promises no fence
    last = bp1.wait_state("offline after SIGTERM", online=False)
    assert (last.role, last.epoch, last.stopped, last.fence_after) == ("producer", 4, True, 0)
    assert files.restart.calls() == ['#POOL_NAME=""', 'POOL_NAME="pool1"']


def test_last_will_after_a_promotion_claims_no_role_and_carries_the_epoch_stored_at_connect(
    broker: BrokerHandle, tmp_path: Path, processes: list[ActuatorProcess]
) -> None:
    bp2 = Node(broker, "bp2")
    bp2.clear()
    files = make_node_files(tmp_path)
    files.store().save(StoredState(pool="pool1", node="bp2", epoch=3, role="relay"))
    proc = start_actuator(broker, "bp2", files, processes)
    first = bp2.wait_state("online", online=True, role="relay", epoch=3)
    bp2.command("producer", 4)
    bp2.wait_state("promoted", role="producer", epoch=4, pending=None)
    proc.proc.kill()  # kill -9: no goodbye, the broker sends the Will; the node stays producer
    proc.proc.wait()
    gone = bp2.wait_state("offline by Last Will", online=False)
    assert gone.boot == first.boot
    # The Will was fixed at connect time: it cannot know the node became producer since,
    # so it claims no role, with the epoch stored when it connected (or a later one).
    assert (gone.role, gone.pending, gone.fenced) == ("unknown", None, False)
    assert gone.epoch >= 3
    assert gone.fence_after == ADVERTISED
    assert files.env_role() == "producer"


def test_last_will_carries_the_new_epoch_after_a_reconnect(
    broker_factory, tmp_path: Path, processes: list[ActuatorProcess]
) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory()
    broker.require_own_broker("restarts the broker")
    files = make_node_files(tmp_path)
    bp1 = Node(broker, "bp1")
    proc = start_actuator(broker, "bp1", files, processes)
    bp1.wait_state("online", online=True, role="relay", epoch=0)
    bp1.command("producer", 2)
    promoted = bp1.wait_state("promoted", role="producer", epoch=2, pending=None)
    # The actuator reconnects (after fencing and re-promoting on the retained command, if the
    # restart outlasted fence_after): the new connection carries a Will with epoch 2.
    broker.restart()
    wait_for(
        lambda: (s := bp1.state()) is not None and s.online and s.updated_at > promoted.updated_at,
        20,
        "bp1 to report again after reconnecting",
    )
    bp1.wait_state("producer again", role="producer", epoch=2, pending=None)
    proc.proc.kill()
    proc.proc.wait()
    gone = bp1.wait_state("offline by Last Will", online=False)
    assert (gone.role, gone.epoch) == ("unknown", 2)


@pytest.fixture
def in_process(
    broker: BrokerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[ActuatorService, Node, NodeFiles]]]:
    """Start an ActuatorService for bp3 of the session broker on a thread; stopped after the test."""
    started: list[tuple[ActuatorService, threading.Thread]] = []

    def start(files: NodeFiles | None = None, **extra: object) -> tuple[ActuatorService, Node, NodeFiles]:
        bp3 = Node(broker, "bp3")
        bp3.clear()
        files = files or make_node_files(tmp_path)
        for key, value in overrides(files, **extra).items():
            monkeypatch.setenv(key, value)
        service = ActuatorService(load_config(broker.node_config("bp3", "actuator")))
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        started.append((service, thread))
        return service, bp3, files

    yield start
    for service, thread in started:
        service.stop()
        thread.join(10)


def test_forged_unsigned_and_replayed_commands_are_rejected(in_process: Callable[..., tuple]) -> None:  # type: ignore[type-arg]
    service, bp3, files = in_process()
    assert service.link.subscriptions == [bp3.role_topic]  # its exact role topic, nothing else
    bp3.wait_state("online", online=True)
    bp3.command("producer", 2)
    bp3.wait_state("promoted", role="producer", epoch=2)

    def reported(reason: str) -> bool:
        state = bp3.state()
        return state is not None and (state.rejected or "").startswith(f"rejected {reason}:")

    bp3.command("relay", 5, key=generate_key())  # signed with another key
    wait_for(lambda: reported("bad_signature"), 5, "the forged command to be reported")
    bp3.command("relay", 6, signed=False)
    wait_for(lambda: reported("unsigned"), 5, "the unsigned command to be reported")
    bp3.command("relay", 1)  # a genuine but old command, replayed
    wait_for(lambda: reported("stale_epoch"), 5, "the replayed command to be reported")
    state = bp3.state()
    assert state is not None and (state.role, state.epoch, state.online) == ("producer", 2, True)
    assert state.error is None
    assert dict(service.rejections.counts) == {"bad_signature": 1, "unsigned": 1, "stale_epoch": 1}
    assert files.restart.calls() == ['POOL_NAME="pool1"']
    assert files.env_role() == "producer"

    bp3.command("relay", 7)  # the next valid command still works and clears the report
    # What the decider takes as an acknowledgement: relay at the new epoch, nothing pending.
    bp3.wait_state("demoted", online=True, role="relay", epoch=7, pending=None, error=None)


def test_dry_run_reports_what_it_would_do_and_changes_nothing(in_process: Callable[..., tuple]) -> None:  # type: ignore[type-arg]
    _service, bp3, files = in_process(BPF_ACTUATOR__DRY_RUN="true")
    before = {p.name: p.read_bytes() for p in files.root.rglob("*") if p.is_file() and p.suffix != ".log"}
    bp3.wait_state("online", online=True, dry_run=True)
    bp3.command("producer", 1)
    # The role the node really runs (and the epoch of it), and what it would apply in pending.
    state = bp3.wait_state("would promote", pending="producer")
    assert (state.role, state.epoch, state.dry_run) == ("relay", 0, True)
    assert state.fence_after == 0  # it will not really fence, so the decider must not count on it
    after = {p.name: p.read_bytes() for p in files.root.rglob("*") if p.is_file() and p.suffix != ".log"}
    assert after == before
    assert files.restart.calls() == []
    assert not files.state_dir.exists()


def test_refused_credentials_do_not_stop_the_actuator_from_fencing(
    in_process: Callable[..., tuple],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    files = make_node_files(tmp_path)
    files.store().save(StoredState(pool="pool1", node="bp3", epoch=4, role="producer"))
    files.env_file.write_bytes(PRODUCER_ENV)
    service, _bp3, _ = in_process(files, BPF_MQTT__PASSWORD="wrong-password")
    wait_for(lambda: service.controller.status().fenced, FENCE_AFTER + 5, "a fence without a broker login")
    assert files.env_role() == "relay"
    assert files.restart.calls() == ['#POOL_NAME=""']
    assert not service.link.connected.is_set()


def test_a_paused_actuator_fences_first_thing_when_it_resumes(
    broker: BrokerHandle, tmp_path: Path, processes: list[ActuatorProcess], record_property: Callable
) -> None:  # type: ignore[type-arg]
    """A frozen host (SIGSTOP here; a VM pause or a suspend alike): the broker sends the Will while
    it sleeps. On resume the fence check runs before anything that arrived meanwhile; the time
    from resume to demotion is the residual window a paused producer forges (docs/safety.md)."""
    files = make_node_files(tmp_path)
    bp1 = Node(broker, "bp1")
    bp1.clear()
    proc = start_actuator(broker, "bp1", files, processes)
    bp1.wait_state("online", online=True, role="relay")
    bp1.command("producer", 1)
    bp1.wait_state("promoted", role="producer", epoch=1, pending=None)
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        bp1.wait_state("its Will while it sleeps", timeout=3 * KEEPALIVE, online=False)
        # Past its timer even while paho may still believe the link is up: max(fence_after, 2 x keepalive).
        time.sleep(max(FENCE_AFTER, 2 * KEEPALIVE) + 1)  # the length of the pause: the fault itself
    finally:
        resumed = time.time()
        os.kill(proc.proc.pid, signal.SIGCONT)
    wait_for(lambda: len(files.restart.calls()) == 2, 10, "the fence after resuming")
    assert files.restart.calls() == ['POOL_NAME="pool1"', '#POOL_NAME=""']
    window = files.restart.times()[-1] - resumed
    record_property("resume_to_demotion_s", round(window, 3))
    print(f"resume -> demotion started: {window:.3f}s")
    bp1.wait_state("fenced after resuming", online=True, role="relay", epoch=1, fenced=True)
    assert proc.terminate() == 0


def test_under_systemds_watchdog_the_loop_pings_and_a_stopped_one_does_not(
    broker: BrokerHandle, tmp_path: Path, processes: list[ActuatorProcess]
) -> None:
    """A fake NOTIFY_SOCKET: READY=1, then WATCHDOG=1 from the loop; a stopped (hung) process sends
    none, which is what makes systemd kill and restart it. The advertised fence covers that."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.2)

    def heard(seconds: float) -> list[str]:
        got, until = [], time.monotonic() + seconds
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                got.append(sock.recv(4096).decode())
        return got

    files = make_node_files(tmp_path)
    bp1 = Node(broker, "bp1")
    bp1.clear()
    proc = start_actuator(
        broker, "bp1", files, processes, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC=1_000_000
    )
    try:
        state = bp1.wait_state("online", online=True)
        assert state.fence_after == ADVERTISED + watchdog_restart_bound(1.0)
        first = heard(2.0)
        assert any(m.startswith("READY=1") for m in first), first
        assert sum(m == "WATCHDOG=1" for m in first) >= 2, first
        os.kill(proc.proc.pid, signal.SIGSTOP)
        heard(0.3)  # what was on its way
        assert "WATCHDOG=1" not in heard(1.5)  # hung: no proof of life
        os.kill(proc.proc.pid, signal.SIGCONT)
        assert "WATCHDOG=1" in heard(1.5)
    finally:
        sock.close()
    assert proc.terminate() == 0
