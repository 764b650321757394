"""Running the operator's shell commands: a timeout that kills the whole process group,
bounded retries with tenacity, and the two limits an apply may be given:

- ``Budget.abort``: polled while a command runs and between attempts; when it says
  True the command is killed and ``ApplyAborted`` raised (a promotion that must give
  way to the fence);
- ``Budget.deadline``: a ``time.monotonic()`` instant after which nothing runs; every
  attempt's timeout is cut to it and no retry starts past it (a demotion, which must
  finish within a known time: see ``bpfailover.actuator.fence.advertised_fence_after``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger("bpfailover.actuator")

T = TypeVar("T")

POLL = 0.1  # seconds between checks of Budget.abort while a command runs or a retry waits

Abort = Callable[[], bool]
Alive = Callable[[], None]


class StepFailed(Exception):
    """One step of applying a role failed (command exit, timeout, missing file, signal)."""


class ApplyAborted(Exception):
    """Retries were stopped because the node must fence instead."""


class StepOverrun(Exception):
    """A step did not finish within its time (a hung disk, a stuck call); it is left behind."""


def within(seconds: float, step: Callable[[], T], what: str, alive: Alive | None = None) -> T:
    """Run ``step`` on a helper thread and wait ``seconds`` for it; raise StepOverrun after that.

    For the steps of a fence that no timeout of their own can bound (a write, an fsync or a
    rename on a disk that hangs). The step's own exceptions are raised here; a step that
    overruns keeps running in the background, and its result is ignored. ``alive`` is called
    while it waits (the waiting thread is not hung: systemd's watchdog may be fed).
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(step())
        except BaseException as exc:  # handed over to the caller's thread
            error.append(exc)

    worker = threading.Thread(target=run, name=f"bounded {what}", daemon=True)
    worker.start()
    until = time.monotonic() + max(0.0, seconds)
    while worker.is_alive():
        left = until - time.monotonic()
        if left <= 0:
            break
        worker.join(min(left, POLL) if alive is not None else left)
        if alive is not None:
            alive()
    if worker.is_alive():
        raise StepOverrun(f"{what} did not finish within {seconds:.0f}s")
    if error:
        raise error[0]
    return result[0]


@dataclass(frozen=True)
class Budget:
    """How long one apply may go on: ``abort`` to give way to the fence, ``deadline`` to end in time."""

    abort: Abort | None = None
    deadline: float | None = None  # time.monotonic()
    # Called while a command runs or a retry waits: this thread is busy, not hung (the watchdog).
    alive: Alive | None = None

    def timeout(self, limit: float) -> float:
        """The timeout for one attempt: ``limit``, cut to the deadline; StepFailed when none is left."""
        if self.deadline is None:
            return limit
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StepFailed("no time left before the deadline of this demotion")
        return min(limit, left)

    def check(self, what: str) -> None:
        if self.abort is not None and self.abort():
            raise ApplyAborted(f"{what}: stopped to fence")

    def files(self, step: Callable[[], None], what: str) -> None:
        """Run file steps (writes, renames) within the deadline: a disk that hangs is a failed
        step (StepFailed), so that a demotion still ends in time, with stop_command."""
        if self.deadline is None:
            step()
            return
        try:
            within(self.deadline - time.monotonic(), step, what, self.alive)
        except StepOverrun as exc:
            raise StepFailed(str(exc)) from None

    def pause(self, seconds: float) -> None:
        """Wait between attempts, giving up as soon as ``abort`` says so."""
        until = time.monotonic() + seconds
        while True:
            self.check("waiting to retry")
            if self.alive is not None:
                self.alive()
            left = until - time.monotonic()
            if left <= 0:
                return
            polled = self.abort is not None or self.alive is not None
            time.sleep(min(left, POLL) if polled else left)


UNLIMITED = Budget()


def run_command(
    command: str,
    timeout: float,
    *,
    what: str = "command",
    abort: Abort | None = None,
    alive: Alive | None = None,
) -> None:
    """Run ``command`` with /bin/sh; raise StepFailed on non-zero exit or after ``timeout`` seconds.

    The command runs in its own session so that a timeout kills everything it started,
    not just the shell. Its output goes to a temporary file rather than a pipe, so a
    daemon it leaves running cannot hold the actuator until the timeout. When ``abort``
    returns True while it runs, it is killed the same way and ApplyAborted is raised.
    """
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                command,
                shell=True,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StepFailed(f"{what} {command!r} could not start: {exc}") from None
        until = time.monotonic() + timeout
        while True:
            left = until - time.monotonic()
            try:
                polled = abort is not None or alive is not None
                code = proc.wait(timeout=max(0.0, min(left, POLL) if polled else left))
                break
            except subprocess.TimeoutExpired:
                if alive is not None:
                    alive()
                if abort is not None and abort():
                    _kill(proc)
                    raise ApplyAborted(f"{what} {command!r} killed: stopped to fence") from None
                if time.monotonic() >= until:
                    _kill(proc)
                    raise StepFailed(
                        f"{what} {command!r} timed out after {timeout:g}s and was killed"
                    ) from None
        output.seek(0)
        said = output.read(64 * 1024).decode(errors="replace").strip()
    if code != 0:
        tail = said.splitlines()[-1][:200] if said else ""
        raise StepFailed(f"{what} {command!r} exited with {code}" + (f": {tail}" if tail else ""))
    if said:
        log.debug("%s %r said: %s", what, command, said[:500])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def with_retries(
    step: Callable[[], T],
    *,
    attempts: int,
    wait: float,
    what: str,
    budget: Budget = UNLIMITED,
) -> T:
    """Run ``step`` up to ``attempts`` times with exponential backoff from ``wait`` seconds.

    Before every retry ``budget.abort`` is asked whether to give up (ApplyAborted), also
    while waiting; no retry is started when its pause would reach ``budget.deadline``.
    The last StepFailed is raised when the attempts (or the time) are spent.
    """
    tries = 0

    def attempt() -> T:
        nonlocal tries
        tries += 1
        if tries > 1:
            budget.check(what)
        return step()

    def past_deadline(rs: object) -> bool:
        upcoming = float(getattr(rs, "upcoming_sleep", 0.0))
        return budget.deadline is not None and time.monotonic() + upcoming >= budget.deadline

    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)) | past_deadline,
        wait=wait_exponential(multiplier=wait, max=max(wait, 30.0)),
        retry=retry_if_exception_type(StepFailed),
        reraise=True,
        sleep=budget.pause,
        before_sleep=lambda rs: log.warning(
            "%s failed (attempt %d/%d): %s",
            what,
            rs.attempt_number,
            attempts,
            rs.outcome.exception() if rs.outcome else "",
        ),
    )
    return retrying(attempt)
