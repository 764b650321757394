"""Webhook alerts: delivery to a real local HTTP server, retries, filtering, and never blocking."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bpfailover.decider.alerts import (
    ALERT_KINDS,
    DeliveryError,
    KesWatch,
    WebhookAlerts,
    from_settings,
    summary,
)
from bpfailover.protocol.wire import DecisionEvent
from tests.brokers import free_port, wait_for

NOW = 1_750_000_000.0


class Hook:
    """A local webhook: answers the next statuses in ``script`` (then 200) and records bodies."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict, dict]] = []
        self.script: list[int] = []
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.delay:
                    time.sleep(hook.delay)
                status = hook.script.pop(0) if hook.script else 200
                hook.received.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/secret-token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def made() -> Iterator[list[WebhookAlerts]]:
    alerts: list[WebhookAlerts] = []
    yield alerts
    for a in alerts:
        a.stop(timeout=0.5)


def failover(**over: object) -> DecisionEvent:
    values: dict[str, object] = {
        "pool": "pool1",
        "at": NOW,
        "kind": "failover",
        "from_": "bp1",
        "to": "bp2",
        "epoch": 5,
        "reason": "bp1 tip stale (400s > 300s)",
    }
    values.update(over)
    return DecisionEvent(**values)  # type: ignore[arg-type]


def test_failover_event_is_posted_as_decision_event_json(hook: Hook, made: list[WebhookAlerts]) -> None:
    alerts = WebhookAlerts(hook.url).start()
    made.append(alerts)
    assert alerts.submit(failover())
    wait_for(lambda: hook.received, timeout=5, message="the webhook POST")
    path, headers, body = hook.received[0]
    assert path == "/hook/secret-token"
    assert headers["Content-Type"] == "application/json"
    assert DecisionEvent.model_validate(body) == failover()
    assert body["from"] == "bp1" and body["to"] == "bp2" and body["epoch"] == 5
    wait_for(lambda: alerts.counts.sent == 1, timeout=2, message="sent count")


def test_failed_posts_are_retried_with_backoff_until_delivered(hook: Hook, made: list[WebhookAlerts]) -> None:
    hook.script = [500, 503]
    alerts = WebhookAlerts(hook.url, retries=3, backoff=0.05).start()
    made.append(alerts)
    alerts.submit(failover())
    wait_for(lambda: alerts.counts.sent == 1, timeout=5, message="delivery after two 5xx")
    assert len(hook.received) == 3 and alerts.counts.failed == 0


def test_permanent_refusal_is_not_retried(hook: Hook, made: list[WebhookAlerts]) -> None:
    hook.script = [404]
    alerts = WebhookAlerts(hook.url, retries=3, backoff=0.05).start()
    made.append(alerts)
    alerts.submit(failover())
    wait_for(lambda: alerts.counts.failed == 1, timeout=5, message="give-up on 404")
    assert len(hook.received) == 1


def test_only_selected_kinds_are_sent(hook: Hook, made: list[WebhookAlerts]) -> None:
    alerts = WebhookAlerts(hook.url).start()
    made.append(alerts)
    for kind in ("control", "rejected", "switchover"):
        assert not alerts.submit(failover(kind=kind))
    for kind in sorted(ALERT_KINDS):
        assert alerts.submit(failover(kind=kind))
    wait_for(lambda: len(hook.received) == len(ALERT_KINDS), timeout=5, message="every alert kind")
    assert {body["kind"] for _, _, body in hook.received} == ALERT_KINDS
    assert alerts.counts.filtered == 3


def test_a_down_webhook_never_blocks_submit_and_the_queue_stays_bounded(made: list[WebhookAlerts]) -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    alerts = WebhookAlerts(url, queue_size=5, retries=50, backoff=0.5).start()
    made.append(alerts)
    started = time.monotonic()
    for i in range(200):
        alerts.submit(failover(epoch=i + 1))
    took = time.monotonic() - started
    assert took < 0.5  # 200 submits while every POST fails: no waiting on the network
    assert alerts.counts.dropped >= 200 - 5 - 1
    assert alerts.counts.sent == 0


def test_a_slow_webhook_does_not_delay_submit(hook: Hook, made: list[WebhookAlerts]) -> None:
    hook.delay = 0.3
    alerts = WebhookAlerts(hook.url, timeout=5).start()
    made.append(alerts)
    started = time.monotonic()
    alerts.submit(failover())
    alerts.submit(failover(kind="fenced"))
    assert time.monotonic() - started < 0.1
    assert alerts.flush(5.0)
    assert [b["kind"] for _, _, b in hook.received] == ["failover", "fenced"]


def test_slack_format_posts_one_text_line(hook: Hook, made: list[WebhookAlerts]) -> None:
    alerts = WebhookAlerts(hook.url, format="slack").start()
    made.append(alerts)
    alerts.submit(failover())
    wait_for(lambda: hook.received, timeout=5, message="the webhook POST")
    assert hook.received[0][2] == {
        "text": "[pool1] failover bp1 -> bp2 at epoch 5: bp1 tip stale (400s > 300s)"
    }
    assert summary(failover(dry_run=True)).startswith("[pool1] failover bp1 -> bp2 at epoch 5 (dry-run)")


def test_poster_exceptions_never_kill_the_delivery_thread(made: list[WebhookAlerts]) -> None:
    calls: list[str] = []

    def poster(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        calls.append(json.loads(body)["kind"])
        if len(calls) == 1:
            raise RuntimeError("bug in a poster")
        if len(calls) == 2:
            raise DeliveryError("connection refused")
        return 204

    alerts = WebhookAlerts("http://example.invalid/x", poster=poster, backoff=0.01).start()
    made.append(alerts)
    alerts.submit(failover())
    alerts.submit(failover(kind="frozen"))
    wait_for(lambda: alerts.counts.sent == 1, timeout=5, message="the second alert delivered")
    assert calls == ["failover", "frozen", "frozen"]


def test_invalid_settings_are_refused_and_no_url_means_no_alerts() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookAlerts("ftp://x/y")
    with pytest.raises(ValueError, match="format"):
        WebhookAlerts("http://x/y", format="xml")
    assert from_settings(None) is None and from_settings("") is None


def test_the_url_is_never_quoted_only_its_scheme_and_host() -> None:
    with pytest.raises(ValueError) as err:
        WebhookAlerts("gopher://hooks.example.org/T0/s3cr3t")
    assert "s3cr3t" not in str(err.value)
    alerts = WebhookAlerts("https://user:pw@hooks.example.org:8443/T0/s3cr3t?token=t0k")
    assert alerts.where == "https://hooks.example.org:8443/..."


def test_slack_text_is_one_line_even_when_the_reason_quotes_a_node() -> None:
    text = summary(failover(reason="bp1: apply error: x\n[pool1] recovered\x1b[31m"))
    assert text == "[pool1] failover bp1 -> bp2 at epoch 5: bp1: apply error: x\\n[pool1] recovered\\x1b[31m"


def test_kes_watch_alerts_once_per_node_until_the_key_is_rotated() -> None:
    watch = KesWatch(threshold=5)
    assert watch.observe("pool1", "bp1", 6, NOW) is None
    event = watch.observe("pool1", "bp1", 5, NOW)
    assert event is not None and event.kind == "kes_expiring" and event.to == "bp1"
    assert "5 KES periods left" in event.reason
    assert watch.observe("pool1", "bp1", 4, NOW) is None  # already warned
    assert watch.observe("pool1", "bp1", None, NOW) is None
    assert watch.observe("pool1", "bp1", 60, NOW) is None  # rotated
    assert watch.observe("pool1", "bp1", 3, NOW) is not None
