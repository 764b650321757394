"""Parsing cardano-cli's tip JSON: real samples, and every kind of bad output."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfailover.publisher.sources.base import SourceError, one_line
from bpfailover.publisher.sources.tipjson import parse_tip_json

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("fixture", "slot", "block", "epoch", "hash_start", "progress"),
    [
        ("tip_preview_conway.json", 90_754_380, 3_590_825, 1050, "3a4e1a81", "100.00"),
        ("tip_preprod_conway.json", 84_316_455, 3_206_582, 198, "b6ad4dd9", "100.00"),
        ("tip_preview_syncing.json", 292_713, 14_646, 3, "d72cb1cf", "1.22"),
        ("tip_mainnet_mary.json", 29_062_271, 5_698_710, 264, "34197ddb", None),
        ("tip_mainnet_legacy.json", 16_910_651, 5_102_089, None, "e5984f27", None),
    ],
)
def test_real_cardano_cli_samples(fixture, slot, block, epoch, hash_start, progress):
    tip = parse_tip_json((FIXTURES / fixture).read_bytes())
    assert (tip.slot, tip.block, tip.epoch) == (slot, block, epoch)
    assert tip.hash is not None and tip.hash.startswith(hash_start) and len(tip.hash) == 64
    assert tip.sync_progress == progress


def test_node_at_origin_has_no_tip():
    with pytest.raises(SourceError, match=r"no tip slot \(era Byron\).*origin"):
        parse_tip_json((FIXTURES / "tip_origin.json").read_text())


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (
            b"Usage: cardano-cli query tip\n  (--mainnet | --testnet-magic NATURAL)",
            "is not JSON: 'Usage: cardano-cli",
        ),
        (b'{"slot": 12', "is not JSON"),
        (b"[1, 2, 3]", "is not a JSON object"),
        (b'"100.00"', "is not a JSON object"),
        (b"null", "is not a JSON object"),
        (b'{"slot": "90754380", "block": 1}', "slot is not a number"),
        (b'{"slot": -5}', "slot is negative"),
        (b'{"slot": 1.5}', "slot is not a whole number"),
        (b'{"slot": true}', "slot is not a number"),
        (b'{"slot": 10, "block": [1]}', "block is not a number"),
        (b'{"slot": 10, "epoch": {}}', "epoch is not a number"),
        (b'{"slot": 10, "hash": "not hex!"}', "hash is not a hex block hash"),
        (b'{"slot": 10, "hash": 12}', "hash is not a hex block hash"),
        (b"\xff\xfe\x00garbage", "is not JSON"),
        (b"[" * 100_000, "too long"),
        (b"[" * 5_000 + b"]" * 5_000, "is not"),
    ],
)
def test_bad_output_is_a_one_line_source_error(output, reason):
    with pytest.raises(SourceError) as caught:
        parse_tip_json(output, "cardano-cli output")
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message and len(message) <= 300


def test_slot_zero_is_a_tip_and_null_fields_are_absent():
    tip = parse_tip_json(b'{"slot": 0, "block": null, "epoch": null, "hash": null}')
    assert (tip.slot, tip.block, tip.epoch, tip.hash) == (0, None, None, None)


def test_upper_case_hash_is_normalised():
    tip = parse_tip_json(b'{"slot": 5, "hash": "ABCDEF01"}')
    assert tip.hash == "abcdef01"


def test_one_line_keeps_the_first_non_empty_line_and_shortens():
    assert one_line("\n\n  first  \nsecond") == "first"
    assert one_line("") == "unknown error"
    assert one_line("x" * 400) == "x" * 297 + "..."
