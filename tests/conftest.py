"""Shared fixtures: a real MQTT broker per session, and extra ones on demand.

See tests/brokers.py for the handle's API and docs/bundle.md for the
``BPF_TEST_BROKER`` variables that pick a local, Docker or external broker.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from tests.brokers import BrokerHandle, make_broker

_made_here = pytest.StashKey[list[BrokerHandle]]()
_session_brokers: list[BrokerHandle] = []

BrokerFactory = Callable[..., BrokerHandle]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    """The session's broker: pool ``pool1``, nodes bp1, bp2, bp3, plus the test admin."""
    handle = make_broker(tmp_path_factory.mktemp("broker"), pool="pool1", nodes=["bp1", "bp2", "bp3"])
    _session_brokers.append(handle)
    yield handle
    _session_brokers.remove(handle)
    if handle.controllable:
        handle.stop()


@pytest.fixture
def broker_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerFactory]:
    """Start extra, independent brokers, each from its own fresh bundle; all stop after the test.

    ``broker_factory(pool="p2", nodes=["a", "b"], prefix="bpfailover", start=True)``
    """
    made: list[BrokerHandle] = []
    request.node.stash[_made_here] = made

    def factory(
        pool: str = "pool1",
        nodes: Iterable[str] = ("bp1", "bp2", "bp3"),
        prefix: str = "bpfailover",
        start: bool = True,
    ) -> BrokerHandle:
        handle = make_broker(
            tmp_path_factory.mktemp(f"broker-{pool}"), pool=pool, nodes=nodes, prefix=prefix, start=start
        )
        made.append(handle)
        return handle

    yield factory
    for handle in made:
        if handle.controllable:
            handle.stop()


@pytest.fixture(autouse=True)
def _session_broker_stays_up() -> Iterator[None]:
    """A test that stops the shared broker must not break the tests after it."""
    yield
    for handle in _session_brokers:
        if handle.controllable and not handle.running:
            warnings.warn(
                "a test left the session broker stopped; restarted it "
                "(use broker_factory for tests that stop or restart a broker)",
                stacklevel=1,
            )
            handle.start()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Attach the end of the broker logs to a failing test's report."""
    report = yield
    if report.failed:
        handles: list[BrokerHandle] = list(item.stash.get(_made_here, []))
        funcargs = getattr(item, "funcargs", {})
        if isinstance(funcargs.get("broker"), BrokerHandle):
            handles.insert(0, funcargs["broker"])
        for handle in handles:
            tail = handle.log_tail()
            if tail:
                report.sections.append((f"broker log {handle.log_path} (end)", tail))
    return report
