"""Running the operator's shell commands: a timeout that kills the whole process group,
and bounded retries with tenacity.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger("bpfailover.actuator")

T = TypeVar("T")


class StepFailed(Exception):
    """One step of applying a role failed (command exit, timeout, missing file, signal)."""


class ApplyAborted(Exception):
    """Retries were stopped because the node must fence instead."""


def run_command(command: str, timeout: float, *, what: str = "command") -> None:
    """Run ``command`` with /bin/sh; raise StepFailed on non-zero exit or after ``timeout`` seconds.

    The command runs in its own session so that a timeout kills everything it started,
    not just the shell. Its output goes to a temporary file rather than a pipe, so a
    daemon it leaves running cannot hold the actuator until the timeout.
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
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise StepFailed(f"{what} {command!r} timed out after {timeout:g}s and was killed") from None
        output.seek(0)
        said = output.read(64 * 1024).decode(errors="replace").strip()
    if code != 0:
        tail = said.splitlines()[-1][:200] if said else ""
        raise StepFailed(f"{what} {command!r} exited with {code}" + (f": {tail}" if tail else ""))
    if said:
        log.debug("%s %r said: %s", what, command, said[:500])


def with_retries(
    step: Callable[[], T],
    *,
    attempts: int,
    wait: float,
    what: str,
    abort: Callable[[], bool] | None = None,
) -> T:
    """Run ``step`` up to ``attempts`` times with exponential backoff from ``wait`` seconds.

    Before every retry ``abort`` is asked whether to give up (ApplyAborted); the last
    StepFailed is raised when the attempts are spent.
    """
    tries = 0

    def attempt() -> T:
        nonlocal tries
        tries += 1
        if tries > 1 and abort is not None and abort():
            raise ApplyAborted(f"{what}: stopped retrying to fence")
        return step()

    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=wait, max=max(wait, 30.0)),
        retry=retry_if_exception_type(StepFailed),
        reraise=True,
        before_sleep=lambda rs: log.warning(
            "%s failed (attempt %d/%d): %s",
            what,
            rs.attempt_number,
            attempts,
            rs.outcome.exception() if rs.outcome else "",
        ),
    )
    return retrying(attempt)
