"""A decider restarted over many retained pools, with a startup_grace shorter than the read.

Against the real broker (TLS, passwords, ACLs). The decider connects as the test admin
because it serves pools the bundle's ACL does not name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bpfailover.link import Incoming, MqttLink
from bpfailover.protocol.signing import load_signing_key, sign_command
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import DecisionEvent, NodeState, RoleCommand, TipReport
from bpfailover.settings import PoolNode, PoolSpec
from tests.brokers import BrokerHandle, wait_for
from tests.decider.test_service import Running, decider_config

pytestmark = pytest.mark.broker

PREFIX = "startup-test"
# Below what mosquitto queues for one client by default (max_queued_messages 1000 + 20 in flight):
# 7 retained messages per pool.
POOLS = [f"many{i:03d}" for i in range(120)]


@pytest.fixture
def retained_fleet(broker: BrokerHandle) -> Iterator[BrokerHandle]:
    """Every pool as a running fleet leaves it: bp1 producer at epoch 1, all retained."""
    key = load_signing_key(broker.bundle / "keys" / "command-signing.key")
    topics = Topics(PREFIX)
    now = time.time()
    with broker._admin() as client:
        infos = []
        for pool in POOLS:
            for node, role in (("bp1", "producer"), ("bp2", "relay")):
                command = RoleCommand(
                    pool=pool, node=node, role=role, epoch=1, issued_at=now, decider="decider"
                )
                state = NodeState(
                    pool=pool,
                    node=node,
                    boot="b",
                    online=True,
                    role=role,
                    epoch=1,
                    fence_after=3.0,
                    updated_at=now,
                )
                tip = TipReport(pool=pool, node=node, boot="b", seq=1, sent_at=now, ok=True, tip_time=now)
                for topic, payload in (
                    (topics.role(pool, node), sign_command(command, key).to_json()),
                    (topics.state(pool, node), state.to_json()),
                    (topics.tip(pool, node), tip.to_json()),
                ):
                    infos.append(client.publish(topic, payload, qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(30)
    yield broker
    broker.clear_retained(f"{PREFIX}/#")


def test_a_grace_shorter_than_the_retained_read_recovers_every_pool_as_retained(
    retained_fleet: BrokerHandle,
) -> None:
    broker = retained_fleet
    config = decider_config(broker, startup_grace=0.0, stale_after=60.0, tick=0.05)
    config = config.model_copy(
        update={
            "mqtt": broker.mqtt_settings("admin", prefix=PREFIX),
            "pools": [
                PoolSpec(id=p, nodes=[PoolNode(name="bp1", priority=100), PoolNode(name="bp2", priority=90)])
                for p in POOLS
            ],
        }
    )
    seen: list[Incoming] = []
    watcher = MqttLink(
        broker.mqtt_settings("admin", prefix=PREFIX),
        f"test-startup-{time.monotonic_ns()}",
        subscriptions=[f"{PREFIX}/+/events", f"{PREFIX}/+/role/+"],
    )
    watcher.start(attempts=1)
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            item = watcher.get(timeout=0.1)
            if isinstance(item, Incoming) and not item.retain:
                seen.append(item)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    wait_for(watcher.subscribed.is_set, 10, "the watcher's subscriptions")
    from bpfailover.decider.service import DeciderService

    running = Running(DeciderService(config))
    try:
        events = lambda: [  # noqa: E731
            DecisionEvent.model_validate_json(m.payload) for m in seen if m.topic.endswith("/events")
        ]
        wait_for(lambda: len({e.pool for e in events()}) == len(POOLS), 60, "every pool to recover")
        assert running.service.core.read_done
        recovered = [e for e in events() if e.kind == "recovered"]
        assert sorted(e.pool for e in recovered) == POOLS
        assert {e.reason for e in recovered} == {"bp1 is producer at epoch 1"}
        assert [m.topic for m in seen if "/role/" in m.topic] == [], "nothing was re-commanded"
    finally:
        running.close()
        stop.set()
        collector.join(timeout=2)
        watcher.stop()
