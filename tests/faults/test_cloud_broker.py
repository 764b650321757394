"""A broker that sends no retained messages to wildcard subscriptions (AWS IoT Core's rule).

``tests/retainless.py`` puts that rule in front of the test mosquitto. Here: the mode itself,
what it does to a decider and ``status`` that subscribe with wildcards, that exact
subscriptions (``[mqtt] retained_wildcards = false``) read the node states anyway, and a
whole pool (real processes, ``harness.Cluster``) whose decider is restarted and then fails
over, everything through that broker.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

from bpfailover.cli.ops import StatusSession
from bpfailover.decider.service import DeciderService
from bpfailover.link import Incoming, MqttLink
from bpfailover.protocol.topics import Topics
from bpfailover.settings import load_config
from tests.brokers import BrokerHandle
from tests.faults.harness import Cluster, Timings, running
from tests.ops import fabricate
from tests.retainless import RetainlessWildcards

pytestmark = pytest.mark.broker

NODES = ["bp1", "bp2"]
T = Timings()
OWN = "the proxy presents the bundle's server certificate, which only the bundle's own broker has"


@pytest.fixture
def front(broker_factory) -> Iterator[tuple[BrokerHandle, RetainlessWildcards]]:  # type: ignore[no-untyped-def]
    broker = broker_factory(pool="pool1", nodes=NODES)
    broker.require_own_broker(OWN)
    with RetainlessWildcards(broker.bundle, broker.host, broker.port) as proxy:
        yield broker, proxy


def retain_node_states(broker: BrokerHandle) -> None:
    """What actuators and publishers leave on the broker: a state and a tip per node."""
    topics, now = Topics(broker.prefix), time.time()
    for node, role in zip(NODES, ("producer", "relay"), strict=True):
        state = fabricate.state(broker.pool, node, now, role=role)
        broker.publish(topics.state(broker.pool, node), state.to_json(), retain=True)
        tip = fabricate.tip(broker.pool, node, now)
        broker.publish(topics.tip(broker.pool, node), tip.to_json(), retain=True)


def first_message(link: MqttLink, timeout: float = 10.0) -> Incoming:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        item = link.get(timeout=left)
        if isinstance(item, Incoming):
            return item
    raise AssertionError(f"no message on {link.subscriptions} within {timeout:g}s")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_mode_sends_retained_messages_to_exact_subscriptions_only(front, protocol: str) -> None:  # type: ignore[no-untyped-def]
    broker, proxy = front
    topic = Topics(broker.prefix).state(broker.pool, "bp1")
    broker.publish(topic, b"retained", retain=True)
    settings = broker.mqtt_settings("monitor", port=proxy.port, protocol=protocol)
    exact = MqttLink(settings, f"t-exact-{time.monotonic_ns()}", subscriptions=[topic])
    wild = MqttLink(settings, f"t-wild-{time.monotonic_ns()}", subscriptions=[topic.rsplit("/", 1)[0] + "/+"])
    try:
        for link in (exact, wild):
            link.start(attempts=1)
            assert link.subscribed.wait(5)
        got = first_message(exact)
        assert (got.payload, got.retain) == (b"retained", True)
        # mosquitto sends a subscription's retained messages before anything published later:
        # the live message is the wildcard's first only because the retained one was stripped.
        broker.publish(topic, b"live", retain=True)
        got = first_message(wild)
        assert (got.payload, got.retain) == (b"live", False)
        assert proxy.stripped == [topic]
    finally:
        exact.stop()
        wild.stop()


def read_as_decider(
    broker: BrokerHandle, port: int, monkeypatch: pytest.MonkeyPatch, *, exact: bool, per_connection: int = 50
) -> set[str]:
    """Start a decider on ``port`` until its retained read is over; the nodes it has a state of."""
    monkeypatch.setenv("BPF_MQTT__PORT", str(port))
    monkeypatch.setenv("BPF_MQTT__MAX_SUBSCRIPTIONS_PER_CONNECTION", str(per_connection))
    monkeypatch.setenv("BPF_MQTT__RETAINED_WILDCARDS", "false" if exact else "true")
    monkeypatch.setenv("BPF_DECIDER__STARTUP_GRACE", "60")  # decide nothing meanwhile
    service = DeciderService(load_config(broker.config_path("decider")))
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not service.core.read_done:
            assert time.monotonic() < deadline, "the retained read never ended"
            time.sleep(0.05)
        view = service.core.view(broker.pool)
        return {name for name, node in view.nodes.items() if node.state is not None}
    finally:
        stop.set()
        thread.join(15)


def test_wildcard_subscriptions_read_no_node_state_from_such_a_broker(front, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    broker, proxy = front
    retain_node_states(broker)
    assert read_as_decider(broker, proxy.port, monkeypatch, exact=False) == set()
    assert any(t.endswith("/state/bp1") for t in proxy.stripped)


@pytest.mark.parametrize("per_connection", [50, 3], ids=["one-connection", "three-connections"])
def test_exact_subscriptions_read_every_node_state_from_such_a_broker(  # type: ignore[no-untyped-def]
    front, monkeypatch, per_connection: int
) -> None:
    broker, proxy = front
    retain_node_states(broker)
    found = read_as_decider(broker, proxy.port, monkeypatch, exact=True, per_connection=per_connection)
    assert found == set(NODES)
    assert not [t for t in proxy.stripped if "/state/" in t or "/tip/" in t]


def test_status_reads_the_configured_nodes_exactly_from_such_a_broker(front, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    broker, proxy = front
    retain_node_states(broker)
    monkeypatch.setenv("BPF_MQTT__PORT", str(proxy.port))
    monkeypatch.setenv("BPF_MQTT__RETAINED_WILDCARDS", "false")
    session = StatusSession(load_config(broker.config_path("operator")), [broker.pool])
    session.start()
    try:
        session.collect(5.0)
        view = session.collectors[broker.pool].view
        assert {n for n, node in view.nodes.items() if node.state is not None} == set(NODES)
    finally:
        session.stop()


RECOVERED = re.compile(r"pool=pool1 (?:recovered|promoted) -->bp1 epoch=(\d+): bp1 is producer at epoch \1\b")


def recovered_epoch(cluster: Cluster) -> int | None:
    """The epoch the restarted decider settled bp1 as producer at: found at once, resumed (a
    change it read as under way), or re-commanded (role commands it took for lost)."""
    found = RECOVERED.findall(decider_log(cluster))
    return int(found[-1]) if found else None


def settled(cluster: Cluster, epoch: int) -> bool:
    roles = {"bp1": "producer", "bp2": "relay"}
    return all(cluster.state_is(n, online=True, role=r, epoch=epoch, pending=None) for n, r in roles.items())


def decider_log(cluster: Cluster) -> str:
    assert cluster.decider is not None
    return cluster.decider.log_path.read_text(errors="replace")


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "wildcards"])
def test_a_restarted_decider_recovers_and_fails_over_through_such_a_broker(  # type: ignore[no-untyped-def]
    broker_factory, tmp_path, exact: bool
) -> None:
    """Every service reaches the broker through the mode. The decider is killed and restarted,
    then the producer's tip stalls and the standby is promoted.

    With exact subscriptions the restarted decider's retained read finds every expected topic
    (tips, states, role commands, status) and the restart changes nothing. With wildcards (the
    mode biting) it reads only the pool's status, the one exact topic: it learns the tips live
    and the node states from the actuators' periodic refresh, but never sees its own role
    commands, so it takes them for lost and re-commands the pool at a new epoch. Safe, and the
    failover after it still works, but a needless change of epoch at every decider restart."""
    broker = broker_factory(pool="pool1", nodes=NODES)
    broker.require_own_broker(OWN)
    with RetainlessWildcards(broker.bundle, broker.host, broker.port) as proxy:
        env = {"BPF_MQTT__RETAINED_WILDCARDS": "false" if exact else "true"}
        cluster = Cluster(broker, tmp_path / "cluster", front_port=proxy.port, service_env=env)
        with running(cluster):
            cluster.wait_bootstrapped("bp1")
            cluster.kill_decider()
            cluster.start_decider()
            read = "read 7 retained messages" if exact else "read 1 retained messages"
            cluster.wait(lambda: read in decider_log(cluster), T.startup_grace + 15, f"the decider to {read}")
            # With wildcards the recovery may re-command bp1 at epoch 2 (unless the retained status
            # it did read says a change was under way, which it then completes): let it settle.
            steady = cluster.wait(lambda: recovered_epoch(cluster), 10, "the decider's recovery of bp1")
            assert steady == 1 or not exact
            cluster.wait(lambda: settled(cluster, steady), 10, f"bp1 producer, bp2 relay at epoch {steady}")
            t0 = cluster.stall("bp1")
            cluster.wait(lambda: cluster.check.producer_since("bp2", t0), T.stale_after + 15, "bp2 producer")
            cluster.wait(
                lambda: cluster.state_is("bp2", online=True, role="producer", epoch=steady + 1, pending=None),
                10,
                f"bp2 NodeState producer@{steady + 1}",
            )
            assert cluster.check.overlaps() == []
            epochs = sorted({c.epoch for _, c in cluster.check.role_commands()})
            assert epochs == list(range(1, steady + 2)), f"epochs {epochs}"
            stripped = [t for t in proxy.stripped if "/state/" in t or "/tip/" in t or "/role/" in t]
            assert bool(stripped) is not exact
