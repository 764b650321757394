"""Fault scenarios for the safety protocol's newer rules (DESIGN §7), end to end.

Same harness, checker and reporting as ``test_scenarios``: real processes, the real
mosquitto with TLS, compressed timings (``Timings``), no overlap allowed anywhere. Each
scenario targets one rule: a broker that rolls back or forgets, a clean stop that
promises no fence, a link that connects but loses what the node sends, an actuator that
crash-loops while cut off, and a keepalive imposed by the broker.
"""

from __future__ import annotations

import pytest

from actuator.fence import advertised_fence_after
from tests.brokers import MosquittoProcess
from tests.faults.conftest import ClusterFactory
from tests.faults.test_scenarios import THROUGHOUT, Report, T, finish

pytestmark = pytest.mark.broker

# The demotion bound of the harness's actuators: restart within one apply_timeout, then
# stop_command within another (``Timings.advertised_fence_after``).
DEMOTION_BOUND = 2 * T.actuator_apply_timeout


def test_keepalive_imposed_by_the_broker_sets_the_advertised_fence(cluster_factory: ClusterFactory,
                                                                   report: Report) -> None:
    """mosquitto's ``max_keepalive`` 10 s imposes its keepalive on the MQTT 5 actuators, which
    ask for 20 s (MQTT 5 Server Keep Alive, adopted by paho). The fence and the advertised
    fence_after follow the keepalive in force, and the actuator says so in its log."""
    configured, imposed = 20.0, 10.0
    cluster = cluster_factory(start=False, injector=THROUGHOUT,
                              node_env={n: {"BPF_MQTT__KEEPALIVE": f"{configured:g}"} for n in ("bp1", "bp2")})
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
        cluster.wait(lambda process=process: warning in process.log_path.read_text(), 5,
                     f"{node}'s actuator logs the imposed keepalive")
    finish(cluster, report, "keepalive imposed by the broker", t0, failover=None, theory=None,
           extra={"advertised_fence_after": advertised, "expected": expected})
