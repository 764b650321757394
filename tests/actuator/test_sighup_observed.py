"""The sighup method against a stand-in cardano-node (``tests.actuator.fakenode``) that answers
SIGHUP as the real one does: a change counts once the node is seen doing it, a SIGHUP ignored
during a ledger replay is sent again, and a demotion not seen in time stops the node."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bpfailover.actuator.contact import ContactMemory
from bpfailover.actuator.controller import RoleController
from bpfailover.actuator.core import ActuatorCore, PublishState
from bpfailover.actuator.methods import ApplyError, build_method
from bpfailover.actuator.methods import sighup as sighup_module
from bpfailover.actuator.methods.base import Method, demotion_bound
from bpfailover.actuator.policy import Expected
from bpfailover.protocol.wire import NodeState
from bpfailover.rejections import Rejections
from tests.actuator.helpers import NodeFiles
from tests.brokers import wait_for

ROOT = Path(__file__).parents[2]


@dataclass
class Node:
    folder: Path
    keys: list[Path]
    store: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid_file(self) -> Path:
        return self.folder / "node.pid"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{(self.folder / 'port').read_text()}/metrics"

    @property
    def log(self) -> Path:
        return self.folder / "node.log"

    def forging(self) -> bool:
        return (self.folder / "forging").read_text() == "1"

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def replay(self, on: bool) -> None:
        flag = self.folder / "replaying"
        if on:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)


StartNode = Callable[..., Node]


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[StartNode]:
    started: list[Node] = []

    def start(
        *, keys_in_place: bool, keys_at_start: bool = True, replaying: bool = False, metric_bug: bool = False
    ) -> Node:
        folder = tmp_path / "node"
        folder.mkdir()
        live = tmp_path / "keys"
        live.mkdir()
        store = tmp_path / "key-store"
        store.mkdir(mode=0o700)
        keys = [live / "kes.skey", live / "vrf.skey", live / "node.opcert"]
        for key in keys:
            (key if keys_in_place else store / key.name).write_text(f"secret {key.name}")
        if replaying:
            (folder / "replaying").touch()
        args = [sys.executable, "-m", "tests.actuator.fakenode", str(folder), *map(str, keys)]
        args += ["--keys-at-start"] if keys_at_start else []
        args += ["--metric-bug"] if metric_bug else []
        proc = subprocess.Popen(args, cwd=ROOT)
        node = Node(folder, keys, store, proc)
        started.append(node)
        wait_for(lambda: node.pid_file.exists() and (folder / "port").exists(), 10, "the fake node")
        return node

    yield start
    for node in started:
        node.proc.kill()
        node.proc.wait()


def sighup_method(files: NodeFiles, node: Node, **overrides: object) -> Method:
    values: dict[str, object] = {
        "method": "sighup",
        "kes_key": node.keys[0],
        "vrf_key": node.keys[1],
        "opcert": node.keys[2],
        "key_store": node.store,
        "pid_file": node.pid_file,
        "metrics_url": node.metrics_url,
        "apply_timeout": 3.0,
    }
    values.update(overrides)
    return build_method(files.settings(**values))


def test_a_relay_is_applied_only_once_the_node_is_seen_not_forging(
    node_files: NodeFiles, start_node: StartNode
) -> None:
    node = start_node(keys_in_place=True)
    wait_for(node.forging, 5, "the fake node forging from its start keys")
    method = sighup_method(node_files, node)
    method.apply("relay")  # returns only once seen: the metric after a SIGHUP that reached it up
    assert not node.forging()
    assert method.observe().forging is False
    method.apply("producer")
    assert node.forging() and method.observe().forging is True
    assert node_files.stop.calls() == []


def test_the_node_log_alone_confirms_a_change(node_files: NodeFiles, start_node: StartNode) -> None:
    node = start_node(keys_in_place=True)
    wait_for(node.forging, 5, "the fake node forging from its start keys")
    method = sighup_method(node_files, node, metrics_url=None, node_log=node.log)
    method.apply("relay")
    assert not node.forging()
    assert "Disabling block forging" in node.log_lines()[-1]


@pytest.mark.parametrize("source", ["metrics_url", "node_log"])
def test_a_sighup_ignored_during_the_replay_is_sent_again_once_the_node_is_up(
    node_files: NodeFiles, start_node: StartNode, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setattr(sighup_module, "RESEND_EVERY", 0.3)
    # A relay at start (its keys away), replaying its ledger: a promotion's SIGHUP is ignored.
    node = start_node(keys_in_place=False, replaying=True)
    observe = {"metrics_url": node.metrics_url, "node_log": None}
    if source == "node_log":
        observe = {"metrics_url": None, "node_log": node.log}
    method = sighup_method(node_files, node, apply_timeout=20.0, **observe)
    done: list[BaseException | None] = []

    def promote() -> None:
        try:
            method.apply("producer")
            done.append(None)
        except BaseException as exc:  # handed to the test's thread
            done.append(exc)

    worker = threading.Thread(target=promote)
    worker.start()
    wait_for(lambda: any("not effective" in line for line in node.log_lines()), 5, "the ignored SIGHUP")
    assert not done and not node.forging()  # still replaying: not confirmed, and it waits
    node.replay(False)
    worker.join(15)
    assert done == [None]
    assert node.forging()
    lines = node.log_lines()
    assert "Enabling block forging" in lines[-1]


def test_a_demotion_not_seen_within_apply_timeout_falls_back_to_stop_command(
    node_files: NodeFiles, start_node: StartNode
) -> None:
    # Replaying with its keys loaded at start: it will forge once the replay ends, whatever a
    # SIGHUP says now. Not seen not forging within apply_timeout: stop_command.
    node = start_node(keys_in_place=True, replaying=True)
    method = sighup_method(node_files, node, apply_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(ApplyError) as failed:
        method.apply("relay")
    assert failed.value.applied == "relay"  # stopped: it no longer forges
    assert "not confirmed by the node" in str(failed.value) and "stop_command" in str(failed.value)
    assert len(node_files.stop.calls()) == 1
    assert time.monotonic() - started < demotion_bound(method.settings) + 1.0


def test_a_relay_whose_metric_says_forging_after_a_non_producing_start_is_sighuped_and_seen(
    node_files: NodeFiles, start_node: StartNode, tmp_path: Path
) -> None:
    # Started with the non-producing flag and its keys away: the gauge says 1 until a SIGHUP.
    node = start_node(keys_in_place=False, keys_at_start=False, metric_bug=True)
    method = sighup_method(node_files, node)
    sent: list[NodeState] = []
    controller = RoleController("pool1", "bp1", method, node_files.store())
    core = ActuatorCore(
        controller=controller,
        expected=Expected("bpfailover/pool1/role/bp1", "pool1", "bp1"),
        fence_after=20.0,
        keepalive=5.0,
        demotion_bound=demotion_bound(method.settings),
        method_name="sighup",
        boot="b1",
        memory=ContactMemory(tmp_path / "contact"),
        clock=time.monotonic,
        wall=time.time,
        emit=lambda action: sent.append(action.state) if isinstance(action, PublishState) else None,
        rejections=Rejections("actuator", logging.getLogger("test")),
    )
    core.start()
    core.on_connected("c1", 5.0)
    assert controller.applied == "relay" and sent[-1].forging is None  # nothing seen yet
    core.tick()  # looks: untested gauge of a node that is up -> one SIGHUP, then seen
    assert any("Disabling block forging" in line for line in node.log_lines())
    assert sent[-1].forging is False and sent[-1].role == "relay"
    assert not node.forging()
