"""One running pool for the whole hostile-input suite (tests/hostile/world.py): starting a
decider and a real actuator per test would cost more than every batch together."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.actuator.helpers import make_node_files
from tests.brokers import BrokerHandle
from tests.hostile.world import World


@pytest.fixture(scope="module")
def world(broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    broker.require_own_broker("relies on the bundle's ACL")
    broker.clear_retained()
    tmp = tmp_path_factory.mktemp("hostile")
    running = World(broker, tmp, make_node_files(tmp))
    try:
        yield running
    finally:
        running.close()
        broker.clear_retained()
