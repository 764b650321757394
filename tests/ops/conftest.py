"""A broker of the ops tests' own, so retained messages of other suites never leak into status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import BrokerHandle, make_broker


@pytest.fixture(scope="module")
def ops_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    handle = make_broker(tmp_path_factory.mktemp("ops-broker"), pool="pool1", nodes=["bp1", "bp2", "bp3"])
    yield handle
    if handle.controllable:
        handle.stop()


@pytest.fixture
def clean_broker(ops_broker: BrokerHandle) -> BrokerHandle:
    """The module's broker with no retained message left in the pool."""
    ops_broker.clear_retained()
    return ops_broker
