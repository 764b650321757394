"""The ops commands against a running ``bpfailover decider`` and real nodes, on the real broker.

One pool for the module: the decider and bp1, bp2 (publisher ``simulate`` + actuator
``env-swap``) run as subprocesses with the demo's compressed timings; bp3 never starts,
so it is never eligible. Tests run in file order and each leaves the pool healthy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bpfailover.cli import demo, main
from bpfailover.cli.ops import run_status
from bpfailover.settings import load_config
from tests.brokers import BrokerHandle, wait_for

pytestmark = pytest.mark.broker


@dataclass
class LivePool:
    broker: BrokerHandle
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path

    @property
    def operator(self) -> str:
        return str(self.broker.config_path("operator"))

    def status(self) -> tuple[int, dict[str, Any]]:
        """``bpfailover status --json``, in process (a subprocess per poll would be slow)."""
        lines: list[str] = []
        args = argparse.Namespace(command="status", pool=None, watch=False, json=True, timeout=5.0)
        code = run_status(args, load_config(self.operator), out=lines.append)
        return code, json.loads(lines[0])["pools"][0]

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.status()[1]["nodes"] if n["name"] == name)

    def producer_applied(self, name: str) -> bool:
        _, pool = self.status()
        return pool["applied_producers"] == [name] and not pool["transition"]


def spawn(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{name}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bpfailover.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def live(ops_broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePool]:
    pytest.importorskip("bpfailover.decider.service", reason="the decider service is not in the tree yet")
    ops_broker.clear_retained()
    logs = tmp_path_factory.mktemp("ops-live-logs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPF_")}
    env.update(demo.TIMINGS)
    env["BPF_PUBLISHER__SLOT_OFFSET"] = str(int(time.time()) - 100_000)
    bundle = ops_broker.bundle  # this module's own broker and bundle: fresh epochs and env files
    processes = {"decider": spawn("decider", ["decider", "-c", str(bundle / "decider.toml")], env, logs)}
    for node in ("bp1", "bp2"):
        for duty in ("actuator", "publisher"):
            config = str(ops_broker.node_config(node, duty))
            processes[f"{node}-{duty}"] = spawn(f"{node}-{duty}", [duty, "-c", config], env, logs)
    pool = LivePool(ops_broker, processes, logs)
    try:
        wait_for(lambda: pool.producer_applied("bp1"), timeout=40, message="the decider to make bp1 producer")
        yield pool
    finally:
        for process in reversed(list(processes.values())):
            stop(process)
        ops_broker.clear_retained()


def ops(pool: LivePool, *args: str) -> int:
    return main([args[0], "-c", pool.operator, *args[1:]])


def test_status_of_the_live_pool(live: LivePool) -> None:
    code, pool = live.status()
    nodes = {n["name"]: n for n in pool["nodes"]}
    assert code == 0, pool["problems"]
    assert pool["decider"]["online"] is True and pool["producer"] == "bp1"
    assert nodes["bp1"]["applied"] == "producer" and nodes["bp1"]["desired"] == "producer"
    assert nodes["bp2"]["eligible"] is True and nodes["bp2"]["applied"] == "relay"
    assert nodes["bp3"]["eligible"] is False and nodes["bp3"]["why_not"] == "no actuator state"
    assert nodes["bp1"]["epoch"] == nodes["bp2"]["epoch"] == pool["epoch"] >= 1


def test_switchover_moves_the_producer(live: LivePool, capsys: pytest.CaptureFixture[str]) -> None:
    epoch = live.status()[1]["epoch"]
    started = time.monotonic()
    assert ops(live, "switchover", "--to", "bp2") == 0
    answer = capsys.readouterr().out
    assert answer.startswith("switchover accepted: ") and "bp2" in answer
    wait_for(lambda: live.producer_applied("bp2"), timeout=20, message="bp2 to apply producer")
    print(f"switchover applied in {time.monotonic() - started:.1f}s")
    _, pool = live.status()
    assert pool["epoch"] > epoch and live.node("bp1")["applied"] == "relay"
    run = live.broker.bundle / "run"
    assert (run / "bp2" / "env").read_bytes() == (run / "bp2" / "env.producer").read_bytes()
    assert (run / "bp1" / "env").read_bytes() == (run / "bp1" / "env.relay").read_bytes()


def test_switchover_to_an_ineligible_node_is_refused(
    live: LivePool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ops(live, "switchover", "--to", "bp3") == 1
    out = capsys.readouterr().out
    assert out.startswith("switchover refused: ") and "bp3" in out


def test_pause_and_resume(live: LivePool, capsys: pytest.CaptureFixture[str]) -> None:
    assert ops(live, "pause", "--until", "1h") == 0
    assert capsys.readouterr().out.startswith("pause accepted: paused until ")
    _, pool = live.status()
    assert pool["paused"] is True and abs(pool["paused_until"] - (time.time() + 3600)) < 30
    assert ops(live, "resume") == 0
    assert capsys.readouterr().out.startswith("resume accepted: resumed")
    assert live.status()[1]["paused"] is False


def test_maintenance_on_and_off(live: LivePool, capsys: pytest.CaptureFixture[str]) -> None:
    standby = "bp1" if live.producer_applied("bp2") else "bp2"
    assert ops(live, "maintenance", standby, "on") == 0
    assert capsys.readouterr().out == f"maintenance accepted: {standby} in maintenance\n"
    code, pool = live.status()
    node = next(n for n in pool["nodes"] if n["name"] == standby)
    assert node["why_not"] == "maintenance" and node["maintenance"] is True
    assert code == 1 and "no healthy standby" in pool["problems"]
    assert ops(live, "switchover", "--to", standby) == 1  # never promoted while in maintenance
    capsys.readouterr()
    assert ops(live, "maintenance", standby, "off") == 0
    assert capsys.readouterr().out == f"maintenance accepted: {standby} out of maintenance\n"
    assert live.node(standby)["eligible"] is True


def test_without_the_decider_a_command_times_out_with_exit_3(
    live: LivePool, capsys: pytest.CaptureFixture[str]
) -> None:
    stop(live.processes["decider"])
    wait_for(lambda: live.status()[1]["decider"]["online"] is False, timeout=10, message="decider offline")
    code = ops(live, "resume", "--timeout", "2")
    err = capsys.readouterr().err
    assert code == 3
    assert "no answer from the decider within 2s: is `bpfailover decider` running?" in err
    assert "says offline" in err
    status_code, pool = live.status()
    assert status_code == 1 and any("decider" in p and "offline" in p for p in pool["problems"])
