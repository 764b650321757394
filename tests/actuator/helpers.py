"""Helpers for the actuator tests: a node's files in a temp folder and a recording restart script."""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass
from pathlib import Path

from bpfailover.actuator.state import StateStore
from bpfailover.protocol.wire import RoleCommand
from bpfailover.settings import ActuatorSettings

PRODUCER_ENV = b'POOL_NAME="pool1"\n'
RELAY_ENV = b'#POOL_NAME=""\n'

RECORDER = """#!/bin/sh
# Test stand-in for `systemctl ...`: records each call with what the env file says.
line="$(date +%s.%N) {name} $(head -n 1 "{env}" 2>/dev/null || echo missing)"
echo "$line" >> "{log}"  # one write, so a reader never sees half a line
if [ -f "{sleep}" ]; then sleep "$(cat "{sleep}")"; fi
if [ -f "{fail}" ]; then exit 3; fi
exit 0
"""


@dataclass
class Recorder:
    """A shell script that appends one line per call to ``log``; can be made to fail or hang."""

    name: str
    script: Path
    log: Path
    fail_flag: Path
    sleep_flag: Path

    def calls(self) -> list[str]:
        """The env file content seen by each call (first line)."""
        if not self.log.exists():
            return []
        return [line.split(" ", 2)[2] for line in self.log.read_text().splitlines()]

    def times(self) -> list[float]:
        if not self.log.exists():
            return []
        return [float(line.split(" ", 1)[0]) for line in self.log.read_text().splitlines()]

    def fail(self, on: bool = True) -> None:
        if on:
            self.fail_flag.touch()
        else:
            self.fail_flag.unlink(missing_ok=True)

    def hang(self, seconds: float) -> None:
        self.sleep_flag.write_text(str(seconds))


def running_sleeps(marker: str, within: float = 2.0) -> list[str]:
    """Pids of ``sleep <marker>`` processes still running ``within`` seconds from now, or none.

    A killed command must leave none, but SIGKILL reaches the group's other processes
    asynchronously: give the kernel a moment before calling one a survivor.
    """
    deadline = time.monotonic() + within
    while True:
        found = _sleeps(marker)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)


def _sleeps(marker: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


def make_recorder(folder: Path, name: str, env_file: Path) -> Recorder:
    script = folder / f"{name}.sh"
    rec = Recorder(name, script, folder / f"{name}.calls", folder / f"{name}.fail", folder / f"{name}.sleep")
    script.write_text(
        RECORDER.format(name=name, env=env_file, log=rec.log, sleep=rec.sleep_flag, fail=rec.fail_flag)
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return rec


@dataclass
class NodeFiles:
    """One node's env files, state folder and command recorders, all under a temp folder."""

    root: Path
    env_file: Path
    producer_env: Path
    relay_env: Path
    state_dir: Path
    restart: Recorder
    stop: Recorder

    def settings(self, **overrides: object) -> ActuatorSettings:
        values: dict[str, object] = {
            "method": "env-swap",
            "env_file": self.env_file,
            "producer_env": self.producer_env,
            "relay_env": self.relay_env,
            "restart_command": str(self.restart.script),
            "stop_command": str(self.stop.script),
            "state_dir": self.state_dir,
            "fence_after": 2.0,
            "apply_timeout": 5.0,
            "apply_retries": 3,
            "apply_retry_wait": 0.01,
        }
        values.update(overrides)
        return ActuatorSettings(**values)

    def env_role(self) -> str:
        data = self.env_file.read_bytes()
        return {PRODUCER_ENV: "producer", RELAY_ENV: "relay"}.get(data, "unknown")

    def store(self, pool: str = "pool1", node: str = "bp1") -> StateStore:
        return StateStore(self.state_dir, pool, node)


def make_node_files(tmp_path: Path) -> NodeFiles:
    env_file = tmp_path / "env"
    producer_env = tmp_path / "env.producer"
    relay_env = tmp_path / "env.relay"
    producer_env.write_bytes(PRODUCER_ENV)
    relay_env.write_bytes(RELAY_ENV)
    env_file.write_bytes(RELAY_ENV)
    return NodeFiles(
        root=tmp_path,
        env_file=env_file,
        producer_env=producer_env,
        relay_env=relay_env,
        state_dir=tmp_path / "state",
        restart=make_recorder(tmp_path, "restart", env_file),
        stop=make_recorder(tmp_path, "stop", env_file),
    )


def command(role: str, epoch: int, *, pool: str = "pool1", node: str = "bp1", **extra: object) -> RoleCommand:
    return RoleCommand(
        pool=pool,
        node=node,
        role=role,  # type: ignore[arg-type]
        epoch=epoch,
        issued_at=time.time(),
        decider="test-decider",
        reason="test",
        **extra,  # type: ignore[arg-type]
    )
