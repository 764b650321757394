"""Alerts: POST selected DecisionEvents to a webhook, without ever slowing the decider.

``WebhookAlerts.submit(event)`` only filters and enqueues (a bounded queue; when
it is full the oldest alert is dropped and counted). A daemon thread delivers
each alert with retries and exponential backoff with jitter; a webhook that is
down, slow or refusing costs the decider nothing but a log line.

The body is the DecisionEvent's JSON (``format="json"``), or ``{"text": ...}``
with a one-line summary for Slack-compatible incoming webhooks (Slack,
Mattermost, Rocket.Chat; ``format="slack"``).

``KesWatch`` turns the ``kes_periods_left`` of tip reports into one
``kes_expiring`` event per node when it falls to the threshold (again after the
key was rotated and ran low once more).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bpfailover.logs import escape_control, log_exception
from bpfailover.protocol.wire import DecisionEvent
from bpfailover.settings import masked_url, url_problem

log = logging.getLogger("bpfailover.decider.alerts")

# DecisionEvent kinds worth waking someone up for. The decider also raises generic
# "alert" events (its reason says what) and "abandoned" (a target that failed to apply).
ALERT_KINDS: frozenset[str] = frozenset(
    {
        "failover",
        "fenced",
        "frozen",
        "no_healthy_standby",
        "not_forging",
        "clock_skew",
        "kes_expiring",
        "alert",
        "abandoned",
    }
)
PERMANENT_STATUS = frozenset({400, 401, 403, 404, 405, 410, 413, 422})  # retrying will not help

Poster = Callable[[str, bytes, dict[str, str], float], int]


class DeliveryError(Exception):
    """A POST that did not succeed; ``permanent`` means retrying will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST with urllib; return the HTTP status, raise DeliveryError on failure."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}", permanent=exc.code in PERMANENT_STATUS) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(str(reason).replace(url, masked_url(url))) from None


def summary(event: DecisionEvent) -> str:
    """One human line: '[pool1] failover bp1 -> bp2 at epoch 5: producer tip stale (400s)'."""
    who = f" {event.from_ or '-'} -> {event.to or '-'}" if (event.from_ or event.to) else ""
    epoch = f" at epoch {event.epoch}" if event.epoch else ""
    dry = " (dry-run)" if event.dry_run else ""
    reason = f": {event.reason}" if event.reason else ""
    # A reason may quote a node's own error text: one line in the chat, no terminal escapes.
    return escape_control(f"[{event.pool}] {event.kind}{who}{epoch}{dry}{reason}")


@dataclass
class AlertCounts:
    sent: int = 0
    failed: int = 0  # gave up after the retries (or a permanent refusal)
    dropped: int = 0  # queue full: the oldest alert was discarded
    filtered: int = 0  # kind not selected


class WebhookAlerts:
    """Delivers selected events to one webhook URL from a background thread."""

    def __init__(
        self,
        url: str,
        *,
        kinds: Iterable[str] = ALERT_KINDS,
        format: str = "json",
        timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        queue_size: int = 100,
        headers: dict[str, str] | None = None,
        poster: Poster = http_post,
    ) -> None:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(f"webhook URL {problem}")
        if format not in ("json", "slack"):
            raise ValueError(f"webhook format must be 'json' or 'slack', got {format!r}")
        self.url = url
        self.kinds = frozenset(kinds)
        self.format = format
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.headers = {"Content-Type": "application/json", "User-Agent": "bpfailover", **(headers or {})}
        self.counts = AlertCounts()
        self._post = poster
        self._queue: queue.Queue[DecisionEvent] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Never log the full URL: webhook URLs usually embed a secret token (and the netloc
        # may hold user:password).
        self.where = masked_url(url)

    def wanted(self, event: DecisionEvent) -> bool:
        return event.kind in self.kinds

    def submit(self, event: DecisionEvent) -> bool:
        """Queue ``event`` if its kind is selected; never blocks. True if queued."""
        if not self.wanted(event):
            self.counts.filtered += 1
            return False
        with self._lock:
            self._idle.clear()
            while True:
                try:
                    self._queue.put_nowait(event)
                    return True
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self._queue.task_done()
                    except queue.Empty:
                        continue
                    self.counts.dropped += 1
                    if self.counts.dropped == 1:
                        log.warning(
                            "alert queue full (webhook %s is slow or down): dropping oldest", self.where
                        )

    def body(self, event: DecisionEvent) -> bytes:
        if self.format == "slack":
            return json.dumps({"text": summary(event)}).encode()
        return event.to_json()

    # --- delivery thread ---------------------------------------------------------------------

    def start(self) -> WebhookAlerts:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="bpf-alerts", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread; alerts still queued after ``timeout`` seconds are abandoned."""
        if self._thread is None:
            return
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._thread = None

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty and nothing is in flight; True if it got there."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._idle.set()
                continue
            try:
                self._deliver(event)
            except Exception:  # the thread must survive anything
                log_exception(log, "internal error delivering an alert (ignored)")
            finally:
                self._queue.task_done()
                with self._lock:
                    if self._queue.empty():
                        self._idle.set()

    def _deliver(self, event: DecisionEvent) -> None:
        body = self.body(event)
        for attempt in range(1, self.retries + 2):
            try:
                status = self._post(self.url, body, self.headers, self.timeout)
            except DeliveryError as exc:
                if exc.permanent or attempt > self.retries or self._stop.is_set():
                    self.counts.failed += 1
                    log.warning(
                        "alert %s for pool %s not delivered to %s after %d attempt(s): %s",
                        event.kind,
                        event.pool,
                        self.where,
                        attempt,
                        exc,
                    )
                    return
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.debug("alert delivery to %s failed (%s); retrying in %.1fs", self.where, exc, delay)
                if self._stop.wait(delay):
                    self.counts.failed += 1
                    return
                continue
            self.counts.sent += 1
            log.info(
                "alert %s for pool %s delivered to %s (HTTP %d)", event.kind, event.pool, self.where, status
            )
            return


class KesWatch:
    """One ``kes_expiring`` event per node when its KES periods left fall to ``threshold``."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._warned: set[tuple[str, str]] = set()

    def observe(self, pool: str, node: str, periods_left: int | None, now: float) -> DecisionEvent | None:
        if periods_left is None:
            return None
        key = (pool, node)
        if periods_left > self.threshold:
            self._warned.discard(key)  # rotated: warn again next time it runs low
            return None
        if key in self._warned:
            return None
        self._warned.add(key)
        return DecisionEvent(
            pool=pool,
            at=now,
            kind="kes_expiring",
            to=node,
            reason=f"{node}: {periods_left} KES periods left (alert at {self.threshold}): rotate the KES key",
        )


def from_settings(
    url: str | None, *, kinds: Iterable[str] | None = None, format: str = "json", start: bool = True
) -> WebhookAlerts | None:
    """A started WebhookAlerts, or None when no URL is configured."""
    if not url:
        return None
    alerts = WebhookAlerts(url, kinds=kinds if kinds is not None else ALERT_KINDS, format=format)
    return alerts.start() if start else alerts
