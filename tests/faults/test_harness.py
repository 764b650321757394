"""The harness and the checker themselves, with a stand-in decider (signed commands as admin).

These prove the tools before the scenarios rely on them: the checker sees a role
applied on disk and on the broker, it catches a deliberate split brain, and a node
cut off through its proxy fences itself.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import ClusterFactory

pytestmark = pytest.mark.broker


def test_checker_follows_roles_applied_on_disk_and_reported_on_the_broker(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(decider=False)
    cluster.wait(lambda: cluster.state_is("bp1", online=True) and cluster.state_is("bp2", online=True),
                 15, "both actuators online")
    cluster.command("bp2", "relay", 1)
    cluster.command("bp1", "producer", 1)
    cluster.wait(lambda: cluster.check.env_role("bp1") == "producer", 10, "bp1 env file producer")
    cluster.wait(lambda: cluster.state_is("bp1", online=True, role="producer", epoch=1), 10,
                 "bp1 NodeState producer@1")
    assert cluster.check.env_role("bp2") == "relay"
    assert cluster.check.overlaps() == []
    assert cluster.check.max_gap < 0.5


def test_checker_catches_a_deliberate_split_brain(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(decider=False)
    cluster.wait(lambda: cluster.state_is("bp2", online=True), 15, "bp2 actuator online")
    cluster.command("bp1", "producer", 1)
    cluster.command("bp2", "producer", 1)  # what a broken decider would do
    cluster.wait(lambda: {s.source for s in cluster.check.overlaps()} == {"env", "state"}, 10,
                 "an overlap in both the env files and the NodeState timeline")
    overlap = cluster.check.overlaps()[0]
    assert overlap.nodes == ("bp1", "bp2")


def test_a_producer_cut_off_through_its_proxy_fences_and_comes_back_only_at_a_higher_epoch(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(decider=False)
    cluster.wait(lambda: cluster.state_is("bp1", online=True), 15, "bp1 actuator online")
    cluster.command("bp1", "producer", 1)
    cluster.wait(lambda: cluster.check.env_role("bp1") == "producer", 10, "bp1 producer")
    cut = cluster.network("bp1", "cut")
    cluster.wait(lambda: cluster.state_is("bp1", online=False), 5, "bp1 Last Will (offline)")
    fenced_at = cluster.wait(
        lambda: cluster.check.env_role("bp1") == "relay" and cluster.check.env_changes(cut)[-1].at, 10,
        "bp1 fenced (env file relay)",
    )
    t = cluster.timings
    assert fenced_at - cut <= t.fence_after + 1.0
    cluster.network("bp1", "heal")
    # Its retained producer@1 may be a rolled-back copy: a fenced node takes producer only higher.
    cluster.wait(lambda: cluster.state_is("bp1", online=True, role="relay", fenced=True), 15,
                 "bp1 back online, still fenced")
    assert cluster.check.env_role("bp1") == "relay"
    cluster.command("bp1", "producer", 2)
    cluster.wait(lambda: cluster.check.env_role("bp1") == "producer", 15, "bp1 producer again at epoch 2")
    assert cluster.check.overlaps() == []
