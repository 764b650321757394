"""Building TipReports from samples: pure logic, the clock is passed in.

Every report carries the publisher's boot id (random per process start) and a
sequence number that only grows within a boot, so a subscriber can tell a
restarted publisher from a repeated message. A failed sample becomes an ok=false
report with a one-line reason: "source broken" is visible, unlike "publisher
gone", where reports simply stop.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from bpfailover.protocol.wire import TipReport, summarise
from bpfailover.publisher.chain import Chain
from bpfailover.publisher.sources.base import SourceError, TipSample, one_line

Outcome = TipSample | SourceError

# How far a tip's slot time may be ahead of this host's clock. A node does not adopt blocks
# from the future beyond its own small clock-skew allowance (seconds); 30 s leaves room for a
# host clock a little behind, and is far below what makes a tip look fresh for long.
MAX_TIP_AHEAD = 30.0


@dataclass(frozen=True)
class SourceChange:
    """The source's health changed: the first tip, a failure starting, or a recovery."""

    kind: Literal["first_tip", "failing", "recovered"]
    detail: str
    failed_samples: int = 0


def new_boot_id() -> str:
    return secrets.token_hex(8)


class TipReporter:
    """Turns samples into numbered TipReports and notices when the source's health changes."""

    def __init__(self, *, pool: str, node: str, chain: Chain, source: str, boot: str | None = None) -> None:
        self.pool = pool
        self.node = node
        self.chain = chain
        self.source = source
        self.boot = boot or new_boot_id()
        self.seq = 0
        self.healthy: bool | None = None
        self.failed_samples = 0
        self._tip: TipSample | None = None
        self._tip_time: float | None = None

    def report(
        self, outcome: Outcome, now: float, *, new_sample: bool = True
    ) -> tuple[TipReport, SourceChange | None]:
        """The next report for ``outcome`` stamped at ``now``, and the health change it makes, if any.

        ``new_sample=False`` re-sends the last outcome under a new seq (after a reconnect)
        without counting it as another sample.
        """
        self.seq += 1
        if isinstance(outcome, TipSample):
            ahead = self.chain.time_of(outcome.slot) - now
            if ahead > MAX_TIP_AHEAD:
                # A tip the decider would take as fresh for ever: a wrong network (its slot
                # offset), or this host's clock far behind. Refused, never sent as ok.
                outcome = SourceError(
                    f"tip slot {outcome.slot} is {ahead:.0f}s ahead of this host's clock (more than "
                    f"{MAX_TIP_AHEAD:g}s): check publisher.network ({self.chain.network}) and the clock (NTP)"
                )
        if isinstance(outcome, TipSample):
            try:
                report = self._ok_report(outcome, now)
            except ValidationError as exc:
                outcome = SourceError(f"source gave an unusable tip: {summarise(exc, 'tip')}")
            else:
                return report, self._health(True, outcome) if new_sample else None
        report = TipReport(
            **self._identity(now), ok=False, error=one_line(str(outcome)), node_status=outcome.status
        )
        return report, self._health(False, outcome) if new_sample else None

    def _identity(self, now: float) -> dict[str, Any]:
        """The fields every report carries, ok or not."""
        return {
            "pool": self.pool,
            "node": self.node,
            "boot": self.boot,
            "seq": self.seq,
            "sent_at": now,
            "network": self.chain.network,
            "source": self.source,
        }

    def _ok_report(self, tip: TipSample, now: float) -> TipReport:
        # tip_time comes from the slot alone; a tip that has not moved keeps its time.
        tip_time = self._tip_time if tip.same_tip(self._tip) else self.chain.time_of(tip.slot)
        report = TipReport(
            **self._identity(now),
            ok=True,
            slot=tip.slot,
            block=tip.block,
            epoch=tip.epoch,
            hash=tip.hash,
            tip_time=tip_time,
            forging=tip.forging,
            kes_periods_left=tip.kes_periods_left,
            peers=tip.peers,
        )
        self._tip, self._tip_time = tip, tip_time
        return report

    def _health(self, ok: bool, outcome: Outcome) -> SourceChange | None:
        before, self.healthy = self.healthy, ok
        if not ok:
            self.failed_samples += 1
            return SourceChange("failing", str(outcome)) if before is not False else None
        failed, self.failed_samples = self.failed_samples, 0
        if before is None:
            return SourceChange("first_tip", describe(outcome))
        if before is False:
            return SourceChange("recovered", describe(outcome), failed)
        return None


def describe(outcome: Outcome) -> str:
    if isinstance(outcome, SourceError):
        return str(outcome)
    parts = [f"slot {outcome.slot}"]
    if outcome.block is not None:
        parts.append(f"block {outcome.block}")
    if outcome.epoch is not None:
        parts.append(f"epoch {outcome.epoch}")
    return ", ".join(parts)
