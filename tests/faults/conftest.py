"""Fixtures of the fault suite: a cluster per test, results in a JSON file, logs on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Cluster, append_result, summary_line

_clusters = pytest.StashKey[list[Cluster]]()

ClusterFactory = Callable[..., Cluster]


@pytest.fixture(scope="session")
def results_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every scenario's result, appended as it finishes: ``<pytest basetemp>/fault-results.json``."""
    return tmp_path_factory.getbasetemp() / "fault-results.json"


@pytest.fixture
def cluster_factory(
    request: pytest.FixtureRequest, broker_factory: Any, tmp_path: Path
) -> Iterator[ClusterFactory]:
    """``cluster_factory(nodes=["bp1", "bp2"], **Cluster options)``: a fresh bundle, broker and
    cluster, started (``start=False`` to start it yourself); everything is killed afterwards."""
    made: list[Cluster] = []
    request.node.stash[_clusters] = made

    def factory(nodes: list[str] | None = None, start: bool = True, decider: bool = True,
                **options: Any) -> Cluster:
        broker = broker_factory(pool="pool1", nodes=nodes or ["bp1", "bp2"])
        cluster = Cluster(broker, tmp_path / f"cluster{len(made)}", **options)
        made.append(cluster)
        if start:
            cluster.start(decider=decider)
        return cluster

    yield factory
    for cluster in made:
        cluster.close()


@pytest.fixture
def report(
    results_file: Path, record_property: Callable[[str, object], None]
) -> Callable[[dict[str, Any]], None]:
    """Print a scenario's summary line, record it as a property and append it to the results."""

    def add(result: dict[str, Any]) -> None:
        line = summary_line(result)
        print("\n" + line)
        record_property("fault_summary", line)
        append_result(results_file, result)

    return add


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Attach the end of every process log and the checker's timeline to a failing scenario."""
    report = yield
    if report.failed:
        for cluster in item.stash.get(_clusters, []):
            for title, tail in cluster.log_tails():
                if tail:
                    report.sections.append((f"log {title} (end)", tail))
            if cluster.checker is not None:
                t0 = cluster.events[0][0] if cluster.events else cluster.check.started
                lines = "\n".join(
                    f"{k}: {v}" for k, v in cluster.check.report(t0).items() if k != "samples"
                )
                report.sections.append(("split-brain checker (times relative to the first action)", lines))
    return report
