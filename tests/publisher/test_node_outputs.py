"""Outputs of real nodes that the sources must understand (fixtures name their public source)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfailover.protocol.wire import TipReport
from bpfailover.publisher.chain import chain_for
from bpfailover.publisher.report import TipReporter
from bpfailover.publisher.sources.base import SourceError
from bpfailover.publisher.sources.cardano_cli import parse_cli_tip
from bpfailover.publisher.sources.prometheus import parse_metrics
from bpfailover.settings import PublisherSettings

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_text(name: str) -> str:
    text = (FIXTURES / name).read_text()
    assert text.startswith("# fixture source: "), "every fixture names its public source first"
    return text


def cli_output(name: str) -> tuple[bytes, bytes]:
    lines = fixture_text(name).splitlines()[1:]
    fields = dict(line.split(": ", 1) for line in lines)
    return fields["stdout"].encode() + b"\n", fields["stderr"].encode() + b"\n"


def test_cardano_cli_printing_null_is_an_error_that_says_why() -> None:
    out, err = cli_output("cli_tip_null.txt")
    with pytest.raises(SourceError) as failed:
        parse_cli_tip(out, err)
    message = str(failed.value)
    assert "printed null" in message and "local state is unavailable" in message
    assert "AcquireFailurePointNotOnChain" in message  # cardano-cli's own reason, passed on
    with pytest.raises(SourceError, match="local state is unavailable; the node may still be starting"):
        parse_cli_tip(b"null\n")


def test_the_new_tracing_names_of_nodes_8_to_9_1_are_read() -> None:
    sample = parse_metrics(fixture_text("metrics_new_tracing_chaindb_9.prom"))
    assert (sample.slot, sample.block, sample.epoch) == (90754380, 3590825, 1050)


def test_a_running_producer_keeps_a_replay_progress_below_100_and_its_tip_counts() -> None:
    # node 11.0.1 as quoted: blockReplayProgress stays at 99.998 while it forges.
    text = fixture_text("metrics_bp_11.0.1_excerpt.prom") + "cardano_node_metrics_slotNum_int 96000000\n"
    sample = parse_metrics(text)
    assert (sample.slot, sample.block) == (96000000, 4686677)


def test_a_node_replaying_its_ledger_is_reported_starting() -> None:
    text = "cardano_node_metrics_blockReplayProgress_real 42.5\ncardano_node_metrics_forging_enabled_int 0\n"
    with pytest.raises(SourceError, match=r"starting, replaying its ledger \(42.5% done\)") as failed:
        parse_metrics(text)
    assert failed.value.status == "starting"
    reporter = TipReporter(
        pool="pool1", node="bp1", chain=chain_for(PublisherSettings(network="mainnet")), source="prometheus"
    )
    report, _ = reporter.report(failed.value, now=1_800_000_000.0)
    assert (report.ok, report.node_status) == (False, "starting")
    assert TipReport.model_validate_json(report.to_json()).node_status == "starting"



def test_the_tip_block_hash_label_of_nodes_10_5_is_the_reports_hash() -> None:
    sample = parse_metrics(fixture_text("metrics_new_tracing_tipblock_10.5.prom"))
    assert (sample.slot, sample.block, sample.epoch) == (90754380, 3590825, 1050)
    assert sample.hash == "3a4e1a81f69c4772a86b1ac643f25cca7a43fdb450a07adff45c864a246546af"
    assert sample.forging is False


def test_a_tip_block_label_that_is_not_a_hash_is_ignored() -> None:
    text = 'cardano_node_metrics_slotNum_int 5\ncardano_node_metrics_tipBlock{hash="<script>"} 1\n'
    assert parse_metrics(text).hash is None


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.prom")))
def test_every_exposition_fixture_names_its_source_or_is_listed_and_parses(name: str) -> None:
    text = (FIXTURES / name).read_text()
    listed = f"`{name}`" in (FIXTURES / "README.md").read_text()
    assert text.startswith("# fixture source: ") or listed
    try:
        sample = parse_metrics(text)
    except SourceError as exc:  # a node that has no tip yet says why
        assert exc.status == "starting" or "slotNum" in str(exc)
    else:
        assert sample.slot > 0
