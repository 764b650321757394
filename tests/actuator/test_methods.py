"""The three ways of applying a role, against files in a temp folder and recording scripts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfailover.actuator.methods import ApplyError, build_method
from bpfailover.actuator.methods.base import demotion_bound
from bpfailover.settings import ConfigError
from tests.actuator.helpers import PRODUCER_ENV, RELAY_ENV, NodeFiles, make_recorder, running_sleeps
from tests.brokers import wait_for

# --- env-swap -----------------------------------------------------------------------------


def test_env_swap_detects_the_applied_role(node_files: NodeFiles) -> None:
    method = build_method(node_files.settings())
    assert method.detect_role() == "relay"
    node_files.env_file.write_bytes(PRODUCER_ENV)
    assert method.detect_role() == "producer"
    node_files.env_file.write_bytes(b"something else\n")
    assert method.detect_role() == "unknown"
    node_files.env_file.unlink()
    assert method.detect_role() == "unknown"


def test_env_swap_replaces_the_file_then_restarts(node_files: NodeFiles) -> None:
    node_files.env_file.chmod(0o640)
    method = build_method(node_files.settings())
    method.apply("producer")
    assert node_files.env_file.read_bytes() == PRODUCER_ENV
    assert (node_files.env_file.stat().st_mode & 0o777) == 0o640
    assert node_files.restart.calls() == ['POOL_NAME="pool1"']  # the restart saw the new file
    method.apply("relay")
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert node_files.restart.calls() == ['POOL_NAME="pool1"', '#POOL_NAME=""']


def test_failing_restart_is_retried_then_reported(node_files: NodeFiles) -> None:
    node_files.restart.fail()
    method = build_method(node_files.settings(apply_retries=3))
    with pytest.raises(ApplyError, match="exited with 3") as info:
        method.apply("producer")
    assert info.value.applied == "unknown"
    assert len(node_files.restart.calls()) == 3
    assert node_files.stop.calls() == []  # stop_command is for demotions only


def test_restart_that_recovers_within_the_retries_succeeds(node_files: NodeFiles) -> None:
    # Fails on the first call only: the script removes its own fail flag.
    script = node_files.restart.script
    script.write_text(script.read_text().replace("exit 3", f'rm "{node_files.restart.fail_flag}"; exit 3'))
    node_files.restart.fail()
    build_method(node_files.settings()).apply("producer")
    assert len(node_files.restart.calls()) == 2


def test_restart_that_hangs_is_killed_after_the_timeout(node_files: NodeFiles) -> None:
    node_files.restart.hang(37.31)
    method = build_method(node_files.settings(apply_timeout=0.3, apply_retries=2))
    started = time.monotonic()
    with pytest.raises(ApplyError, match=r"timed out after 0\.3s"):
        method.apply("producer")
    assert time.monotonic() - started < 3
    assert len(node_files.restart.calls()) == 2
    assert running_sleeps("37.31") == []  # the whole process group was killed, not just the shell


def test_failed_demotion_falls_back_to_stop_command(node_files: NodeFiles) -> None:
    node_files.env_file.write_bytes(PRODUCER_ENV)
    node_files.restart.fail()
    method = build_method(node_files.settings(apply_retries=2))
    with pytest.raises(ApplyError, match="node stopped with stop_command") as info:
        method.apply("relay")
    assert info.value.applied == "relay"  # a stopped node does not forge
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert len(node_files.restart.calls()) == 2
    assert len(node_files.stop.calls()) == 1


def test_timed_out_demotion_with_failing_stop_command_leaves_role_unknown(node_files: NodeFiles) -> None:
    node_files.restart.hang(30)
    node_files.stop.fail()
    method = build_method(node_files.settings(apply_timeout=0.2, apply_retries=1))
    with pytest.raises(ApplyError, match="stop_command failed too") as info:
        method.apply("relay")
    assert info.value.applied == "unknown"


def test_demotion_ends_within_two_apply_timeouts_whatever_the_retries(node_files: NodeFiles) -> None:
    node_files.env_file.write_bytes(PRODUCER_ENV)
    node_files.restart.hang(37.32)
    node_files.stop.hang(37.32)
    settings = node_files.settings(apply_timeout=0.4, apply_retries=5)
    method = build_method(settings)
    assert demotion_bound(settings) == 0.8
    started = time.monotonic()
    with pytest.raises(ApplyError, match="stop_command failed too"):
        method.apply("relay")
    assert time.monotonic() - started < 0.8 + 0.5
    # No retry of a command that used up its window: one restart, then one stop_command.
    assert (len(node_files.restart.calls()), len(node_files.stop.calls())) == (1, 1)
    assert running_sleeps("37.32") == []


def test_demotion_retries_only_within_its_window(node_files: NodeFiles) -> None:
    node_files.restart.fail()
    settings = node_files.settings(apply_timeout=2.0, apply_retries=10, apply_retry_wait=0.5)
    started = time.monotonic()
    with pytest.raises(ApplyError, match="node stopped with stop_command"):
        build_method(settings).apply("relay")
    # Attempts at about 0, 0.5 and 1.5 s; the next would start after 3.5 s, past the 2 s window.
    assert 2 <= len(node_files.restart.calls()) < 10
    assert time.monotonic() - started < 2.0 + 0.5


def test_promotion_keeps_its_retries_each_with_the_full_timeout(node_files: NodeFiles) -> None:
    node_files.restart.fail()
    build = build_method(node_files.settings(apply_timeout=0.2, apply_retries=4))
    with pytest.raises(ApplyError, match="exited with 3"):
        build.apply("producer")
    assert len(node_files.restart.calls()) == 4


def test_env_swap_refuses_incomplete_or_ambiguous_configuration(node_files: NodeFiles) -> None:
    with pytest.raises(ConfigError, match=r"actuator\.env_file"):
        build_method(node_files.settings(env_file=None))
    node_files.relay_env.write_bytes(PRODUCER_ENV)
    with pytest.raises(ConfigError, match="same content"):
        build_method(node_files.settings())


# --- command ------------------------------------------------------------------------------


def test_command_method_runs_promote_and_demote_commands(node_files: NodeFiles) -> None:
    promote = make_recorder(node_files.root, "promote", node_files.env_file)
    demote = make_recorder(node_files.root, "demote", node_files.env_file)
    method = build_method(
        node_files.settings(
            method="command", promote_command=str(promote.script), demote_command=str(demote.script)
        )
    )
    assert method.detect_role() is None
    method.apply("producer")
    method.apply("relay")
    assert (len(promote.calls()), len(demote.calls())) == (1, 1)
    with pytest.raises(ConfigError, match=r"actuator\.promote_command"):
        build_method(node_files.settings(method="command", demote_command="true"))


# --- sighup -------------------------------------------------------------------------------

DUMMY_NODE = """
import os, signal, sys, time
pid_file, log, *keys = sys.argv[1:]
def on_hup(signum, frame):
    present = ",".join("1" if os.path.exists(k) else "0" for k in keys)
    with open(log, "a") as f:
        f.write(f"HUP {present}\\n")
signal.signal(signal.SIGHUP, on_hup)
with open(pid_file + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(pid_file + ".tmp", pid_file)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def dummy_node(tmp_path: Path) -> Iterator[tuple[Path, Path, list[Path]]]:
    """A stand-in cardano-node that writes a pid file and records each SIGHUP with the keys it sees."""
    live = tmp_path / "node-keys"
    live.mkdir()
    keys = [live / "kes.skey", live / "vrf.skey", live / "node.opcert"]
    pid_file, log = tmp_path / "node.pid", tmp_path / "hups.log"
    script = tmp_path / "dummy_node.py"
    script.write_text(DUMMY_NODE)
    proc = subprocess.Popen([sys.executable, str(script), str(pid_file), str(log), *map(str, keys)])
    try:
        wait_for(pid_file.exists, 10, "the dummy node's pid file")
        yield pid_file, log, keys
    finally:
        proc.kill()
        proc.wait()


def hups(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_sighup_moves_keys_and_signals_the_node(
    node_files: NodeFiles, dummy_node: tuple[Path, Path, list[Path]]
) -> None:
    pid_file, log, keys = dummy_node
    store = node_files.root / "key-store"
    for key in keys:
        key.write_bytes(f"secret {key.name}".encode())
        key.chmod(0o600)
    settings = node_files.settings(
        method="sighup", kes_key=keys[0], vrf_key=keys[1], opcert=keys[2], key_store=store, pid_file=pid_file
    )
    method = build_method(settings)
    assert method.detect_role() == "producer"

    method.apply("relay")
    wait_for(lambda: hups(log) == ["HUP 0,0,0"], 5, "a SIGHUP seen without keys")
    assert method.detect_role() == "relay"
    assert sorted(p.name for p in store.iterdir()) == ["kes.skey", "node.opcert", "vrf.skey"]
    assert (store.stat().st_mode & 0o777) == 0o700

    method.apply("producer")
    wait_for(lambda: hups(log) == ["HUP 0,0,0", "HUP 1,1,1"], 5, "a SIGHUP seen with all keys")
    assert method.detect_role() == "producer"
    assert keys[0].read_bytes() == b"secret kes.skey"
    assert (keys[0].stat().st_mode & 0o777) == 0o600
    assert list(store.iterdir()) == []


def test_sighup_via_command_when_there_is_no_pid_file(node_files: NodeFiles, tmp_path: Path) -> None:
    keys = [tmp_path / "kes.skey", tmp_path / "vrf.skey", tmp_path / "node.opcert"]
    for key in keys:
        key.write_text("k")
    hup = make_recorder(tmp_path, "hup", node_files.env_file)
    settings = node_files.settings(
        method="sighup",
        kes_key=keys[0],
        vrf_key=keys[1],
        opcert=keys[2],
        key_store=tmp_path / "store",
        sighup_command=str(hup.script),
    )
    build_method(settings).apply("relay")
    assert len(hup.calls()) == 1
    assert not any(k.exists() for k in keys)


def test_sighup_to_a_dead_process_fails_the_promotion(node_files: NodeFiles, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    keys = [tmp_path / "kes.skey", tmp_path / "vrf.skey", tmp_path / "node.opcert"]
    for key in keys:
        (store / key.name).write_text("k")
    pid_file = tmp_path / "dead.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text(str(dead.pid))
    settings = node_files.settings(
        method="sighup", kes_key=keys[0], vrf_key=keys[1], opcert=keys[2], key_store=store, pid_file=pid_file
    )
    with pytest.raises(ApplyError, match="cannot send SIGHUP"):
        build_method(settings).apply("producer")


def test_sighup_refuses_a_key_store_that_is_the_live_folder(node_files: NodeFiles, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key_store must be another folder"):
        build_method(
            node_files.settings(
                method="sighup",
                kes_key=tmp_path / "kes.skey",
                vrf_key=tmp_path / "vrf.skey",
                opcert=tmp_path / "node.opcert",
                key_store=tmp_path,
                sighup_command="true",
            )
        )
    with pytest.raises(ConfigError, match=r"pid_file or actuator\.sighup_command"):
        build_method(
            node_files.settings(
                method="sighup",
                kes_key=tmp_path / "kes.skey",
                vrf_key=tmp_path / "vrf.skey",
                opcert=tmp_path / "node.opcert",
                key_store=tmp_path / "store",
            )
        )
