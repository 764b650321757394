"""Counting of rejected input: every rejection is counted by reason and logged once per reason."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from prometheus_client import Counter as PromCounter

REJECTED = PromCounter(
    "bpfailover_rejected_messages",
    "Messages rejected, by component and reason",
    ["component", "reason"],
)


class Rejections:
    """Counts rejections; the first of each reason is logged at WARNING, later ones at DEBUG."""

    def __init__(self, component: str, logger: logging.Logger) -> None:
        self.component = component
        self.log = logger
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reject(self, reason: str, detail: str, *, topic: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
            first = self.counts[reason] == 1
        REJECTED.labels(self.component, reason).inc()
        where = f" on {topic}" if topic else ""
        if first:
            self.log.warning(
                "rejected %s%s: %s (further %s rejections logged at debug)", reason, where, detail, reason
            )
        else:
            self.log.debug("rejected %s%s: %s", reason, where, detail)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())
