"""``bpfailover status`` against a real broker: retained messages published as the test admin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bpfailover.cli import main
from bpfailover.protocol.topics import Topics
from tests.brokers import BrokerHandle, free_port, wait_for
from tests.ops import fabricate as fab

pytestmark = pytest.mark.broker


def publish_pool(broker: BrokerHandle, *, producer_age: float = 3.0, now: float | None = None) -> None:
    now = now or time.time()
    t = Topics(broker.prefix)
    pool = broker.pool
    broker.publish(t.decider(pool), fab.decider(pool, now, producer="bp1", epoch=2).to_json(), retain=True)
    for node in ("bp1", "bp2", "bp3"):
        role = "producer" if node == "bp1" else "relay"
        age = producer_age if node == "bp1" else 2.0
        broker.publish(t.tip(pool, node), fab.tip(pool, node, now, age=age, kes=30).to_json(), retain=True)
        broker.publish(
            t.state(pool, node), fab.state(pool, node, now, role=role, epoch=2).to_json(), retain=True
        )
        broker.publish(
            t.role(pool, node), fab.command(pool, node, now, role=role, epoch=2).to_json(), retain=True
        )


def status_json(
    broker: BrokerHandle, capsys: pytest.CaptureFixture[str], *extra: str, user: str = "operator"
) -> tuple[int, dict]:
    code = main(["status", "-c", str(broker.config_path(user)), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("user", ["operator", "monitor"])  # monitor: the read-only user
def test_status_reads_retained_state_as_operator_and_exits_0(
    clean_broker: BrokerHandle, capsys: pytest.CaptureFixture[str], user: str
) -> None:
    publish_pool(clean_broker)
    started = time.monotonic()
    code, data = status_json(clean_broker, capsys, user=user)
    took = time.monotonic() - started
    assert code == 0, data["pools"][0]["problems"]
    pool = data["pools"][0]
    assert pool["producer"] == "bp1" and pool["epoch"] == 2 and pool["decider"]["online"]
    nodes = {n["name"]: n for n in pool["nodes"]}
    assert nodes["bp2"]["eligible"] and nodes["bp3"]["eligible"]
    assert nodes["bp1"]["desired"] == "producer" and nodes["bp1"]["applied"] == "producer"
    assert nodes["bp1"]["kes_periods_left"] == 30
    assert took < 3.0  # stops once every retained message is in, not at --timeout


def test_status_table_and_exit_2_when_the_producer_is_stale(
    clean_broker: BrokerHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_pool(clean_broker, producer_age=900)
    code = main(["status", "-c", str(clean_broker.config_path("operator"))])
    out = capsys.readouterr().out
    assert code == 2
    assert "status: PRODUCER PROBLEM: producer bp1 tip is stale (15m old)" in out
    assert out.splitlines()[1].split()[:3] == ["NODE", "PRIO", "DESIRED"]


def test_status_of_an_empty_pool_exits_2_and_names_the_problems(
    clean_broker: BrokerHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = status_json(clean_broker, capsys, "--timeout", "2")
    problems = data["pools"][0]["problems"]
    assert code == 2
    assert "no node applies the producer role" in problems
    assert any("no decider status" in p for p in problems)


def test_status_without_a_broker_exits_2_with_one_line(
    ops_broker: BrokerHandle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BPF_MQTT__PORT", str(free_port()))
    monkeypatch.setenv("BPF_MQTT__CONNECT_TIMEOUT", "2")
    code = main(["status", "-c", str(ops_broker.config_path("operator"))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("bpfailover: error: cannot reach broker") and err.count("\n") == 1


def test_status_watch_refreshes_on_new_messages(clean_broker: BrokerHandle) -> None:
    publish_pool(clean_broker)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bpfailover.cli",
            "status",
            "--watch",
            "--json",
            "-c",
            str(clean_broker.config_path("operator")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["code"] == 0
        t = Topics(clean_broker.prefix)
        clean_broker.publish(
            t.state(clean_broker.pool, "bp2"),
            fab.state(clean_broker.pool, "bp2", time.time(), epoch=2, online=False).to_json(),
            retain=True,
        )

        def bp2_offline() -> bool:
            data = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            bp2 = next(n for n in data["pools"][0]["nodes"] if n["name"] == "bp2")
            return bp2["why_not"] == "actuator offline"

        wait_for(bp2_offline, timeout=10, message="status --watch to show bp2 offline")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0  # the last refresh was healthy: bp3 is still a standby
