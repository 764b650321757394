"""``sighup``: move the forging keys into or out of place, SIGHUP the node, and see it happen.

cardano-node (8.2 and later; 8.9.0 for bulk credentials) re-reads its KES key, VRF key and
operational certificate on SIGHUP: with the files present at the paths it was started with it
forges; only a *missing* file turns forging off (any other error leaves forging as it was).
While relay the three files rest in ``key_store``. The node must have been started with the key
paths (and the non-producing flag: ``--non-producing-node`` up to 10.4,
``--start-as-non-producing-node`` from 10.5), or no SIGHUP can ever make it forge.

With an observation source (``bpfailover.actuator.observe``) the change is confirmed from the node itself:
a relay is applied only once the node is seen not forging, a producer once it is seen forging.
A SIGHUP the node ignored because it still replays its ledger is sent again once it is up. A
demotion not seen within ``apply_timeout`` fails, and falls back to ``stop_command``. Without a
source the SIGHUP is assumed to work, as before, and NodeState says ``forging: null``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from bpfailover.actuator.atomic import atomic_move
from bpfailover.actuator.commands import StepFailed, with_retries
from bpfailover.actuator.methods.base import Abort, Alive, ApplyError, Budget, Method
from bpfailover.actuator.observe import Observed
from bpfailover.protocol.wire import AppliedRole, Role
from bpfailover.settings import ConfigError

KEYS = ("kes_key", "vrf_key", "opcert")
LOOK_EVERY = 0.2  # seconds between looks at the node while a change is confirmed
RESEND_EVERY = 5.0  # seconds between SIGHUPs the node ignored (it still replays its ledger)


class SigHup(Method):
    name = "sighup"
    needs_sighup = True

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
        self.confirm(role, budget)

    def can_reassert(self) -> bool:
        return self.observer.configured

    def reassert(self, role: Role, abort: Abort | None = None, alive: Alive | None = None) -> None:
        """The key files say ``role`` but the node is seen doing the other (or was never SIGHUPed
        while up): SIGHUP it again and confirm, within apply_timeout (a demotion then falls back to
        stop_command, as any demotion does)."""
        if self.detect_role() != role:
            raise ApplyError(f"the key files do not say {role}: not re-applying", "unknown")
        super().apply(role, abort, alive)

    def confirm(self, role: Role, budget: Budget) -> None:
        """Wait until the node is seen running ``role``; resend a SIGHUP it ignored while replaying.

        Raise StepFailed when it is not seen within apply_timeout (a demotion's own deadline).
        Without an observation source there is nothing to wait for.
        """
        if not self.observer.configured:
            return
        wanted = role == "producer"
        until = time.monotonic() + self.settings.apply_timeout
        if budget.deadline is not None:
            until = min(until, budget.deadline)
        last_sent = time.monotonic()
        seen: Observed = self.observe()
        while seen.forging is not wanted:
            # Sent before the node was up (metrics), or ignored during a replay (log): again.
            resend = bool(seen.untested and seen.up)
            if resend or (seen.ignored and time.monotonic() - last_sent >= RESEND_EVERY):
                self.signal(budget)
                last_sent = time.monotonic()
            if time.monotonic() >= until:
                raise StepFailed(
                    f"{role} not confirmed by the node within apply_timeout "
                    f"{self.settings.apply_timeout:g}s (seen: {_seen_text(seen)})"
                )
            budget.pause(min(LOOK_EVERY, max(0.0, until - time.monotonic())))
            seen = self.observe()

    def signal(self, budget: Budget) -> None:
        self.observer.before_sighup()
        self._send(budget)
        self.observer.after_sighup()

    def _send(self, budget: Budget) -> None:
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


def _seen_text(seen: Observed) -> str:
    forging = {True: "forging", False: "not forging", None: "unknown"}[seen.forging]
    if seen.ignored:
        forging += ", SIGHUP ignored: consensus has not started (ledger replay)"
    elif seen.up is False:
        forging += ", node not up (ledger replay)"
    elif seen.untested:
        forging += ", no SIGHUP has reached the node while up"
    if seen.error:
        forging += f"; {seen.error}"
    return forging
