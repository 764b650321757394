"""Slot arithmetic per Cardano network: the unix time of a slot, and back.

Since Shelley every public network has 1-second slots, so the time of a slot is
``offset + slot``, where ``offset`` is the unix time slot 0 would have had with
Shelley slots all along (the Byron era's 20-second slots are folded into it).
For mainnet: Byron started 1506203091 (2017-09-23T21:44:51Z); 208 Byron epochs of
21600 slots of 20 s end at slot 4492800 = 1596059091, so offset = 1591566291.
A ``custom`` network (a private testnet) gives its own offset and slot length.

Never derive a tip's time from ``syncProgress``: it reads 100.00 while the node
is still minutes behind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bpfailover.settings import ConfigError, PublisherSettings


@dataclass(frozen=True)
class Chain:
    """One network's slot clock and, where known, its Shelley epoch layout."""

    network: str
    offset: float
    slot_length: float = 1.0
    magic: int | None = None  # testnet magic; unused on mainnet
    shelley_slot: int | None = None  # first Shelley slot and its epoch, for epoch numbers
    shelley_epoch: int = 0
    epoch_length: int = 432_000

    def time_of(self, slot: int) -> float:
        """Unix time at the start of ``slot``."""
        return self.offset + slot * self.slot_length

    def slot_at(self, unix_time: float) -> int:
        """The slot in progress at ``unix_time``."""
        return int((unix_time - self.offset) // self.slot_length)

    def epoch_of(self, slot: int) -> int | None:
        """The epoch of a Shelley-era slot, or None where the layout is unknown."""
        if self.shelley_slot is None or slot < self.shelley_slot:
            return None
        return self.shelley_epoch + (slot - self.shelley_slot) // self.epoch_length

    def cli_network_args(self) -> list[str]:
        """cardano-cli's network selection: ``--mainnet`` or ``--testnet-magic N``."""
        if self.network == "mainnet":
            return ["--mainnet"]
        if self.magic is None:
            raise ConfigError(f"publisher.network {self.network!r} needs publisher.testnet_magic")
        return ["--testnet-magic", str(self.magic)]


MAINNET = Chain("mainnet", 1591566291, shelley_slot=4_492_800, shelley_epoch=208)
# preprod: system start 2022-06-01T00:00:00Z, 4 Byron epochs (86400 slots of 20 s).
PREPROD = Chain("preprod", 1655683200, magic=1, shelley_slot=86_400, shelley_epoch=4)
# preview: system start 2022-10-25T00:00:00Z, Shelley-style slots from slot 0, 1-day epochs.
PREVIEW = Chain("preview", 1666656000, magic=2, shelley_slot=0, epoch_length=86_400)

KNOWN = {c.network: c for c in (MAINNET, PREPROD, PREVIEW)}


def chain_for(settings: PublisherSettings) -> Chain:
    """The Chain the publisher's settings describe; ``testnet_magic`` overrides a testnet's magic."""
    if settings.network == "custom":
        if settings.slot_offset is None:
            raise ConfigError("publisher.network 'custom' needs publisher.slot_offset")
        return Chain("custom", settings.slot_offset, settings.slot_length, magic=settings.testnet_magic)
    chain = KNOWN[settings.network]
    if chain.network != "mainnet" and settings.testnet_magic is not None:
        return replace(chain, magic=settings.testnet_magic)
    return chain
