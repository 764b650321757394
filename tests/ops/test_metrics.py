"""The decider's Prometheus endpoint, scraped over HTTP."""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bpfailover.decider.metrics import DeciderMetrics
from bpfailover.protocol.wire import DecisionEvent, NodeInputs
from bpfailover.rejections import Rejections


@pytest.fixture
def metrics() -> Iterator[DeciderMetrics]:
    m = DeciderMetrics()
    yield m
    m.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_endpoint_exposes_node_pool_failover_and_rejection_metrics(metrics: DeciderMetrics) -> None:
    port = metrics.serve(0)
    inputs = {
        "bp1": NodeInputs(age=412.5, online=True, role="relay", epoch=5, eligible=False, why_not="stale"),
        "bp2": NodeInputs(age=3.0, online=True, role="producer", epoch=5, eligible=False, skew=0.4),
        "bp3": NodeInputs(age=None, online=False, role="unknown", epoch=4),
    }
    metrics.observe_event(
        DecisionEvent(pool="pool1", at=1.0, kind="failover", from_="bp1", to="bp2", epoch=5, inputs=inputs)
    )
    metrics.observe_pool("pool1", epoch=5, paused=True, frozen=False)
    metrics.observe_node("pool1", "bp2", tip_age=2.0, role="producer", online=True, kes_periods_left=42)
    Rejections("decider", __import__("logging").getLogger("test")).reject("schema", "bad tip")

    s = scrape(port)
    assert s[key("bpfailover_node_tip_age_seconds", pool="pool1", node="bp1")] == 412.5
    assert s[key("bpfailover_node_tip_age_seconds", pool="pool1", node="bp2")] == 2.0
    assert math.isinf(s[key("bpfailover_node_tip_age_seconds", pool="pool1", node="bp3")])
    assert s[key("bpfailover_node_role", pool="pool1", node="bp2", role="producer")] == 1
    assert s[key("bpfailover_node_role", pool="pool1", node="bp2", role="relay")] == 0
    assert s[key("bpfailover_node_role", pool="pool1", node="bp1", role="relay")] == 1
    assert s[key("bpfailover_node_online", pool="pool1", node="bp3")] == 0
    assert s[key("bpfailover_node_online", pool="pool1", node="bp1")] == 1
    assert s[key("bpfailover_node_clock_skew_seconds", pool="pool1", node="bp2")] == 0.4
    assert s[key("bpfailover_node_kes_periods_left", pool="pool1", node="bp2")] == 42
    assert s[key("bpfailover_failovers_total", pool="pool1", kind="failover")] == 1
    assert s[key("bpfailover_pool_epoch", pool="pool1")] == 5
    assert s[key("bpfailover_pool_paused", pool="pool1")] == 1
    assert s[key("bpfailover_decider_up")] == 1
    assert s[key("bpfailover_rejected_messages_total", component="decider", reason="schema")] >= 1


def test_only_real_producer_changes_are_counted(metrics: DeciderMetrics) -> None:
    for kind, dry, ok in (
        ("switchover", False, True),
        ("failover", True, None),
        ("control", False, True),
        ("failover", False, False),
    ):
        metrics.observe_event(DecisionEvent(pool="p", at=1.0, kind=kind, dry_run=dry, ok=ok, epoch=2))
    port = metrics.serve(0)
    s = scrape(port)
    assert s[key("bpfailover_failovers_total", pool="p", kind="switchover")] == 1
    assert key("bpfailover_failovers_total", pool="p", kind="failover") not in s


def test_two_instances_have_separate_registries() -> None:
    a, b = DeciderMetrics(), DeciderMetrics()
    a.count_change("p", "failover")
    assert (
        b.registry.get_sample_value("bpfailover_failovers_total", {"pool": "p", "kind": "failover"}) is None
    )
    assert a.registry.get_sample_value("bpfailover_failovers_total", {"pool": "p", "kind": "failover"}) == 1


def test_observe_view_reads_the_decider_core_view(metrics: DeciderMetrics) -> None:
    from bpfailover.decider.model import Context, NodeView, Now, PoolView
    from bpfailover.settings import DeciderSettings
    from tests.ops import fabricate as fab

    now = Now(mono=100.0, wall=1_750_000_000.0)
    tip = fab.tip("pool1", "bp1", now.wall, age=7, kes=12)
    view = PoolView(
        id="pool1",
        nodes={
            "bp1": NodeView(
                "bp1",
                100,
                last_tip=tip,
                tip_time=tip.tip_time,
                state=fab.state("pool1", "bp1", now.wall, role="producer", epoch=3),
            ),
            "bp2": NodeView("bp2", 90),
        },
        initial_producer="bp1",
        dry_run=False,
        epoch=3,
        frozen=True,
    )
    metrics.observe_view(view, Context(DeciderSettings(), "d1", 30.0), now)
    get = metrics.registry.get_sample_value
    assert get("bpfailover_node_tip_age_seconds", {"pool": "pool1", "node": "bp1"}) == 7.0
    assert get("bpfailover_node_tip_age_seconds", {"pool": "pool1", "node": "bp2"}) == math.inf
    assert get("bpfailover_node_role", {"pool": "pool1", "node": "bp1", "role": "producer"}) == 1
    assert get("bpfailover_node_online", {"pool": "pool1", "node": "bp2"}) == 0
    assert get("bpfailover_node_kes_periods_left", {"pool": "pool1", "node": "bp1"}) == 12
    assert get("bpfailover_pool_epoch", {"pool": "pool1"}) == 3
    assert get("bpfailover_pool_frozen", {"pool": "pool1"}) == 1
    assert get("bpfailover_node_epoch", {"pool": "pool1", "node": "bp1"}) == 3
    assert get("bpfailover_node_epoch", {"pool": "pool1", "node": "bp2"}) == 0
    assert get("bpfailover_pool_stale_after_seconds", {"pool": "pool1"}) == 300


def test_a_pools_counters_start_at_zero_with_its_view(metrics: DeciderMetrics) -> None:
    from bpfailover.decider.model import Context, NodeView, Now, PoolView
    from bpfailover.settings import DeciderSettings

    get = metrics.registry.get_sample_value
    assert get("bpfailover_failovers_total", {"pool": "pool1", "kind": "failover"}) is None
    view = PoolView(
        id="pool1",
        nodes={"bp1": NodeView("bp1", 100), "bp2": NodeView("bp2", 90)},
        initial_producer="bp1",
        dry_run=False,
    )
    metrics.observe_view(view, Context(DeciderSettings(stale_after=120), "d1", 30.0), Now(1.0, 1e9))
    for kind in ("failover", "switchover"):
        assert get("bpfailover_failovers_total", {"pool": "pool1", "kind": kind}) == 0
    for node in ("bp1", "bp2"):
        assert get("bpfailover_fenced_total", {"pool": "pool1", "node": node}) == 0
    assert get("bpfailover_pool_stale_after_seconds", {"pool": "pool1"}) == 120
    metrics.count_change("pool1", "failover")
    metrics.observe_view(view, Context(DeciderSettings(stale_after=120), "d1", 30.0), Now(2.0, 1e9 + 1))
    assert get("bpfailover_failovers_total", {"pool": "pool1", "kind": "failover"}) == 1, "not reset"


def test_fencing_events_are_counted_for_the_fenced_node(metrics: DeciderMetrics) -> None:
    # the node reports it demoted itself; the decider counts the old producer certainly fenced
    metrics.observe_event(DecisionEvent(pool="p", at=1.0, kind="fenced", to="bp1", epoch=3))
    metrics.observe_event(DecisionEvent(pool="p", at=2.0, kind="fenced", from_="bp1", to="bp2", epoch=4))
    metrics.observe_event(DecisionEvent(pool="p", at=3.0, kind="failover", from_="bp1", to="bp2", epoch=4))
    dry = DecisionEvent(pool="p", at=4.0, kind="fenced", from_="bp2", to="bp1", epoch=5, dry_run=True)
    metrics.observe_event(dry)  # a dry-run transition's conclusion: nothing was fenced
    get = metrics.registry.get_sample_value
    assert get("bpfailover_fenced_total", {"pool": "p", "node": "bp1"}) == 2
    assert get("bpfailover_fenced_total", {"pool": "p", "node": "bp2"}) is None
    metrics.observe_event(DecisionEvent(pool="p", at=5.0, kind="fenced", to="bp2", epoch=5, dry_run=True))
    assert get("bpfailover_fenced_total", {"pool": "p", "node": "bp2"}) == 1, "its own report counts"
