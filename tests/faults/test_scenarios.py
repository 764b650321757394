"""End-to-end fault scenarios: real processes, real mosquitto, compressed timings.

Every scenario runs a fresh bundle and broker with the publisher, actuator and decider
as subprocesses (``harness.Cluster``), each node behind its own fault proxy, the
split-brain checker sampling the env files every 20 ms and following the NodeStates,
and an injector sending malformed messages throughout. Each one reports its overlaps
(must be 0), its failover time against the theoretical minimum computed from the
configured timings (``Timings.theoretical_failover``) and its role changes: printed
(``-s``), recorded as the ``fault_summary`` property and appended to
``<pytest basetemp>/fault-results.json``. The failover time must be at most the
theoretical minimum + 2 s.

Synchronisation is on observable conditions with deadlines (env files, NodeStates,
role commands on the wire). Where a scenario asserts that *nothing* happens, it
watches for a fixed window (``watch_quietly``) long enough for the rule to have
fired if it were going to: that window is the claim under test, not a wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from bpfailover.protocol.wire import NodeState
from tests.faults.conftest import ClusterFactory
from tests.faults.harness import Cluster, Timings

pytestmark = pytest.mark.broker

T = Timings()
FLAPS = 3
SLACK = 2.0  # the target: failover time <= theoretical minimum + 2 s
# Injected all along in every scenario: kinds that reach the decider (tips, states,
# control) and the checker but no node's role topic.
THROUGHOUT: dict[str, Any] = {
    "kinds": ("malformed", "schema", "mismatch", "oversized", "replayed"),
    "role_targets": (),
    "replay_roles": False,
}
Report = Callable[[dict[str, Any]], None]


# --- helpers -------------------------------------------------------------------------------------


def producer_at(cluster: Cluster, node: str, epoch: int, after: float, timeout: float) -> float:
    """Wait until ``node``'s env file says producer and its actuator reports producer@epoch."""
    at = cluster.wait(lambda: cluster.check.producer_since(node, after), timeout,
                      f"{node} producer (env file) after the fault")
    cluster.wait(lambda: cluster.state_is(node, online=True, role="producer", epoch=epoch, pending=None),
                 10, f"{node} NodeState producer@{epoch}")
    return at


def command_seen(cluster: Cluster, node: str, role: str, epoch: int, after: float = 0.0) -> float | None:
    for at, cmd in cluster.check.role_commands(after):
        if cmd.node == node and cmd.role == role and cmd.epoch == epoch:
            return at
    return None


def advertised_fence(cluster: Cluster, node: str) -> float:
    """The fence_after ``node``'s actuator advertises (the decider's fence wait is based on it)."""
    state = cluster.state(node)
    assert state is not None and state.online
    return state.fence_after


def offline_since(cluster: Cluster, node: str, after: float) -> float | None:
    for at, state in cluster.check.messages("state", node, after=after, model=NodeState):
        if not state.online:
            return at
    return None


def watch_quietly(cluster: Cluster, seconds: float, *, epoch: int = 1) -> None:
    """For ``seconds``: fail at once if any role command above ``epoch`` goes out or a
    process dies. The claim is that nothing changes during the window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        changed = [c for _, c in cluster.check.role_commands() if c.epoch > epoch]
        if changed:
            pytest.fail(f"the pool changed during a window where nothing may change: {changed}")
        cluster.wait(lambda: True, 1, "processes alive")
        time.sleep(cluster.check.period)


def finish(cluster: Cluster, report: Report, scenario: str, t0: float, *, failover: float | None,
           theory: float | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Report the scenario, then assert the invariants every scenario shares."""
    result = cluster.result(scenario, t0, failover_s=failover, theory_s=theory, extra=extra)
    report(result)
    assert result["overlaps"] == 0, f"split brain: {result['overlaps']}"
    if failover is not None and theory is not None:
        assert failover <= theory + SLACK, (
            f"failover took {failover:.2f}s, more than the theoretical {theory:.2f}s + {SLACK:g}s"
        )
    return result


# --- the scenarios -------------------------------------------------------------------------------


def test_producer_whole_node_dies(cluster_factory: ClusterFactory, report: Report) -> None:
    """bp1's publisher and actuator are SIGKILLed: its Last Will fires at once, bp2 is
    promoted when bp1's tip is stale and bp1 is certainly fenced."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    advertised = advertised_fence(cluster, "bp1")
    t0 = cluster.kill_node("bp1")
    theory = T.theoretical_failover(0.0, advertised)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + 10)
    will = offline_since(cluster, "bp1", t0)
    command = command_seen(cluster, "bp2", "producer", 2)
    assert will is not None and command is not None
    # The decider waited out the fence: advertised fence_after + keepalive + fence_margin.
    wait = T.fence_wait(advertised)
    assert command - will >= wait - 0.3, f"promoted {command - will:.2f}s after bp1's Last Will"
    finish(cluster, report, "producer node dies", t0, failover=promoted - t0, theory=theory,
           extra={"promotion_after_will_s": round(command - will, 3), "advertised_fence_after": advertised})


def test_producer_publisher_dies_while_its_actuator_stays(cluster_factory: ClusterFactory,
                                                         report: Report) -> None:
    """Only bp1's publisher dies: bp1's tip goes stale, its actuator acknowledges relay,
    and bp2 is promoted without any fence wait."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    t0 = cluster.kill_publisher("bp1")
    promoted = producer_at(cluster, "bp2", 2, t0, T.theoretical_failover(None) + 10)
    demoted = [c.at for c in cluster.check.env_changes(t0) if c.node == "bp1" and c.role == "relay"]
    assert demoted and demoted[0] < promoted, "bp1 must be relay before bp2 is producer"
    cluster.wait(lambda: cluster.state_is("bp1", online=True, role="relay", epoch=2), 5,
                 "bp1 acknowledged relay@2")
    finish(cluster, report, "producer publisher dies", t0, failover=promoted - t0,
           theory=T.theoretical_failover(None),
           extra={"demoted_before_promotion_s": round(promoted - demoted[0], 3)})


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
def test_producer_cut_off_fences_before_the_standby_is_promoted(
    cluster_factory: ClusterFactory, report: Report, fault: str
) -> None:
    """bp1's node keeps running but loses the broker (connections reset, or a partition
    where TCP stays up): bp1 must fence itself before bp2 is producer."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    advertised = advertised_fence(cluster, "bp1")
    t0 = cluster.network("bp1", fault)
    # cut: the proxy resets the connection, the broker publishes the Will at once;
    # blackhole: the broker notices the silence only after 1.5 x keepalive (+ up to 7 s: see
    # Timings.broker_detects_silence).
    will_delay = 0.0 if fault == "cut" else T.broker_detects_silence
    theory = T.theoretical_failover(will_delay, advertised)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + 10)
    fenced = [c.at for c in cluster.check.env_changes(t0) if c.node == "bp1" and c.role == "relay"]
    assert fenced and fenced[0] < promoted, "bp1 must have fenced before bp2 was promoted"
    cluster.network("bp1", "heal")
    cluster.wait(lambda: cluster.state_is("bp1", online=True, role="relay", epoch=2), 20,
                 "bp1 back online, relay at epoch 2")
    will = offline_since(cluster, "bp1", t0)
    assert will is not None
    finish(cluster, report, f"producer {fault} from broker", t0, failover=promoted - t0, theory=theory,
           extra={"fenced_after_s": round(fenced[0] - t0, 3), "will_after_s": round(will - t0, 3),
                  "fenced_before_promotion_s": round(promoted - fenced[0], 3)})


def test_broker_restart_changes_nothing(cluster_factory: ClusterFactory, report: Report) -> None:
    """The broker restarts (retained messages persist): every service reconnects and
    the pool keeps its producer; a producer that fenced meanwhile is re-commanded at a new
    epoch (never on its old retained command), with no failover."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    t0 = cluster.note("broker restart")
    cluster.broker.restart()
    # mosquitto publishes every client's Last Will as it shuts down; then they come back.
    cluster.wait(lambda: all(
        any(s.online for _, s in cluster.check.messages("state", n, after=t0, model=NodeState))
        for n in cluster.nodes
    ), 20, "every actuator reconnected and reported online")
    cluster.wait(lambda: cluster.check.env_role("bp1") == "producer", 15, "bp1 producer after the restart")
    epoch = cluster.wait(lambda: producer_epoch(cluster, "bp1"), 15, "bp1 reports producer")
    watch_quietly(cluster, T.stale_after + 1, epoch=epoch)
    assert cluster.check.env_role("bp2") == "relay"
    assert not [c for _, c in cluster.check.role_commands() if c.node == "bp2" and c.role == "producer"]
    gaps = producerless(cluster, "bp1", t0)
    finish(cluster, report, "broker restart", t0, failover=None, theory=None,
           extra={"producer_gap_s": gaps})


def producer_epoch(cluster: Cluster, node: str) -> int | None:
    """The epoch ``node``'s actuator reports producer at, once it does (online, nothing pending)."""
    state = cluster.check.latest_state(node)
    if state is None or not state.online or state.role != "producer" or state.pending is not None:
        return None
    return state.epoch


def producerless(cluster: Cluster, node: str, after: float) -> float:
    """Seconds ``node``'s env file spent not producer after ``after`` (fenced, then back)."""
    total, since = 0.0, None
    for change in cluster.check.env_changes(after):
        if change.node != node:
            continue
        if change.role != "producer" and since is None:
            since = change.at
        elif change.role == "producer" and since is not None:
            total += change.at - since
            since = None
    if since is not None:
        total += time.monotonic() - since
    return round(total, 3)


def test_broker_down_longer_than_fence_after(cluster_factory: ClusterFactory, report: Report) -> None:
    """The broker is away for longer than fence_after (but less than stale_after): the
    producer fences itself; when the broker returns it refuses its retained producer
    command (perhaps a rolled-back copy) and the decider re-commands it at a new epoch.
    No failover, no overlap."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    t0 = cluster.broker_stop()
    fenced = cluster.wait(
        lambda: next((c.at for c in cluster.check.env_changes(t0) if c.node == "bp1" and c.role == "relay"),
                     None),
        T.fence_after + 3, "bp1 fenced while the broker is down",
    )
    # Down for fence_after + 1 s in all, then back.
    cluster.wait(lambda: time.monotonic() >= t0 + T.fence_after + 1, 5, "outage length")
    back = cluster.broker_start()
    resumed = cluster.wait(lambda: cluster.check.producer_since("bp1", back), 20, "bp1 producer again")
    cluster.wait(lambda: cluster.state_is("bp1", online=True, role="producer", epoch=2, fenced=False), 10,
                 "bp1 reports producer@2 (re-commanded), not fenced")
    assert not [c for _, c in cluster.check.role_commands() if c.node == "bp2" and c.role == "producer"]
    watch_quietly(cluster, T.stale_after, epoch=2)
    assert cluster.check.env_role("bp2") == "relay"
    finish(cluster, report, "broker down > fence_after", t0, failover=None, theory=None,
           extra={"outage_s": round(back - t0, 3), "fenced_after_s": round(fenced - t0, 3),
                  "resumed_after_return_s": round(resumed - back, 3)})


def test_decider_killed_mid_transition_and_restarted(cluster_factory: ClusterFactory,
                                                    report: Report) -> None:
    """The decider is SIGKILLed twice in the middle of a failover, and restarted at once:
    first after its demotion went out (bp1's link is slowed so the acknowledgement takes
    a while), then after the promotion went out (bp2's link slowed). The restarted decider
    completes the change at the same epoch; it never starts a second one."""
    delay = 1.0
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()

    # 1. Killed while demoting: relay@2 for bp1 is on the wire, bp1 has not acknowledged yet.
    cluster.network("bp1", "delay", delay)
    t0 = cluster.kill_publisher("bp1")
    cluster.wait(lambda: command_seen(cluster, "bp1", "relay", 2, t0), T.stale_after + 5, "relay@2 for bp1")
    cluster.kill_decider()
    assert command_seen(cluster, "bp2", "producer", 2) is None, "too late: the promotion already went out"
    cluster.start_decider()
    first = producer_at(cluster, "bp2", 2, t0, T.stale_after + T.startup_grace + 15)
    # bp1's acknowledgement (a round trip through the delay) and the new decider's
    # startup_grace run side by side; the process start is left to the slack.
    theory = T.stale_after + max(2 * delay, T.startup_grace)

    # 2. Killed while promoting: producer@3 for bp1 is on the wire, bp1 has not applied it yet.
    cluster.network("bp1", "heal")
    cluster.start_publisher("bp1")
    restart = cluster.note("bp1 publisher restarted")
    cluster.wait(lambda: cluster.tips_since("bp1", restart) >= T.rise + 1, 10, "fresh tips from bp1")
    cluster.network("bp1", "delay", delay)
    t1 = cluster.kill_publisher("bp2")
    cluster.wait(lambda: command_seen(cluster, "bp1", "producer", 3, t1), T.stale_after + 10,
                 "producer@3 for bp1")
    cluster.kill_decider()
    assert cluster.check.env_role("bp1") == "relay", "too late: bp1 already applied producer@3"
    cluster.start_decider()
    second = producer_at(cluster, "bp1", 3, t1, T.stale_after + T.startup_grace + 15)
    cluster.wait(lambda: cluster.state_is("bp2", online=True, role="relay", epoch=3), 10, "bp2 relay@3")

    # bp1 applies the promotion that is already on its way, whatever the decider does.
    theory2 = T.stale_after + delay

    epochs = sorted({c.epoch for _, c in cluster.check.role_commands()})
    assert epochs == [1, 2, 3], f"a transition was duplicated: epochs {epochs}"
    finish(cluster, report, "decider killed mid-transition", t0, failover=first - t0, theory=theory,
           extra={"second_failover_s": round(second - t1, 3), "second_theory_s": theory2,
                  "epochs": epochs})
    assert second - t1 <= theory2 + SLACK, f"second failover {second - t1:.2f}s"


def test_network_wide_stall_changes_nothing(cluster_factory: ClusterFactory, report: Report) -> None:
    """Every tip freezes at once (an epoch-boundary stall): all nodes are stale, none is
    fresher than the producer, so nothing may change; then the chain resumes."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    t0 = cluster.note("stall every node")
    for node in cluster.nodes:
        cluster.stall(node)
    watch_quietly(cluster, T.stale_after + 1)
    for node in cluster.nodes:
        cluster.stall(node, on=False)
    watch_quietly(cluster, 1)
    assert cluster.check.env_role("bp1") == "producer"
    assert cluster.check.env_changes(t0) == []
    finish(cluster, report, "network-wide stall", t0, failover=None, theory=None)


def test_flapping_standby(cluster_factory: ClusterFactory, report: Report) -> None:
    """bp2's link flaps (cut, back, cut, ...) while bp1 is healthy: nothing changes.
    Then bp1's tip stops (its publisher dies) and bp2, steady again, takes over once."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    start = cluster.note("bp2 starts flapping")
    for _ in range(FLAPS):
        cut = cluster.network("bp2", "cut")
        cluster.wait(lambda cut=cut: offline_since(cluster, "bp2", cut), 5, "bp2 offline")
        back = cluster.network("bp2", "heal")
        cluster.wait(lambda back=back: cluster.state_is("bp2", online=True) and
                     cluster.tips_since("bp2", back) >= 1, 10, "bp2 back")
    assert [c for _, c in cluster.check.role_commands(start) if c.epoch > 1] == []
    steady = time.monotonic()
    cluster.wait(lambda: cluster.tips_since("bp2", steady) >= T.rise + 1, 5, "bp2 fresh again")
    t0 = cluster.kill_publisher("bp1")
    theory = T.theoretical_failover(None)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + 10)
    epochs = sorted({c.epoch for _, c in cluster.check.role_commands()})
    assert epochs == [1, 2], f"more than one change: epochs {epochs}"
    finish(cluster, report, "flapping standby", t0, failover=promoted - t0, theory=theory,
           extra={"flaps": FLAPS})


def test_three_nodes_first_candidate_fails_to_apply(cluster_factory: ClusterFactory,
                                                    report: Report) -> None:
    """bp1's tip stops; bp2 (the preferred candidate) cannot apply producer (its restart
    command fails); the decider abandons it, demotes it at a new epoch and promotes bp3
    once bp2 acknowledged relay."""
    cluster = cluster_factory(
        nodes=["bp1", "bp2", "bp3"],
        injector=THROUGHOUT,
        node_env={"bp2": {"BPF_ACTUATOR__RESTART_COMMAND": "false"}},
    )
    cluster.wait_bootstrapped()
    t0 = cluster.kill_publisher("bp1")
    # bp2 reports its failed apply at once (its restart command exits non-zero), and the
    # decider moves on as soon as it sees that; apply_timeout would bound it otherwise.
    theory = T.theoretical_failover(None)
    tried = cluster.wait(lambda: command_seen(cluster, "bp2", "producer", 2, t0),
                         T.theoretical_failover(None) + 10, "producer@2 for bp2")
    promoted = producer_at(cluster, "bp3", 3, t0, theory + T.decider_apply_timeout + 10)
    cluster.wait(lambda: cluster.state_is("bp2", online=True, role="relay", epoch=3), 10, "bp2 relay@3")
    demoted = [c.at for c in cluster.check.env_changes(t0) if c.node == "bp2" and c.role == "relay"]
    assert demoted and demoted[0] < promoted, "bp2 must be relay again before bp3 is producer"
    finish(cluster, report, "3 nodes, first candidate fails to apply", t0, failover=promoted - t0,
           theory=theory, extra={"first_candidate_tried_s": round(tried - t0, 3)})


def test_standby_with_skewed_clock_is_not_promoted(cluster_factory: ClusterFactory, report: Report) -> None:
    """bp2's host clock is 30 s ahead (a TEST-ONLY sitecustomize shifts time.time() in its
    publisher and actuator; beyond max_clock_skew 10 s). When bp1's tip stops, bp3 is promoted,
    although bp2 has the higher priority and (by its own clock) the freshest tip."""
    cluster = cluster_factory(nodes=["bp1", "bp2", "bp3"], injector=THROUGHOUT, clock_offset={"bp2": 30.0})
    cluster.wait_bootstrapped()
    t0 = cluster.kill_publisher("bp1")
    theory = T.theoretical_failover(None)
    promoted = producer_at(cluster, "bp3", 2, t0, theory + 10)
    assert command_seen(cluster, "bp2", "producer", 2) is None
    assert all(c.role != "producer" for c in cluster.check.env_changes() if c.node == "bp2")
    finish(cluster, report, "standby with skewed clock", t0, failover=promoted - t0, theory=theory)


def test_malformed_and_replayed_messages_change_nothing(cluster_factory: ClusterFactory,
                                                       report: Report) -> None:
    """Bad messages are injected all along (4 per second) on every topic of the pool, the
    nodes' role topics included: malformed, wrong schema, topic mismatch, oversized, and
    replays of genuine commands and tips. A failover still happens, once; afterwards the
    genuine producer@1 for bp1 and relay@1 for bp2 are replayed on purpose: both are
    refused by the actuators and nothing changes."""
    cluster = cluster_factory(injector={
        "period": 0.25, "role_targets": ("bp1", "bp2"), "replay_roles": True,
        "kinds": ("malformed", "schema", "mismatch", "oversized", "replayed"),
    })
    cluster.wait_bootstrapped()
    t0 = cluster.kill_publisher("bp1")
    theory = T.theoretical_failover(None)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + 10)
    old = {c.node: c for _, c in cluster.check.role_commands() if c.epoch == 1}
    replayed = cluster.note("replay producer@1 to bp1 and relay@1 to bp2")
    for node in ("bp1", "bp2"):
        cluster.broker.publish(cluster.check.topics.role(cluster.broker.pool, node), old[node].to_json())
    for node in ("bp1", "bp2"):
        cluster.wait(lambda node=node: any(
            s.rejected and "epoch" in s.rejected
            for _, s in cluster.check.messages("state", node, after=replayed, model=NodeState)
        ), 10, f"{node} refused the replayed command")
    assert cluster.check.env_role("bp1") == "relay" and cluster.check.env_role("bp2") == "producer"
    epochs = sorted({c.epoch for _, c in cluster.check.role_commands()})
    assert epochs == [1, 2], f"epochs {epochs}"
    finish(cluster, report, "malformed and replayed messages", t0, failover=promoted - t0, theory=theory)


def test_forged_role_commands_do_not_steer_the_decider(cluster_factory: ClusterFactory,
                                                       report: Report) -> None:
    """Unsigned and badly signed producer commands at epoch 10000 for both nodes are injected
    all along. The actuators refuse them (signature); the decider must ignore them too: it
    bootstraps bp1 at epoch 1, fails over to bp2 at epoch 2 when bp1's publisher dies, and
    no forged command ever changes a role."""
    cluster = cluster_factory(injector={"period": 0.25, "role_targets": ("bp1", "bp2"),
                                        "kinds": ("unsigned", "forged")})
    first = cluster.wait(lambda: cluster.check.role_commands(), 15, "the decider's first command")[0][1]
    assert first.epoch == 1, f"the decider's first command is {first.role}@{first.epoch} for {first.node}"
    cluster.wait_bootstrapped()
    t0 = cluster.kill_publisher("bp1")
    theory = T.theoretical_failover(None)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + 10)
    epochs = sorted({c.epoch for _, c in cluster.check.role_commands()})
    assert epochs == [1, 2], f"epochs {epochs}"
    finish(cluster, report, "forged role commands", t0, failover=promoted - t0, theory=theory)
