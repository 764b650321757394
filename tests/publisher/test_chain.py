"""Slot to unix time per network, against values published independently of this code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpfailover.publisher.chain import MAINNET, PREPROD, PREVIEW, chain_for
from bpfailover.settings import ConfigError, PublisherSettings

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("chain", "slot", "unix_time", "where"),
    [
        # Shelley hard fork: Byron start 1506203091 + 208 epochs x 21600 slots x 20 s.
        (MAINNET, 4_492_800, 1_596_059_091, "mainnet Shelley start, 2020-07-29T21:44:51Z"),
        # Block 10438546 as recorded by a db-sync explorer: time 2024-06-12T22:38:42Z.
        (MAINNET, 126_665_631, 1_718_231_922, "mainnet block 10438546"),
        # Mesh SDK's resolveSlotNo test at 2024-08-07T03:57:06Z (unix 1723003026).
        (MAINNET, 131_436_735, 1_723_003_026, "Mesh SDK mainnet slot"),
        # Koios era summary: Conway starts at slot 68,774,400, 70,416,000 s after 2022-06-01.
        (PREPROD, 68_774_400, 1_654_041_600 + 70_416_000, "preprod Conway start"),
        # 4 Byron epochs of 21600 20-second slots after the 2022-06-01 system start.
        (PREPROD, 86_400, 1_655_769_600, "preprod Shelley start, 2022-06-21T00:00:00Z"),
        (PREPROD, 67_319_826, 1_723_003_026, "Mesh SDK preprod slot"),
        # Preview genesis: systemStart 2022-10-25T00:00:00Z, 1-second slots from slot 0.
        (PREVIEW, 0, 1_666_656_000, "preview system start"),
        (PREVIEW, 56_347_026, 1_723_003_026, "Mesh SDK preview slot"),
    ],
)
def test_slot_to_time_matches_known_pairs(chain, slot, unix_time, where):
    assert chain.time_of(slot) == unix_time, where
    assert chain.slot_at(unix_time) == slot, where
    assert chain.slot_at(unix_time + 0.999) == slot, where


@pytest.mark.parametrize(
    ("chain", "fixture"),
    [
        (PREVIEW, "tip_preview_conway.json"),
        (PREPROD, "tip_preprod_conway.json"),
        (PREVIEW, "tip_preview_syncing.json"),
    ],
)
def test_epoch_layout_agrees_with_real_cardano_cli_output(chain, fixture):
    tip = json.loads((FIXTURES / fixture).read_text())
    assert chain.epoch_of(tip["slot"]) == tip["epoch"]
    epoch_start = chain.shelley_slot + (tip["epoch"] - chain.shelley_epoch) * chain.epoch_length
    assert tip["slot"] - epoch_start == tip["slotInEpoch"]
    assert tip["slotInEpoch"] + tip["slotsToEpochEnd"] == chain.epoch_length


def test_mainnet_epoch_of_real_tips():
    mary = json.loads((FIXTURES / "tip_mainnet_mary.json").read_text())
    assert MAINNET.epoch_of(mary["slot"]) == mary["epoch"] == 264
    assert MAINNET.epoch_of(126_665_631) == 490
    assert MAINNET.epoch_of(4_000_000) is None  # Byron: not this layout


def test_cardano_cli_network_flags():
    assert MAINNET.cli_network_args() == ["--mainnet"]
    assert PREPROD.cli_network_args() == ["--testnet-magic", "1"]
    assert PREVIEW.cli_network_args() == ["--testnet-magic", "2"]


def test_custom_network_uses_configured_offset_slot_length_and_magic():
    settings = PublisherSettings(
        network="custom", slot_offset=1_700_000_000, slot_length=0.2, testnet_magic=42
    )
    chain = chain_for(settings)
    assert chain.time_of(0) == 1_700_000_000
    assert chain.time_of(50) == pytest.approx(1_700_000_010)
    assert chain.slot_at(1_700_000_010.1) == 50
    assert chain.cli_network_args() == ["--testnet-magic", "42"]
    assert chain.epoch_of(50) is None


def test_custom_network_without_magic_is_a_config_error_for_cardano_cli():
    chain = chain_for(PublisherSettings(network="custom", slot_offset=0))
    with pytest.raises(ConfigError, match="testnet_magic"):
        chain.cli_network_args()


def test_testnet_magic_overrides_a_public_testnets_magic_but_not_mainnet():
    assert chain_for(PublisherSettings(network="preview", testnet_magic=7)).cli_network_args()[-1] == "7"
    assert chain_for(PublisherSettings(network="preview", testnet_magic=7)).time_of(0) == 1_666_656_000
    assert chain_for(PublisherSettings(network="mainnet", testnet_magic=7)).cli_network_args() == [
        "--mainnet"
    ]
