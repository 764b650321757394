"""``bpfailover actuator`` as a real process with the sighup method, against a real mosquitto and
the stand-in cardano-node: NodeState carries the forging state the actuator sees, and each role
is reported applied once the node is seen running it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.actuator.helpers import make_node_files
from tests.actuator.test_service import ActuatorProcess, Node, processes, start_actuator
from tests.actuator.test_sighup_observed import StartNode, start_node
from tests.brokers import wait_for

__all__ = ["processes", "start_node"]  # fixtures, used by name

pytestmark = pytest.mark.broker


def test_the_actuator_reports_the_forging_state_it_sees_and_applies_roles_once_seen(
    broker_factory, tmp_path: Path, processes: list[ActuatorProcess], start_node: StartNode
) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory()
    (tmp_path / "files").mkdir()
    files = make_node_files(tmp_path / "files")
    # Started non-producing with its keys away: its gauge says 1 until the first SIGHUP.
    node = start_node(keys_in_place=False, keys_at_start=False, metric_bug=True)
    bp1 = Node(broker, "bp1")
    proc = start_actuator(
        broker,
        "bp1",
        files,
        processes,
        BPF_ACTUATOR__METHOD="sighup",
        BPF_ACTUATOR__KES_KEY=node.keys[0],
        BPF_ACTUATOR__VRF_KEY=node.keys[1],
        BPF_ACTUATOR__OPCERT=node.keys[2],
        BPF_ACTUATOR__KEY_STORE=node.store,
        BPF_ACTUATOR__PID_FILE=node.pid_file,
        BPF_ACTUATOR__METRICS_URL=node.metrics_url,
    )
    # Never "forging" on the gauge's word alone: one SIGHUP while up, then seen not forging.
    bp1.wait_state("relay, seen not forging", timeout=15, online=True, role="relay", forging=False)
    assert any("Disabling block forging" in line for line in node.log_lines()), proc.tail()

    bp1.command("producer", 1)
    bp1.wait_state("producer, seen forging", timeout=15, role="producer", epoch=1, forging=True)
    assert node.forging()

    bp1.command("relay", 2)
    bp1.wait_state("relay, seen not forging", timeout=15, role="relay", epoch=2, forging=False)
    assert not node.forging()
    assert sorted(p.name for p in node.store.iterdir()) == ["kes.skey", "node.opcert", "vrf.skey"]
    wait_for(lambda: proc.terminate() == 0, 15, "a clean stop")
