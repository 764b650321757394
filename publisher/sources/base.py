"""What every tip source returns, and how it fails."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

MAX_REASON = 300


NodeStatus = Literal["starting", "dead"]


class SourceError(Exception):
    """The tip could not be read; ``str(err)`` is a one-line reason for the report.

    ``status``: what the source could tell about the node, if anything: ``starting`` (it runs
    but is not up yet, e.g. replaying its ledger) or ``dead`` (it does not run)."""

    def __init__(self, reason: str, status: NodeStatus | None = None) -> None:
        super().__init__(one_line(reason))
        self.status = status


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """The first non-empty line of ``text``, shortened to ``limit`` characters."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "") or "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class TipSample:
    """One reading of the node's chain tip; ``slot`` is the slot of the tip block."""

    slot: int
    block: int | None = None
    epoch: int | None = None
    hash: str | None = None
    forging: bool | None = None
    kes_periods_left: int | None = None
    peers: int | None = None
    sync_progress: str | None = None  # informational only, never used for tip age

    def same_tip(self, other: TipSample | None) -> bool:
        if other is None:
            return False
        return (self.slot, self.block, self.hash) == (other.slot, other.block, other.hash)


class TipSource(Protocol):
    """A way of reading the tip: ``sample()`` returns a TipSample or raises SourceError."""

    name: str

    def sample(self) -> TipSample: ...


def count(value: object, what: str) -> int | None:
    """A non-negative integer (or None) from JSON or a metric value; else a SourceError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SourceError(f"{what} is not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise SourceError(f"{what} is not a whole number: {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise SourceError(f"{what} is not a number: {str(value)[:40]!r}")
    if value < 0:
        raise SourceError(f"{what} is negative: {value}")
    return value


def required_count(value: object, what: str) -> int:
    result = count(value, what)
    if result is None:
        raise SourceError(f"{what} is missing")
    return result
