"""Run a command that prints a tip, with a deadline that also kills its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from bpfailover.publisher.sources.base import SourceError, one_line


def run_command(
    argv: Sequence[str], *, timeout: float, what: str, env: Mapping[str, str] | None = None
) -> bytes:
    """Return the command's stdout; raise SourceError if it cannot start, times out or fails."""
    return run_command_full(argv, timeout=timeout, what=what, env=env)[0]


def run_command_full(
    argv: Sequence[str], *, timeout: float, what: str, env: Mapping[str, str] | None = None
) -> tuple[bytes, bytes]:
    """Like ``run_command``, with the stderr of a command that succeeded (its warnings)."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # its own process group, so a timeout kills the whole tree
        )
    except FileNotFoundError:
        raise SourceError(f"{what}: command not found: {argv[0]}") from None
    except PermissionError:
        raise SourceError(f"{what}: permission denied: {argv[0]}") from None
    except OSError as exc:
        raise SourceError(f"{what}: cannot run {argv[0]}: {exc}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SourceError(f"{what} did not answer within {timeout:g}s") from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        detail = one_line(err.decode("utf-8", errors="replace"), 200) if err.strip() else "no message"
        status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        raise SourceError(f"{what} failed ({status}): {detail}")
    return out, err


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a child that left the group still holds the pipes
        proc.kill()
