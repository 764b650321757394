"""What the decider subscribes to: wildcards per pool, or exact node topics spread over connections."""

from __future__ import annotations

from bpfailover.decider.subscriptions import decider_filters
from bpfailover.link import spread_subscriptions as spread
from bpfailover.protocol.topics import Topics
from bpfailover.settings import BpfConfig, MqttSettings, PoolNode, PoolSpec

TOPICS = Topics("bpf")


def pools(count: int, nodes: int = 2) -> list[PoolSpec]:
    names = [f"bp{n}" for n in range(1, nodes + 1)]
    return [PoolSpec(id=f"p{i}", nodes=[PoolNode(name=n) for n in names]) for i in range(count)]


def test_wildcard_mode_subscribes_six_filters_per_pool_whatever_its_nodes() -> None:
    filters = decider_filters(TOPICS, pools(1, nodes=5), exact=False)
    assert filters == [
        "bpf/p0/deciders/+",
        "bpf/p0/tip/+",
        "bpf/p0/state/+",
        "bpf/p0/role/+",
        "bpf/p0/decider",
        "bpf/p0/control",
    ]


def test_exact_mode_subscribes_each_nodes_topics_without_a_wildcard_where_retained_ones_matter() -> None:
    filters = decider_filters(TOPICS, pools(1), exact=True)
    assert filters == [
        "bpf/p0/deciders/+",  # presences: learned live (their ids are not configured)
        "bpf/p0/tip/bp1",
        "bpf/p0/tip/bp2",
        "bpf/p0/state/bp1",
        "bpf/p0/state/bp2",
        "bpf/p0/role/bp1",
        "bpf/p0/role/bp2",
        "bpf/p0/decider",
        "bpf/p0/control",
    ]


def test_filters_are_spread_over_connections_under_the_per_connection_limit() -> None:
    filters = decider_filters(TOPICS, pools(12), exact=True)  # 9 per pool: 108
    shares = spread(filters, 50)
    assert [len(s) for s in shares] == [50, 50, 8]
    assert [f for share in shares for f in share] == filters
    assert spread(filters, None) == [filters]
    assert spread([], 50) == [[]]


def test_exact_mode_defaults_to_aws_iot_limits_and_wildcard_mode_to_none() -> None:
    exact = MqttSettings(retained_wildcards=False)
    assert (exact.subscriptions_per_connection(), exact.filters_per_subscribe()) == (50, 8)
    wild = MqttSettings()
    assert (wild.subscriptions_per_connection(), wild.filters_per_subscribe()) == (None, None)
    tuned = MqttSettings(max_subscriptions_per_connection=10, max_filters_per_subscribe=4)
    assert (tuned.subscriptions_per_connection(), tuned.filters_per_subscribe()) == (10, 4)


def test_the_decider_opens_reader_connections_when_one_cannot_hold_every_subscription() -> None:
    from bpfailover.decider.service import DeciderService

    config = BpfConfig(mqtt=MqttSettings(retained_wildcards=False, prefix="bpf"), pools=pools(12))
    service = DeciderService(config)
    try:
        held = [service.link.subscriptions] + [r.subscriptions for r in service.readers]
        assert [len(h) for h in held] == [50, 50, 8]
        ids = [service.link.client_id, service.commands.client_id] + [r.client_id for r in service.readers]
        assert len(set(ids)) == len(ids) == 4
        assert set(service._links_up) == set(ids), "no decision while any of them is down"
    finally:
        service.presence.stop()


def test_the_environment_switches_a_decider_to_exact_subscriptions(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bpfailover.settings import load_config

    monkeypatch.setenv("BPF_MQTT__RETAINED_WILDCARDS", "false")
    monkeypatch.setenv("BPF_MQTT__MAX_SUBSCRIPTIONS_PER_CONNECTION", "20")
    config = load_config()
    assert config.mqtt.retained_wildcards is False
    assert config.mqtt.subscriptions_per_connection() == 20
