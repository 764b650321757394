"""Crash-safe file operations: a reader sees the old file or the new one, never a mix.

The recipe is the usual one: write a temporary file in the destination folder, fsync
it, rename it over the destination, then fsync the folder so the rename itself is
durable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically; keep its permissions unless ``mode`` is given."""
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    _replace_with(path, lambda handle: handle.write(data), mode)


def _replace_with(path: Path, fill: Callable[[BinaryIO], object], mode: int) -> None:
    """Write a temporary file beside ``path`` with ``fill``, fsync it, rename it over ``path``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` (replacing it) so that ``dst`` is always whole.

    Within one filesystem this is a rename. Across filesystems the file is copied to a
    temporary file beside ``dst``, fsynced and renamed into place before ``src`` is removed,
    so a crash leaves a whole file at ``dst``, at ``src``, or at both, never a partial one.
    """
    src, dst = Path(src), Path(dst)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with open(src, "rb") as source:
            _replace_with(dst, lambda out: shutil.copyfileobj(source, out), src.stat().st_mode & 0o7777)
        src.unlink()
    else:
        fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)
