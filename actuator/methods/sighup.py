"""``sighup``: move the forging keys into or out of place, then SIGHUP the node.

cardano-node (8.2 and later) re-reads its KES key, VRF key and operational certificate
on SIGHUP: with the files present at the paths it was started with it forges, without
them it runs as a relay. While relay the three files rest in ``key_store``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from bpfailover.actuator.atomic import atomic_move
from bpfailover.actuator.commands import StepFailed, with_retries
from bpfailover.actuator.methods.base import Budget, Method
from bpfailover.protocol.wire import AppliedRole, Role
from bpfailover.settings import ConfigError

KEYS = ("kes_key", "vrf_key", "opcert")


class SigHup(Method):
    name = "sighup"

    def check(self) -> None:
        s = self.settings
        self._need(kes_key=s.kes_key, vrf_key=s.vrf_key, opcert=s.opcert, key_store=s.key_store)
        if s.pid_file is None and not s.sighup_command:
            raise ConfigError(
                "actuator method 'sighup' needs actuator.pid_file or actuator.sighup_command "
                '(e.g. "systemctl kill -s HUP cnode")'
            )
        names = [p.name for _, p, _ in self.pairs()]
        if len(set(names)) != len(names):
            raise ConfigError("actuator.kes_key, vrf_key and opcert must have different file names")
        for key, live, stored in self.pairs():
            if live == stored:
                raise ConfigError(f"actuator.key_store must be another folder than the one of actuator.{key}")

    def pairs(self) -> list[tuple[str, Path, Path]]:
        """(key name, path the node reads, resting place in key_store)."""
        s = self.settings
        assert s.key_store is not None
        out = []
        for key in KEYS:
            live = getattr(s, key)
            assert live is not None
            out.append((key, Path(live), Path(s.key_store) / Path(live).name))
        return out

    def detect_role(self) -> AppliedRole:
        present = [live.exists() for _, live, _ in self.pairs()]
        if all(present):
            return "producer"
        if not any(present):
            return "relay"
        return "unknown"

    def describe(self, role: Role) -> str:
        where = (
            f"pid in {self.settings.pid_file}"
            if self.settings.pid_file
            else repr(self.settings.sighup_command)
        )
        store = self.settings.key_store
        if role == "producer":
            return f"move kes_key, vrf_key, opcert from {store} into place, then SIGHUP ({where})"
        return f"move kes_key, vrf_key, opcert into {store}, then SIGHUP ({where})"

    def _apply(self, role: Role, budget: Budget) -> None:
        s = self.settings
        assert s.key_store is not None
        key_store = s.key_store

        def move() -> None:
            if role == "relay":
                key_store.mkdir(mode=0o700, parents=True, exist_ok=True)
            for key, live, stored in self.pairs():
                if role == "producer" and not live.exists():
                    if not stored.exists():
                        raise StepFailed(f"{key} is neither at {live} nor in {key_store}")
                    atomic_move(stored, live)
                elif role == "relay" and live.exists():
                    atomic_move(live, stored)

        budget.files(move, f"moving the keys to or from {key_store}")
        self.signal(budget)

    def signal(self, budget: Budget) -> None:
        s = self.settings
        if s.pid_file is None:
            assert s.sighup_command
            self.run(s.sighup_command, "sighup_command", budget)
            return
        pid_file = s.pid_file
        with_retries(
            lambda: send_sighup(pid_file),
            attempts=s.apply_retries,
            wait=s.apply_retry_wait,
            what="SIGHUP",
            budget=budget,
        )


def send_sighup(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise StepFailed(f"cannot read a pid from {pid_file}: {exc}") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise StepFailed(f"cannot send SIGHUP to pid {pid} (from {pid_file}): {exc.strerror}") from None
