"""The decider's reader connections (exact subscriptions spread over several): one that is back is
counted up only once its subscriptions are in, so that nothing is decided on the tips and states
it has yet to deliver again (its pools' tips would look stale, a standby's on another fresh)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bpfailover.decider.service import DeciderService
from bpfailover.link import LinkEvent
from bpfailover.settings import BpfConfig, MqttSettings, PoolNode, PoolSpec


@pytest.fixture
def service() -> Iterator[DeciderService]:
    pool = PoolSpec(id="p0", nodes=[PoolNode(name="bp1"), PoolNode(name="bp2")])
    mqtt = MqttSettings(retained_wildcards=False, prefix="bpf", max_subscriptions_per_connection=2)
    made = DeciderService(BpfConfig(mqtt=mqtt, pools=[pool]))
    made.publish = lambda actions: None  # type: ignore[method-assign]  # no broker: nothing goes out
    try:
        yield made
    finally:
        made.presence.stop()


def event(kind: str, link: str) -> LinkEvent:
    return LinkEvent(kind, "test", time.monotonic(), link=link)


def bring_up(service: DeciderService) -> None:
    for link in (service.link, service.commands, *service.readers):
        service.handle(event("connected", link.client_id))
    for link in (service.link, *service.readers):
        service.handle(event("subscribed", link.client_id))


def test_the_pool_tips_are_split_over_the_work_and_a_reader_connection(service: DeciderService) -> None:
    tips = {service.topics.node_topic("p0", "tip", node) for node in ("bp1", "bp2")}
    assert tips & set(service.link.subscriptions), "a tip is held by the work connection"
    assert tips & set(service.readers[0].subscriptions), "a tip is held by a reader"


def test_a_reader_connection_back_counts_only_once_its_subscriptions_are_in(service: DeciderService) -> None:
    bring_up(service)
    assert service.core.link_up
    reader = service.readers[0].client_id
    service.handle(event("disconnected", reader))
    assert not service.core.link_up
    service.handle(event("connected", reader))
    assert not service.core.link_up, "decided before the reader's retained tips and states came again"
    service.handle(event("subscribed", reader))
    assert service.core.link_up


def test_the_work_connection_back_counts_only_once_its_subscriptions_are_in(service: DeciderService) -> None:
    bring_up(service)
    service.handle(event("disconnected", service.link.client_id))
    service.handle(event("connected", service.link.client_id))
    assert not service.core.link_up
    service.handle(event("subscribed", service.link.client_id))
    assert service.core.link_up


def test_subscriptions_in_before_the_connection_event_count_it_up(service: DeciderService) -> None:
    # (A connection with nothing to subscribe to reports its subscriptions done first.)
    bring_up(service)
    reader = service.readers[0].client_id
    service.handle(event("disconnected", reader))
    service.handle(event("subscribed", reader))
    service.handle(event("connected", reader))
    assert service.core.link_up
