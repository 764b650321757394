"""A synthetic chain tip for demos and tests, with no cardano-node.

Slots follow the wall clock of the configured network. Blocks arrive like a real
chain's: each slot has a leader with probability 1/20 (activeSlotsCoeff 0.05), so
gaps are random, 20 slots on average (20 s with 1-second slots), and now and then
three times that or more. Leadership is a hash of the pool and the slot, so every
node of a pool sees the same chain, as real nodes of one network do. While the
``stall_file`` exists the tip freezes (slot, block, hash and so tip_time), as a
node that lost its peers or its disk would; once the file is gone the node "catches
up" with the blocks it missed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from bpfailover.publisher.chain import Chain
from bpfailover.publisher.sources.base import TipSample

AVERAGE_BLOCK_GAP = 20.0  # slots


class SimulatedChain:
    """A chain whose blocks depend only on (seed, slot): every node of a pool sees the same chain.

    Each slot has a leader with probability 1/average_gap, decided by a hash of the seed
    and the slot, so nodes started at different times agree on every block, as real nodes
    of one network do. That matters for rehearsals: stalling every node at once (a
    network-wide stall) leaves them all with the same tip and the same age.
    """

    name = "simulate"
    MAX_LOOKBACK = 5000  # slots; (1 - 1/20) ** 5000 is 0 for any practical purpose

    def __init__(
        self,
        chain: Chain,
        seed: str,
        *,
        stall_file: Path | None = None,
        now: Callable[[], float] = time.time,
        average_gap: float = AVERAGE_BLOCK_GAP,
    ) -> None:
        self.chain = chain
        self.seed = seed
        self.stall_file = stall_file
        self._now = now
        self._threshold = int((1.0 / max(average_gap, 1.0)) * 2**64)
        self.tip_slot = self._latest_leader(chain.slot_at(now()))
        self.block = self._height(self.tip_slot)

    def _is_leader(self, slot: int) -> bool:
        digest = hashlib.blake2b(f"{self.seed}:{slot}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._threshold

    def _latest_leader(self, slot: int) -> int:
        for candidate in range(slot, max(-1, slot - self.MAX_LOOKBACK), -1):
            if self._is_leader(candidate):
                return candidate
        return max(0, slot - self.MAX_LOOKBACK)

    @staticmethod
    def _height(slot: int) -> int:
        return slot // 20  # a plausible height: one block per 20 slots since genesis

    def _block_hash(self) -> str:
        name = f"{self.seed}:{self.tip_slot}".encode()
        return hashlib.blake2b(name, digest_size=32).hexdigest()

    def stalled(self) -> bool:
        return self.stall_file is not None and self.stall_file.exists()

    def sample(self) -> TipSample:
        if not self.stalled():
            tip = self._latest_leader(self.chain.slot_at(self._now()))
            if tip > self.tip_slot:
                # Strictly increasing within this process; close to slot/20 across nodes.
                self.block = max(self.block + 1, self._height(tip))
                self.tip_slot = tip
        return TipSample(
            slot=self.tip_slot,
            block=self.block,
            epoch=self.chain.epoch_of(self.tip_slot),
            hash=self._block_hash(),
            sync_progress="100.00",
        )
