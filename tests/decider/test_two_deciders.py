"""Two decider processes for one pool on the real broker: the standby takes over when the active one
dies and fails over; the first one restarted defers, gets the pool back, and nobody duels."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfailover.protocol.wire import DeciderStatus
from tests.brokers import BrokerHandle, wait_for
from tests.decider.test_service import FAST, FakeNode, Observer, clean, nodes, observer  # noqa: F401

pytestmark = pytest.mark.broker

DELAY = 1.5  # takeover_delay


@pytest.fixture
def spawn(clean: BrokerHandle, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:  # noqa: F811
    made: list[subprocess.Popen[bytes]] = []

    def start(config: str, log_name: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPF_")}
        env.update({f"BPF_DECIDER__{k.upper()}": str(v) for k, v in FAST.items()})
        env["BPF_DECIDER__TAKEOVER_DELAY"] = str(DELAY)
        env["BPF_MQTT__KEEPALIVE"] = "5"
        with open(tmp_path / log_name, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "bpfailover.cli", "decider", "-c", str(clean.config_path(config))],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        made.append(process)
        return process

    yield start
    for process in made:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def presences(broker: BrokerHandle) -> dict[str, DeciderStatus]:
    """Each decider's retained presence, by decider id."""
    found = broker.retained(f"{broker.prefix}/{broker.pool}/deciders/+", timeout=1.0)
    return {t.rsplit("/", 1)[1]: DeciderStatus.model_validate_json(p) for t, p in found.items() if p}


def test_the_standby_takes_over_from_a_dead_decider_and_hands_back_without_a_duel(
    clean: BrokerHandle,  # noqa: F811
    spawn: Callable[..., subprocess.Popen[bytes]],
    nodes: Callable[..., FakeNode],  # noqa: F811
    observer: Observer,  # noqa: F811
    tmp_path: Path,
) -> None:
    bp1, bp2 = nodes("bp1"), nodes("bp2")
    first = spawn("decider", "decider.log")
    wait_for(lambda: bp1.role == "producer", 15, "bp1 bootstrapped by the first decider")
    spawn("decider-2", "decider-2.log")
    wait_for(lambda: "decider-2" in presences(clean), 10, "the standby's presence")
    wait_for(lambda: presences(clean)["decider-2"].mode == "standby", 10, "the standby to defer")
    assert {c.decider for c in observer.roles()} == {"decider"}

    first.kill()  # a crash: its Will says offline; the standby waits takeover_delay
    first.wait(5)
    wait_for(lambda: presences(clean)["decider-2"].mode == "active", 15, "the standby to take over")
    bp1.stall()
    wait_for(lambda: bp2.role == "producer", 15, "a failover to bp2 by the standby")
    failover = [c for c in observer.roles() if c.epoch == 2]
    assert {c.decider for c in failover} == {"decider-2"} and (bp1.role, bp1.epoch) == ("relay", 2)

    sent = len(observer.roles())
    spawn("decider", "decider-again.log")
    wait_for(lambda: presences(clean)["decider"].mode == "active", 20, "the preferred decider back in charge")
    assert presences(clean)["decider-2"].mode == "standby"
    time.sleep(1.0)  # a few ticks of both: quiet
    assert len(observer.roles()) == sent, "no command, no epoch fought over"
    assert bp2.role == "producer" and bp2.epoch == 2 and bp1.role == "relay"
    assert "is now active" in (tmp_path / "decider-again.log").read_text()


def test_a_second_decider_with_the_same_id_refuses_to_start(
    clean: BrokerHandle,  # noqa: F811
    spawn: Callable[..., subprocess.Popen[bytes]],
    nodes: Callable[..., FakeNode],  # noqa: F811
    tmp_path: Path,
) -> None:
    bp1 = nodes("bp1")
    nodes("bp2")
    first = spawn("decider", "first.log")
    wait_for(lambda: bp1.role == "producer", 15, "bp1 bootstrapped")
    second = spawn("decider", "second.log")
    assert second.wait(15) == 1
    line = (tmp_path / "second.log").read_text()
    assert "another decider with id decider is running (instance " in line
    assert "give each decider its own [decider] id" in line
    assert first.poll() is None, "the first one goes on"
