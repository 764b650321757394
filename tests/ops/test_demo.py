"""``bpfailover demo`` end to end: real mosquitto, decider, publishers and actuators as processes."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpfailover.cli import demo
from tests.brokers import find_mosquitto

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


def processes_under(folder: str) -> list[str]:
    """Command lines of live processes that mention ``folder`` (the demo's temporary folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if folder in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def demo_folder(output: str) -> str:
    match = re.search(r"in (/\S+bpfailover-demo-\w+):", output)
    assert match, output
    return match.group(1)


@needs_mosquitto
def test_demo_fails_over_within_a_minute_and_cleans_up() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bpfailover.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    took = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert took < 90, f"demo took {took:.0f}s"
    assert "STALLING bp1" in out
    assert re.search(r"failover: epoch (\d+) -> (\d+), producer bp1 -> bp2", out)
    first, second = map(int, re.search(r"failover: epoch (\d+) -> (\d+)", out).groups())  # type: ignore[union-attr]
    assert second > first
    assert "decider's reason:" in out
    assert "check: bp2's env file is the producer variant: yes" in out
    assert "check: bp1's env file is the relay variant: yes" in out
    assert "demo passed" in out
    folder = demo_folder(out)
    assert not Path(folder).exists()  # removed without --keep
    assert processes_under(folder) == []
    print(f"demo took {took:.1f}s")


@needs_mosquitto
def test_ctrl_c_stops_every_process_the_demo_started() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpfailover.cli", "demo", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "waiting for the decider" in line:
                break
        folder = demo_folder("".join(lines))
        assert len(processes_under(folder)) >= 5  # mosquitto, decider, 2 publishers, 2 actuators
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted: stopping everything the demo started" in rest
    assert processes_under(folder) == []
    assert (Path(folder) / "logs" / "decider.log").exists()  # --keep
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def test_missing_mosquitto_is_one_clear_message_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "find_mosquitto", lambda: None)
    assert demo.run(argparse.Namespace(keep=False)) == 2
    err = capsys.readouterr().err
    assert "needs the mosquitto broker" in err and "apt-get install mosquitto" in err


def test_demo_timings_respect_the_decider_invariants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bpfailover.decider.invariants import check_invariants
    from bpfailover.settings import DeciderSettings

    t = demo.TIMINGS
    settings = DeciderSettings(
        stale_after=float(t["BPF_DECIDER__STALE_AFTER"]),
        tick=float(t["BPF_DECIDER__TICK"]),
        rise=int(t["BPF_DECIDER__RISE"]),
        min_switch_interval=float(t["BPF_DECIDER__MIN_SWITCH_INTERVAL"]),
        startup_grace=float(t["BPF_DECIDER__STARTUP_GRACE"]),
        fence_margin=float(t["BPF_DECIDER__FENCE_MARGIN"]),
        apply_timeout=float(t["BPF_DECIDER__APPLY_TIMEOUT"]),
    )
    from bpfailover.broker.bundle import write_bundle
    from bpfailover.protocol.fence import advertised_for
    from bpfailover.settings import load_config

    # What the demo's actuators advertise: their bundle config with the demo's timings.
    write_bundle(tmp_path / "b", pool=demo.POOL, nodes=list(demo.NODES), broker_port=18883)
    for key, value in t.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BPF_PUBLISHER__SLOT_OFFSET", "0")  # the demo sets it at run time
    node = load_config(tmp_path / "b" / "nodes" / "bp1.actuator.toml")
    check_invariants(settings, node.mqtt.keepalive, advertised_for(node.actuator, node.mqtt.keepalive))
