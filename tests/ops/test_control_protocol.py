"""Control commands on a real broker, with the decider's side played by the test (decider user).

These pin the operator's half of the protocol: the request published as the operator,
the answer matched by request_id, refusals, timeouts and argument handling. The tests
in test_ops_live.py run the same commands against the real ``bpfailover decider``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bpfailover.cli import main
from bpfailover.link import Incoming, MqttLink
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import ControlRequest, DecisionEvent, decode
from tests.brokers import BrokerHandle

pytestmark = pytest.mark.broker

Answer = Callable[[ControlRequest], tuple[bool, str] | None]


class PlayedDecider:
    """Answers each ControlRequest with ``answer(request)``; None = stay silent."""

    def __init__(self, broker: BrokerHandle, answer: Answer, *, decoy: bool = False) -> None:
        self.topics = Topics(broker.prefix)
        self.pool = broker.pool
        self.answer = answer
        self.decoy = decoy
        self.requests: list[ControlRequest] = []
        self.link = MqttLink(
            broker.mqtt_settings("decider"),
            f"played-decider-{time.monotonic_ns()}",
            subscriptions=[self.topics.control(self.pool)],
        )
        self.link.start(attempts=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.link.get(timeout=0.1)
            if not isinstance(item, Incoming):
                continue
            request = decode(ControlRequest, item.payload, pool=self.pool)
            self.requests.append(request)
            verdict = self.answer(request)
            if verdict is None:
                continue
            ok, reason = verdict
            if self.decoy:  # someone else's answer first: must be ignored
                self._event(ok=not ok, reason="someone else's request", request_id="not-yours")
            self._event(ok=ok, reason=f"{request.action}: {reason}", request_id=request.request_id)

    def _event(self, *, ok: bool, reason: str, request_id: str) -> None:
        event = DecisionEvent(
            pool=self.pool, at=time.time(), kind="control", reason=reason, request_id=request_id, ok=ok
        )
        self.link.publish_wait(self.topics.events(self.pool), event.to_json())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.link.stop()


@pytest.fixture
def played(ops_broker: BrokerHandle) -> Iterator[Callable[..., PlayedDecider]]:
    made: list[PlayedDecider] = []

    def make(answer: Answer, **kw: bool) -> PlayedDecider:
        d = PlayedDecider(ops_broker, answer, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def ops(broker: BrokerHandle, *args: str) -> int:
    return main([args[0], "-c", str(broker.config_path("operator")), *args[1:]])


def test_switchover_publishes_a_request_and_prints_the_answer(
    ops_broker: BrokerHandle, played: Callable[..., PlayedDecider], capsys: pytest.CaptureFixture[str]
) -> None:
    decider = played(lambda r: (True, f"switchover to {r.to} started at epoch 7"), decoy=True)
    code = ops(ops_broker, "switchover", "--to", "bp2")
    out = capsys.readouterr().out
    assert code == 0
    assert out == "switchover accepted: switchover to bp2 started at epoch 7\n"
    (request,) = decider.requests
    assert request.action == "switchover" and request.to == "bp2" and request.pool == ops_broker.pool
    assert not request.force and len(request.request_id) == 32


def test_a_refusal_exits_1_with_the_reason(
    ops_broker: BrokerHandle, played: Callable[..., PlayedDecider], capsys: pytest.CaptureFixture[str]
) -> None:
    played(lambda r: (False, f"{r.to} is not eligible: stale tip (6m > 5m)"))
    code = ops(ops_broker, "switchover", "--to", "bp3")
    assert code == 1
    assert capsys.readouterr().out == "switchover refused: bp3 is not eligible: stale tip (6m > 5m)\n"


def test_no_decider_is_a_clear_timeout_error_exit_3(
    ops_broker: BrokerHandle, played: Callable[..., PlayedDecider], capsys: pytest.CaptureFixture[str]
) -> None:
    silent = played(lambda r: None)
    started = time.monotonic()
    code = ops(ops_broker, "resume", "--timeout", "1.5")
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 3
    assert "no answer from the decider within 1.5s: is `bpfailover decider` running?" in err
    assert 1.5 <= took < 5
    assert [r.action for r in silent.requests] == ["resume"]  # it was sent, just not answered


def test_the_read_only_monitor_file_cannot_send_a_request(
    ops_broker: BrokerHandle, played: Callable[..., PlayedDecider], capsys: pytest.CaptureFixture[str]
) -> None:
    ops_broker.require_own_broker("the bundle's ACL")
    decider = played(lambda r: (True, "done"))
    code = main(["switchover", "-c", str(ops_broker.config_path("monitor")), "--to", "bp2", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "operator's configuration" in err
    assert ops(ops_broker, "resume") == 0  # the operator's request goes through, and comes first
    assert [r.action for r in decider.requests] == ["resume"]


def test_flags_become_request_fields(
    ops_broker: BrokerHandle, played: Callable[..., PlayedDecider], capsys: pytest.CaptureFixture[str]
) -> None:
    decider = played(lambda r: (True, "done"))
    now = time.time()
    assert ops(ops_broker, "failover", "--to", "bp3", "--force") == 0
    assert ops(ops_broker, "pause", "--until", "2h") == 0
    assert ops(ops_broker, "maintenance", "bp2", "on", "--until", "30m") == 0
    assert ops(ops_broker, "maintenance", "bp2", "off") == 0
    failover, pause, maint_on, maint_off = decider.requests
    assert failover.action == "failover" and failover.to == "bp3" and failover.force
    assert pause.action == "pause" and pause.until is not None and abs(pause.until - (now + 7200)) < 10
    assert maint_on.node == "bp2" and maint_on.enabled and abs(maint_on.until - (now + 1800)) < 10  # type: ignore[operator]
    assert maint_off.node == "bp2" and not maint_off.enabled and maint_off.until is None
    assert all(r.requested_by and r.sent_at for r in decider.requests)
    assert len({r.request_id for r in decider.requests}) == 4
    capsys.readouterr()


def test_bad_until_is_a_one_line_usage_error(
    ops_broker: BrokerHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ops(ops_broker, "pause", "--until", "soon") == 2
    err = capsys.readouterr().err
    assert err.startswith("bpfailover: error: --until: invalid duration 'soon'") and err.count("\n") == 1
