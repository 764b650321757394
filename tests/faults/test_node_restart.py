"""A promotion whose node restart outlasts ``stale_after``, end to end (issue 13).

A real cardano-node replays its ledger after the restart an ``env-swap`` promotion runs,
for minutes, and its tip cannot be read meanwhile. Here bp2's restart command freezes
bp2's simulated tip for longer than ``stale_after``, as such a replay would, while bp1,
just demoted, is fresh and eligible. Same harness and split-brain checker as the other
scenarios: real processes, the real mosquitto with TLS, no overlap allowed.
"""

from __future__ import annotations

import dataclasses
import shlex
import time

import pytest

from bpfailover.protocol.wire import NodeState
from tests.faults.conftest import ClusterFactory
from tests.faults.harness import Cluster
from tests.faults.test_scenarios import Report, T, command_seen, finish, producer_at

pytestmark = pytest.mark.broker


def replaying_restart(cluster: Cluster, node: str, seconds: float) -> str:
    """A restart command that returns at once and freezes ``node``'s tip for ``seconds``
    (detached, output discarded, so that the actuator does not wait for it)."""
    stall = shlex.quote(str(cluster.nodes[node].stall_file))
    replay = f"touch {stall}; sleep {seconds:g}; rm -f {stall}"
    return f"setsid sh -c {shlex.quote(replay)} >/dev/null 2>&1 < /dev/null &"


def starting_reported(cluster: Cluster, node: str, after: float) -> NodeState | None:
    for _, state in cluster.check.messages("state", node, after=after, model=NodeState):
        if state.online and state.starting_since is not None:
            return state
    return None


def up_after_restart(cluster: Cluster, node: str) -> bool:
    """``node``'s latest tip is of a block made after the restart its NodeState reports (if any)."""
    state, last = cluster.state(node), cluster.last_tip(node)
    if state is None or state.starting_since is None:
        return True
    return last is not None and last[1].tip_time is not None and last[1].tip_time > state.starting_since


def promoted_into_replay(cluster_factory: ClusterFactory, replay: float, start_timeout: float
                         ) -> tuple[Cluster, float, float]:
    """bp1 producer; bp1's tip stalls; bp2 is promoted (epoch 2) and its restart "replays" for
    ``replay`` seconds; bp1 is made fresh again as soon as it is demoted.
    Returns the cluster, the fault instant and when bp2 became producer."""
    timings = dataclasses.replace(T, start_timeout=start_timeout)
    cluster = cluster_factory(start=False, timings=timings)
    cluster.set_node_env("bp2", BPF_ACTUATOR__RESTART_COMMAND=replaying_restart(cluster, "bp2", replay))
    cluster.start()
    cluster.wait_bootstrapped()
    # bp1's bootstrap restart is over for the decider once bp1 has a block made after it.
    cluster.wait(lambda: up_after_restart(cluster, "bp1"), 10, "bp1 up after its bootstrap restart")
    t0 = cluster.stall("bp1")
    promoted = producer_at(cluster, "bp2", 2, t0, T.stale_after + 30)
    cluster.wait(lambda: cluster.check.env_role("bp1") == "relay", 10, "bp1 demoted")
    cluster.stall("bp1", on=False)
    return cluster, t0, promoted


def test_a_promotion_whose_restart_outlasts_stale_after_is_waited_for(cluster_factory: ClusterFactory,
                                                                    report: Report) -> None:
    """bp2's restart takes 3 x stale_after; with start_timeout above that, the decider waits:
    no command goes out until bp2's tip is fresh again, and bp2 stays producer after."""
    replay = 3 * T.stale_after
    cluster, t0, promoted = promoted_into_replay(cluster_factory, replay, start_timeout=replay + 30)
    state = cluster.wait(lambda: starting_reported(cluster, "bp2", t0), 10, "bp2 reports its restart")
    assert state.start_timeout == pytest.approx(replay + 30)
    # Through the whole replay and a stale_after beyond it, nothing may change.
    deadline = promoted + replay + T.stale_after
    while time.monotonic() < deadline:
        later = [c for _, c in cluster.check.role_commands() if c.epoch > 2]
        assert not later, f"the decider did not wait for bp2's restart: {later}"
        cluster.wait(lambda: True, 1, "processes alive")
        time.sleep(cluster.check.period)
    cluster.wait(lambda: up_after_restart(cluster, "bp2"), 10, "bp2 up: a block made after its restart")
    assert cluster.state_is("bp2", online=True, role="producer", epoch=2), "bp2 is still producer at epoch 2"
    assert not [c for _, c in cluster.check.role_commands() if c.epoch > 2]
    finish(cluster, report, "restart outlasts stale_after, waited for", t0, failover=None, theory=None,
           extra={"replay_s": replay, "stale_after_s": T.stale_after})


def test_a_restart_longer_than_start_timeout_is_failed_over(cluster_factory: ClusterFactory,
                                                           report: Report) -> None:
    """bp2's restart never ends within start_timeout: once that has passed (and bp2's tip is
    stale), the normal rule applies and bp1 is promoted at epoch 3."""
    start_timeout = 2 * T.stale_after
    cluster, t0, promoted = promoted_into_replay(cluster_factory, 10 * start_timeout, start_timeout)
    cluster.wait(lambda: starting_reported(cluster, "bp2", t0), 10, "bp2 reports its restart")
    back = producer_at(cluster, "bp1", 3, promoted, start_timeout + T.stale_after + 30)
    sent = command_seen(cluster, "bp1", "producer", 3)
    assert sent is not None and sent - promoted >= start_timeout - 1.0, (
        f"bp1 was promoted {sent and sent - promoted:.1f}s after bp2, before bp2's start_timeout "
        f"({start_timeout:g}s) had passed"
    )
    finish(cluster, report, "restart longer than start_timeout, failed over", t0, failover=back - promoted,
           theory=None, extra={"start_timeout_s": start_timeout})
