"""A synthetic chain tip for demos and tests, with no cardano-node.

Slots follow the wall clock of the configured network. Blocks arrive like a real
chain's: each slot has a leader with probability 1/20 (activeSlotsCoeff 0.05), so
gaps are random, 20 slots on average (20 s with 1-second slots), and now and then
three times that or more. The random stream is seeded per node, so a node's chain
is reproducible. While the ``stall_file`` exists the tip freezes (slot, block, hash
and so tip_time), as a node that lost its peers or its disk would; once the file
is gone the node "catches up" with the blocks it missed.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

from publisher.chain import Chain
from publisher.sources.base import TipSample

AVERAGE_BLOCK_GAP = 20.0  # slots


class SimulatedChain:
    name = "simulate"

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
        self._leader_odds = 1.0 / max(average_gap, 1.0)
        self._rng = random.Random(seed)
        current = chain.slot_at(now())
        # The last block came a random while ago; the next is a fresh random gap away
        # (leadership is memoryless, so the wait does not depend on the time already passed).
        self.tip_slot = max(0, current - self._gap() + 1)
        self.block = self.tip_slot // 20  # a plausible height: one block per 20 slots since genesis
        self.next_slot = current + self._gap()

    def _gap(self) -> int:
        """Slots until the next block: geometric, as with one leader lottery per slot."""
        if self._leader_odds >= 1.0:
            return 1
        u = 1.0 - self._rng.random()  # in (0, 1]
        return 1 + int(math.log(u) / math.log1p(-self._leader_odds))

    def _block_hash(self) -> str:
        name = f"{self.seed}:{self.block}:{self.tip_slot}".encode()
        return hashlib.blake2b(name, digest_size=32).hexdigest()

    def stalled(self) -> bool:
        return self.stall_file is not None and self.stall_file.exists()

    def sample(self) -> TipSample:
        if not self.stalled():
            current = self.chain.slot_at(self._now())
            while self.next_slot <= current:
                self.block += 1
                self.tip_slot = self.next_slot
                self.next_slot += self._gap()
        return TipSample(
            slot=self.tip_slot,
            block=self.block,
            epoch=self.chain.epoch_of(self.tip_slot),
            hash=self._block_hash(),
            sync_progress="100.00",
        )
