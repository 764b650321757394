"""What every way of applying a role shares: retries, and demotion that is never blocked.

A demotion runs within a known time, whatever its commands do: the method's own steps
(file changes, restart or signal, with their retries) within one ``apply_timeout``, then,
if they failed, ``stop_command`` (with its retries) within another. ``demotion_bound``
says how long that is at most; the fence time the actuator advertises includes it.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod

from bpfailover.actuator.commands import (
    UNLIMITED,
    Abort,
    Alive,
    ApplyAborted,
    Budget,
    StepFailed,
    run_command,
    with_retries,
)
from bpfailover.actuator.observe import ForgingObserver, Observed, build_observer
from bpfailover.protocol.fence import demotion_bound
from bpfailover.protocol.wire import AppliedRole, Role
from bpfailover.settings import ActuatorSettings, ConfigError

log = logging.getLogger("bpfailover.actuator")

__all__ = ["Abort", "ApplyError", "Budget", "Method", "demotion_bound"]


class ApplyError(Exception):
    """Applying a role failed; ``applied`` is what the node is believed to run afterwards."""

    def __init__(self, message: str, applied: AppliedRole) -> None:
        super().__init__(message)
        self.applied = applied


class Method(ABC):
    """One way of switching a node between producer and relay."""

    name: str = ""
    # Applying a role restarts cardano-node (env-swap): the node then replays its ledger, which may
    # take many minutes, and NodeState says so (``start_timeout``).
    restarts_node: bool = False
    # The node's forging metric counts only after a SIGHUP that reached it while up (``observe``).
    needs_sighup: bool = False

    def __init__(self, settings: ActuatorSettings) -> None:
        self.settings = settings
        self.check()
        self.observer: ForgingObserver = build_observer(
            settings.metrics_url, settings.node_log, needs_sighup=self.needs_sighup
        )

    def observe(self) -> Observed:
        """The node's forging state, looked at now (``Observed(None)`` without a source)."""
        return self.observer.look()

    def can_reassert(self) -> bool:
        """Whether ``reassert`` can put the node back in line with its role without a role change."""
        return False

    def reassert(self, role: Role, abort: Abort | None = None, alive: Alive | None = None) -> None:
        """Make the node run ``role`` again, which its files already say (the node disagrees)."""
        raise ApplyError(f"{self.name} cannot re-apply {role} without a role change", "unknown")

    @abstractmethod
    def check(self) -> None:
        """Raise ConfigError naming the missing or wrong key."""

    @abstractmethod
    def detect_role(self) -> AppliedRole | None:
        """The role the node is set up for now; None when this method cannot tell."""

    @abstractmethod
    def describe(self, role: Role) -> str:
        """What ``apply(role)`` would do, in one line (for dry-run and logs)."""

    @abstractmethod
    def _apply(self, role: Role, budget: Budget) -> None:
        """Change the node within ``budget``; raise StepFailed or OSError on failure."""

    def apply(self, role: Role, abort: Abort | None = None, alive: Alive | None = None) -> None:
        """Apply ``role``; raise ApplyError (or ApplyAborted for an abandoned promotion).

        A promotion gives up as soon as ``abort`` says so, even in the middle of a command.
        A demotion is never aborted but ends in time: its steps get one ``apply_timeout``
        in all, retries included; if they fail it falls back to ``stop_command`` (another
        ``apply_timeout``): a stopped node does not forge, so it then counts as relay even
        though the error is reported.
        """
        if role == "relay":
            budget = Budget(deadline=time.monotonic() + self.settings.apply_timeout, alive=alive)
        else:
            budget = Budget(abort=abort, alive=alive)
        try:
            self._apply(role, budget)
        except ApplyAborted:
            raise
        except (StepFailed, OSError) as exc:
            if role == "relay":
                self._last_resort(str(exc), alive)
            raise ApplyError(f"{role}: {exc}", "unknown") from None

    def _last_resort(self, failure: str, alive: Alive | None = None) -> None:
        stop = self.settings.stop_command
        if not stop:
            raise ApplyError(f"demotion failed: {failure}; no stop_command configured", "unknown")
        log.error("demotion failed (%s); stopping the node with stop_command %r", failure, stop)
        try:
            deadline = time.monotonic() + self.settings.apply_timeout
            self.run(stop, "stop_command", Budget(deadline=deadline, alive=alive))
        except StepFailed as exc:
            raise ApplyError(
                f"demotion failed: {failure}; stop_command failed too: {exc}", "unknown"
            ) from None
        raise ApplyError(f"demotion failed: {failure}; node stopped with stop_command", "relay")

    def run(self, command: str, what: str, budget: Budget = UNLIMITED) -> None:
        """Run a shell command with the configured timeout and bounded retries, within ``budget``."""
        s = self.settings
        with_retries(
            lambda: run_command(
                command, budget.timeout(s.apply_timeout), what=what, abort=budget.abort, alive=budget.alive
            ),
            attempts=s.apply_retries,
            wait=s.apply_retry_wait,
            what=what,
            budget=budget,
        )

    def _need(self, **values: object) -> None:
        missing = [k for k, v in values.items() if v in (None, "")]
        if missing:
            keys = ", ".join(f"actuator.{k}" for k in missing)
            raise ConfigError(f"actuator method {self.name!r} needs {keys}")
