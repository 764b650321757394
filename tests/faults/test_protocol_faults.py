"""Fault scenarios for the safety protocol's newer rules (DESIGN §7), end to end.

Same harness, checker and reporting as ``test_scenarios``: real processes, the real
mosquitto with TLS, compressed timings (``Timings``), no overlap allowed anywhere. Each
scenario targets one rule: a broker that rolls back or forgets, a clean stop that
promises no fence, a link that connects but loses what the node sends, an actuator that
crash-loops while cut off, and a keepalive imposed by the broker.
"""

from __future__ import annotations

import time

import pytest

from actuator.atomic import atomic_write
from actuator.fence import advertised_fence_after
from bpfailover.wire import DecisionEvent
from tests.brokers import MosquittoProcess
from tests.faults.conftest import ClusterFactory
from tests.faults.harness import Cluster
from tests.faults.test_scenarios import THROUGHOUT, Report, T, command_seen, finish, producer_at

pytestmark = pytest.mark.broker

# The demotion bound of the harness's actuators: restart within one apply_timeout, then
# stop_command within another (``Timings.advertised_fence_after``).
DEMOTION_BOUND = 2 * T.actuator_apply_timeout


def event_seen(cluster: Cluster, kind: str, to: str, text: str, after: float) -> float | None:
    """When the decider published a DecisionEvent of ``kind`` about ``to`` whose reason has ``text``."""
    for at, event in cluster.check.messages("events", after=after, model=DecisionEvent):
        if event.kind == kind and event.to == to and text in event.reason:
            return at
    return None


def watch_no_promotion(cluster: Cluster, node: str, seconds: float) -> None:
    """For ``seconds``: fail at once if ``node`` is sent producer or its env file says producer.
    The claim under test is that it does not happen within the window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent = [c for _, c in cluster.check.role_commands() if c.node == node and c.role == "producer"]
        if sent or cluster.check.env_role(node) == "producer":
            pytest.fail(f"{node} was promoted during a window where it must not be: {sent}")
        cluster.wait(lambda: True, 1, "processes alive")
        time.sleep(cluster.check.period)


def test_keepalive_imposed_by_the_broker_sets_the_advertised_fence(cluster_factory: ClusterFactory,
                                                                   report: Report) -> None:
    """mosquitto's ``max_keepalive`` 10 s imposes its keepalive on the MQTT 5 actuators, which
    ask for 20 s (MQTT 5 Server Keep Alive, adopted by paho). The fence and the advertised
    fence_after follow the keepalive in force, and the actuator says so in its log."""
    configured, imposed = 20.0, 10.0
    asked = {"BPF_MQTT__KEEPALIVE": f"{configured:g}"}
    cluster = cluster_factory(start=False, injector=THROUGHOUT, node_env={"bp1": asked, "bp2": asked})
    broker = cluster.broker
    if not isinstance(broker, MosquittoProcess):
        pytest.skip("needs the local mosquitto (BPF_TEST_BROKER=local) to set max_keepalive")
    broker.stop()
    broker.configure(max_keepalive=f"{imposed:g}")
    broker.start()
    cluster.start()
    t0 = cluster.wait_bootstrapped()
    expected = advertised_fence_after(T.fence_after, imposed, DEMOTION_BOUND)
    assert expected != advertised_fence_after(T.fence_after, configured, DEMOTION_BOUND)
    advertised = {}
    for node in cluster.nodes:
        state = cluster.wait(lambda node=node: cluster.state_is(node, online=True), 5, f"{node} online")
        advertised[node] = state.fence_after
        assert state.fence_after == pytest.approx(expected), (
            f"{node} advertises fence_after {state.fence_after:g}s; with the imposed keepalive "
            f"{imposed:g}s it is {expected:g}s"
        )
        warning = f"the broker set the keepalive to {imposed:g}s (configured {configured:g}s)"
        process = cluster.nodes[node].actuator
        assert process is not None
        cluster.wait(lambda process=process, warning=warning: warning in process.log_path.read_text(), 5,
                     f"{node}'s actuator logs the imposed keepalive")
    finish(cluster, report, "keepalive imposed by the broker", t0, failover=None, theory=None,
           extra={"advertised_fence_after": advertised, "expected": expected})


def test_clean_stop_of_the_producers_actuator_waits_for_an_operator(cluster_factory: ClusterFactory,
                                                                    report: Report) -> None:
    """bp1's actuator alone is stopped cleanly (SIGTERM); bp1's node goes on forging, and then its
    tip stalls. Its clean-stop report promises no fence, so the decider must not promote bp2
    (that would be split brain): it alerts (``nofence``) and waits. The operator demotes bp1 by
    hand and runs ``bpfailover failover --to bp2 --force``, which promotes bp2."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    t0 = cluster.stop_actuator("bp1")
    cluster.wait(lambda: cluster.state_is("bp1", online=False, stopped=True, fence_after=0.0), 5,
                 "bp1's clean-stop report: offline, stopped, no fence promised")
    assert cluster.check.env_role("bp1") == "producer", "an acknowledged clean stop leaves the node as it was"
    alert = cluster.wait(lambda: event_seen(cluster, "alert", "bp1", "stopped cleanly", t0), 5,
                         "the decider's nofence alert for bp1")
    stalled = cluster.stall("bp1")
    # The decider starts the failover (bp1 stale, bp2 eligible) and sends bp1 relay@2 ...
    cluster.wait(lambda: command_seen(cluster, "bp1", "relay", 2, stalled), T.stale_after + 3,
                 "the failover's demotion of bp1 (relay@2)")
    # ... but nothing will demote bp1: had the decider counted on a fence (fence_after 0 + its
    # keepalive + margin after the stop), it would have promoted bp2 by now, and some seconds more.
    watch_no_promotion(cluster, "bp2", T.fence_wait(0.0) + 3)
    assert cluster.check.env_role("bp1") == "producer"

    # The operator: makes sure bp1 no longer forges (demotes it by hand), then forces the failover.
    files = cluster.check.nodes["bp1"]
    atomic_write(files.env_file, files.relay_env)
    forced = cluster.note("operator demoted bp1 by hand")
    answer = cluster.operator("failover", "--to", "bp2", "--force")
    assert answer.returncode == 0, f"exit {answer.returncode}: {answer.stdout}{answer.stderr}"
    promoted = producer_at(cluster, "bp2", 2, forced, 10)
    finish(cluster, report, "clean stop of the producer's actuator", t0, failover=None, theory=None,
           extra={"alert_after_stop_s": round(alert - t0, 3), "operator_answer": answer.stdout.strip(),
                  "promoted_after_operator_s": round(promoted - forced, 3)})
