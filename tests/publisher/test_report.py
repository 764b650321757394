"""Building TipReports: pure logic with the time passed in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bpfailover.protocol.wire import TipReport, decode
from bpfailover.publisher.chain import MAINNET, PREVIEW
from bpfailover.publisher.report import TipReporter
from bpfailover.publisher.sources.base import SourceError, TipSample
from bpfailover.publisher.sources.tipjson import parse_tip_json

FIXTURES = Path(__file__).parent / "fixtures"
NOW = 1_757_410_400.0  # 20 s after the fixture's tip (preview slot 90,754,380)


def reporter(chain=PREVIEW, **kwargs) -> TipReporter:
    return TipReporter(pool="pool1", node="bp1", chain=chain, source="cardano-cli", **kwargs)


def preview_tip() -> TipSample:
    return parse_tip_json((FIXTURES / "tip_preview_conway.json").read_bytes())


def test_report_carries_the_tip_and_its_time_from_slot_and_network():
    report, _ = reporter().report(preview_tip(), NOW)
    assert report.ok and report.error is None
    assert (report.slot, report.block, report.epoch) == (90_754_380, 3_590_825, 1050)
    assert report.hash == "3a4e1a81f69c4772a86b1ac643f25cca7a43fdb450a07adff45c864a246546af"
    assert report.tip_time == 1_666_656_000 + 90_754_380
    assert (report.network, report.source, report.sent_at) == ("preview", "cardano-cli", NOW)


def test_tip_time_ignores_sync_progress():
    syncing = parse_tip_json((FIXTURES / "tip_preview_syncing.json").read_bytes())
    report, _ = reporter().report(syncing, NOW)
    assert syncing.sync_progress == "1.22"
    assert report.ok and report.tip_time == PREVIEW.time_of(292_713)  # 2022-10-28, years old


def test_seq_grows_and_boot_stays_within_one_process_start():
    r = reporter()
    reports = [r.report(preview_tip(), NOW + i)[0] for i in range(5)]
    assert [x.seq for x in reports] == [1, 2, 3, 4, 5]
    assert len({x.boot for x in reports}) == 1
    assert reporter().boot != r.boot
    assert len(r.boot) == 16


def test_a_tip_that_has_not_advanced_keeps_its_old_tip_time():
    r = reporter()
    first, _ = r.report(preview_tip(), NOW)
    later, _ = r.report(preview_tip(), NOW + 600)
    assert later.sent_at - first.sent_at == 600
    assert later.tip_time == first.tip_time
    moved = TipSample(slot=90_754_400, block=3_590_826, hash="ab" * 32)
    newer, _ = r.report(moved, NOW + 610)
    assert newer.tip_time == first.tip_time + 20


def test_source_failure_is_an_ok_false_report_with_the_reason_and_no_tip():
    r = reporter()
    r.report(preview_tip(), NOW)
    report, _ = r.report(SourceError("cardano-cli query tip did not answer within 10s"), NOW + 10)
    assert report.ok is False
    assert report.error == "cardano-cli query tip did not answer within 10s"
    assert (report.slot, report.block, report.hash, report.tip_time) == (None, None, None, None)
    assert report.seq == 2


def test_a_sample_the_wire_model_rejects_becomes_ok_false_not_a_crash():
    report, change = reporter().report(TipSample(slot=5, hash="f" * 200), NOW)
    assert report.ok is False
    assert report.error is not None and report.error.startswith("source gave an unusable tip: hash:")
    assert change is not None and change.kind == "failing"


def test_reports_round_trip_through_the_wire_decoder():
    r = reporter(chain=MAINNET)
    for outcome in (preview_tip(), SourceError("line one\nline two " + "x" * 900)):
        report, _ = r.report(outcome, NOW)
        again = decode(TipReport, report.to_json(), pool="pool1", node="bp1")
        assert again == report
    assert report.error is not None and report.error == "line one"


def test_health_changes_are_reported_once_per_change():
    r = reporter()
    ok, fail = preview_tip(), SourceError("node socket /x does not exist")
    kinds = [
        (c.kind, c.failed_samples) if c else None
        for _, c in (
            r.report(o, NOW) for o in (ok, ok, fail, fail, SourceError("other reason"), ok, ok, fail)
        )
    ]
    assert kinds == [
        ("first_tip", 0),
        None,
        ("failing", 0),
        None,
        None,
        ("recovered", 3),
        None,
        ("failing", 0),
    ]


def test_first_sample_failing_is_a_change_too():
    _, change = reporter().report(SourceError("no node socket"), NOW)
    assert change is not None and (change.kind, change.detail) == ("failing", "no node socket")


def test_resending_the_last_outcome_takes_a_new_seq_but_is_not_another_sample():
    r = reporter()
    fail = SourceError("no node socket")
    r.report(fail, NOW)
    again, change = r.report(fail, NOW + 5, new_sample=False)
    assert (again.seq, again.ok, again.sent_at, change) == (2, False, NOW + 5, None)
    _, recovered = r.report(preview_tip(), NOW + 10)
    assert recovered is not None and (recovered.kind, recovered.failed_samples) == ("recovered", 1)


def test_a_tip_ahead_of_the_hosts_clock_is_refused_with_why():
    # A mainnet node read with network "preview" (a later slot offset): a tip years ahead,
    # which the decider would take as fresh for ever. Never sent as ok.
    mainnet_tip = dataclasses.replace(preview_tip(), slot=165_000_000)
    report, change = reporter().report(mainnet_tip, NOW)
    assert not report.ok and report.tip_time is None
    assert report.error is not None and "ahead of this host's clock" in report.error
    assert "publisher.network (preview)" in report.error
    assert change is not None and change.kind == "failing"
    near, _ = reporter().report(preview_tip(), PREVIEW.time_of(90_754_380) - 29.0)
    assert near.ok  # a host clock 29 s behind is within MAX_TIP_AHEAD
