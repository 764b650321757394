"""The Grafana dashboard ``deploy/grafana/bpfailover.json`` against a running decider's metrics.

The dashboard is checked as Grafana would import it (its shape, a Prometheus data source
variable, pool and node variables, annotations), and every PromQL expression in it (panel
targets, annotations, variable queries) is parsed with a real PromQL parser after Grafana's
variables are substituted. The metric names those expressions select must be ones that a
decider serving ``/metrics`` exports: an in-process ``DeciderService`` on the test broker, with
two test nodes that report tips (with KES periods) and apply its role commands, and one
malformed tip so that the rejection counter has a series.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser as promql  # a test extra: a Prometheus-compatible PromQL parser (Rust)
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bpfailover.decider.service import DeciderService
from bpfailover.protocol.topics import Topics
from tests.brokers import BrokerHandle, free_port, wait_for
from tests.decider.test_service import FakeNode, Running, decider_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = DEPLOY / "bpfailover.json"
OPERATIONS = DEPLOY.parents[1] / "docs" / "operations.md"
DATASOURCE = "${datasource}"
NODES = ("bp1", "bp2")

# Grafana's own interval variables, replaced by a duration before the query reaches Prometheus.
INTERVALS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{__(?:rate_interval|interval|range)\}")
# A dashboard variable: $pool, ${pool} or ${pool:regex}.
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.+),)?\s*(?P<label>\w+)\s*\)\s*$", re.S)

Samples = dict[str, set[str]]  # metric (sample) name -> the label names its series carry


# --- reading the dashboard ----------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"one template variable named {name!r}"
    return found[0]


def variable_query(var: dict[str, Any]) -> str:
    query = var["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


def annotation_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]


def variable_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL inside the query variables: ``label_values(selector, label)``."""
    exprs = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = variable_query(var)
        match = LABEL_VALUES.match(query)
        assert match is not None, f"variable {var['name']}: only label_values() queries are expected: {query}"
        if match["selector"]:
            exprs.append(match["selector"])
    return exprs


def all_exprs(dashboard: dict[str, Any]) -> list[str]:
    return panel_exprs(dashboard) + annotation_exprs(dashboard) + variable_exprs(dashboard)


# --- PromQL ---------------------------------------------------------------------------------------


def as_promql(expr: str) -> str:
    """The expression as Prometheus receives it: intervals become 5m, ``$pool`` becomes ``__var_pool__``."""
    expr = INTERVALS.sub("5m", expr)
    return VARIABLE.sub(lambda m: f"__var_{m[1] or m[2]}__", expr)


def selectors(expr: str) -> list[Any]:
    """Every vector selector of a dashboard expression (a syntax error raises ValueError)."""
    found: list[Any] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql.VectorSelector):
            found.append(node)
        return True

    promql.walk(promql.parse(as_promql(expr)), visit)
    return found


def metric_name(selector: Any) -> str:
    if selector.name is not None:
        return str(selector.name)
    by_name = [m for m in selector.matchers.matchers if m.name == "__name__"]
    assert len(by_name) == 1 and by_name[0].op == promql.MatchOp.Equal, f"no metric name: {selector}"
    return str(by_name[0].value)


def metric_names(expr: str) -> set[str]:
    return {metric_name(s) for s in selectors(expr)}


def matches_variable(selector: Any, label: str) -> bool:
    return any(
        m.name == label and m.op == promql.MatchOp.Re and m.value == f"__var_{label}__"
        for m in selector.matchers.matchers
    )


# --- the running decider ------------------------------------------------------------------------


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


Series = list[tuple[str, dict[str, str], float]]  # (sample name, labels, value)


def scrape(port: int) -> Series:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(metrics_text(port))
        for sample in family.samples
    ]


def has(series: Series, name: str, value: float | None = None, **labels: str) -> bool:
    return any(
        n == name and labels.items() <= got.items() and (value is None or v == value) for n, got, v in series
    )


def every_node_reported(port: int) -> Samples | None:
    """The scrape once the pool has a producer, each node a tip with skew and KES, and the
    malformed tip was counted: the state in which every metric the decider has is exported."""
    series = scrape(port)
    ready = (
        all(
            has(series, name, pool="pool1", node=node)
            for name in ("bpfailover_node_clock_skew_seconds", "bpfailover_node_kes_periods_left")
            for node in NODES
        )
        and has(series, "bpfailover_node_role", 1.0, pool="pool1", node="bp1", role="producer")
        and has(series, "bpfailover_rejected_messages_total", component="decider")
    )
    if not ready:
        return None
    samples: Samples = {}
    for name, labels, _ in series:
        samples.setdefault(name, set()).update(labels)
    return samples


@pytest.fixture(scope="module")
def exported(ops_broker: BrokerHandle) -> Iterator[Samples]:
    """What a running decider's /metrics serves, for a pool whose nodes report."""
    ops_broker.clear_retained()
    port = free_port()
    nodes = []
    for name in NODES:
        node = FakeNode(ops_broker, name)
        node.kes_periods_left = 42
        nodes.append(node.start())
    running = Running(DeciderService(decider_config(ops_broker, metrics_port=port)))
    try:
        wait_for(lambda: nodes[0].role == "producer", 15, "the decider to make bp1 producer")
        ops_broker.publish(Topics(ops_broker.prefix).tip(ops_broker.pool, "bp2"), b"{not json", retain=False)
        yield wait_for(lambda: every_node_reported(port), 15, "every metric of the pool on /metrics")
    finally:
        running.close()
        for node in nodes:
            node.close()
        ops_broker.clear_retained()


# --- the tests ------------------------------------------------------------------------------------


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "bpfailover" and dashboard["title"]
    assert dashboard.get("id") is None, "an exported dashboard carries no database id"
    assert 36 <= dashboard["schemaVersion"] <= 41
    found = [p for p in panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in found}) == len(found), "panel ids are unique"
    cells = [
        (x, y)
        for p in found
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(set(cells)) == len(cells), "no two panels overlap"
    for panel in found:
        grid = panel["gridPos"]
        assert panel["title"] and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), f"{panel['title']}: refIds are unique"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_data_source_is_a_prometheus_variable_and_pool_and_node_are_variables() -> None:
    dashboard = load_dashboard()
    datasource = variable(dashboard, "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    pool, node = variable(dashboard, "pool"), variable(dashboard, "node")
    for var in (pool, node):
        assert var["type"] == "query" and var["datasource"] == {"type": "prometheus", "uid": DATASOURCE}
        assert var["multi"] and var["includeAll"], f"{var['name']}: several pools or nodes at once"
    pool_query = LABEL_VALUES.match(variable_query(pool))
    node_query = LABEL_VALUES.match(variable_query(node))
    assert pool_query is not None and pool_query["label"] == "pool"
    assert node_query is not None and node_query["label"] == "node"
    assert "$pool" in node_query["selector"], "the node list follows the chosen pools"


def test_failovers_and_fencing_are_annotations() -> None:
    dashboard = load_dashboard()
    annotations = {a["name"]: a for a in dashboard["annotations"]["list"] if "expr" in a}
    by_metric = {name: metric_names(a["expr"]) for name, a in annotations.items()}
    failovers = [n for n, names in by_metric.items() if "bpfailover_failovers_total" in names]
    fencing = [n for n, names in by_metric.items() if "bpfailover_fenced_total" in names]
    assert failovers and fencing, by_metric
    for name in failovers + fencing:
        assert annotations[name]["enable"], f"{name} is shown by default"
        assert annotations[name]["datasource"] == {"type": "prometheus", "uid": DATASOURCE}


def test_panels_show_tip_age_against_stale_after_roles_epochs_online_and_rejections() -> None:
    dashboard = load_dashboard()
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                by_metric.setdefault(name, []).append(panel)
    tip_age = by_metric["bpfailover_node_tip_age_seconds"]
    assert any(p in by_metric["bpfailover_pool_stale_after_seconds"] for p in tip_age), (
        "tip age is drawn against stale_after in one panel"
    )
    for name in ("bpfailover_node_role", "bpfailover_pool_epoch", "bpfailover_node_online"):
        over_time = [p for p in by_metric[name] if p["type"] in ("state-timeline", "timeseries")]
        assert over_time, f"{name} over time"
    rejected = [t["expr"] for p in by_metric["bpfailover_rejected_messages_total"] for t in p["targets"]]
    assert any(re.search(r"by \([^)]*\breason\b", e) for e in rejected), "rejected messages by reason"


def test_the_provisioning_file_loads_the_dashboard_from_the_folder_the_docs_name() -> None:
    config = yaml.safe_load((DEPLOY / "provisioning.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    folder = provider["options"]["path"]
    assert f"{folder}/bpfailover.json" in OPERATIONS.read_text(), "docs/operations.md copies the file there"


def test_every_expression_is_valid_promql() -> None:
    for expr in all_exprs(load_dashboard()):
        assert selectors(expr), f"selects no metric: {expr}"


def test_every_metric_the_dashboard_queries_is_exported_by_a_running_decider(exported: Samples) -> None:
    queried = set().union(*(metric_names(e) for e in all_exprs(load_dashboard())))
    missing = sorted(queried - exported.keys())
    assert not missing, f"the dashboard queries metrics the decider does not export: {missing}"
    assert len(queried) >= 10


def test_per_pool_and_per_node_series_follow_the_pool_and_node_variables(exported: Samples) -> None:
    dashboard = load_dashboard()
    for expr in panel_exprs(dashboard) + annotation_exprs(dashboard):
        for selector in selectors(expr):
            labels = exported.get(metric_name(selector), set())
            for label in ("pool", "node"):
                if label in labels:
                    assert matches_variable(selector, label), f'{selector} lacks {label}=~"${label}": {expr}'
