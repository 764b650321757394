"""``bpfailover publisher``: sample the node's tip every interval and publish it.

The I/O shell around ``report.TipReporter``: a timer, the tip source, the MQTT
link and the signals. Reports go out retained at QoS 1 on
``{prefix}/{pool}/tip/{node}``. While the broker is unreachable the publisher
keeps sampling but queues nothing; when the connection comes back it sends one
fresh report at once rather than a backlog of stale ones.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from bpfailover.link import BrokerRefused, LinkEvent, MqttLink, make_client_id
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import TipReport
from bpfailover.publisher.chain import chain_for
from bpfailover.publisher.report import Outcome, SourceChange, TipReporter
from bpfailover.publisher.sources import SourceError, TipSource, make_source
from bpfailover.settings import BpfConfig

log = logging.getLogger("bpfailover.publisher")

WAKE_UP = 0.2  # seconds between checks of the stop flag while waiting for the next sample


class Publisher:
    """One publisher: its source, reporter and link, driven by ``run_until``."""

    def __init__(self, config: BpfConfig) -> None:
        self.pool = config.require_pool_id()
        self.node = config.require_node_name()
        self.settings = config.publisher
        self.chain = chain_for(self.settings)
        self.source: TipSource = make_source(self.settings, self.chain, pool=self.pool, node=self.node)
        self.topic = Topics(config.mqtt.prefix).tip(self.pool, self.node)
        self.reporter = TipReporter(pool=self.pool, node=self.node, chain=self.chain, source=self.source.name)
        self.link = MqttLink(config.mqtt, make_client_id("publisher", self.pool, self.node))
        self.latest: Outcome | None = None
        self.published = 0
        self._last_publish_mono = float("-inf")
        self._publish_failed = False
        self._internal_error_logged = False

    # --- one step each -------------------------------------------------------------------------

    def sample(self) -> Outcome:
        try:
            return self.source.sample()
        except SourceError as exc:
            return exc
        except Exception as exc:  # a bug in a source must not stop the reports
            if not self._internal_error_logged:
                self._internal_error_logged = True
                log.exception("internal error reading the tip (reported as ok=false)")
            return SourceError(f"internal error reading the tip: {exc!r}")

    def tick(self) -> TipReport:
        """Sample the tip and publish the report if the broker is connected."""
        self.latest = self.sample()
        report, change = self.reporter.report(self.latest, time.time())
        if change is not None:
            self._log_change(change)
        if self.link.connected.is_set():
            self.publish(report)
        else:
            log.debug("broker not connected: report seq %d not sent (%s)", report.seq, _summary(report))
        return report

    def on_link_event(self, event: LinkEvent) -> None:
        if event.kind == "disconnected":
            log.info("broker connection lost: still sampling, reports resume on reconnect")
            return
        if event.kind != "connected" or self.latest is None:
            return
        if self._last_publish_mono >= event.at_mono:
            return  # a report already went out on this connection
        report, _ = self.reporter.report(self.latest, time.time(), new_sample=False)
        self.publish(report)
        log.info("broker connected: sent the latest tip report (seq %d, %s)", report.seq, _summary(report))

    def publish(self, report: TipReport) -> None:
        try:
            self.link.publish(self.topic, report.to_json(), retain=True, latest=True)
        except Exception as exc:
            if not self._publish_failed:
                log.error("cannot publish tip report on %s: %s", self.topic, exc)
            self._publish_failed = True
            return
        if self._publish_failed:
            log.info("publishing tip reports on %s again", self.topic)
        self._publish_failed = False
        self.published += 1
        self._last_publish_mono = time.monotonic()
        log.debug("published seq %d on %s: %s", report.seq, self.topic, _summary(report))

    def _log_change(self, change: SourceChange) -> None:
        source = self.source.name
        if change.kind == "first_tip":
            log.info("tip source %s ok: %s", source, change.detail)
        elif change.kind == "failing":
            log.warning("tip source %s failing (reporting ok=false): %s", source, change.detail)
        else:
            log.info(
                "tip source %s recovered after %d failed samples: %s",
                source,
                change.failed_samples,
                change.detail,
            )

    # --- the loop ------------------------------------------------------------------------------

    def run_until(self, stop: threading.Event) -> None:
        interval = self.settings.interval
        next_at = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_at:
                self.tick()
                next_at = max(next_at + interval, time.monotonic())
            wait = min(max(next_at - time.monotonic(), 0.0), WAKE_UP)
            event = self.link.get(timeout=wait)
            if isinstance(event, LinkEvent):
                self.on_link_event(event)


def _summary(report: TipReport) -> str:
    if not report.ok:
        return f"ok=false: {report.error}"
    return f"slot {report.slot}, block {report.block}, tip_time {report.tip_time:.0f}"


def _on_signals(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM/SIGINT; return a function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, _frame: object) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def run(config: BpfConfig, *, stop: threading.Event | None = None) -> int:
    """Publish this node's tip until SIGTERM/SIGINT (or ``stop``); return the exit code."""
    publisher = Publisher(config)
    stop = stop or threading.Event()
    restore = _on_signals(stop)
    log.info(
        "publisher for %s/%s: source %s, network %s, every %gs on %s",
        publisher.pool,
        publisher.node,
        publisher.source.name,
        publisher.chain.network,
        publisher.settings.interval,
        publisher.topic,
    )
    try:
        try:
            publisher.link.start(attempts=1, persistent=True)
        except BrokerRefused as exc:
            log.error("%s", exc)
            return 1
        publisher.run_until(stop)
    finally:
        publisher.link.stop()
        restore()
    log.info(
        "publisher stopped: %d reports built, %d published (boot %s)",
        publisher.reporter.seq,
        publisher.published,
        publisher.reporter.boot,
    )
    return 0
