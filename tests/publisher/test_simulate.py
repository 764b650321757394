"""The simulated chain, driven by a fake clock."""

from __future__ import annotations

import itertools
import statistics

from bpfailover.publisher.chain import MAINNET, PREVIEW
from bpfailover.publisher.sources.simulate import SimulatedChain

START = 1_750_000_000.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(chain: SimulatedChain, clock: FakeClock, seconds: int, step: int = 10) -> list[tuple[int, int, str]]:
    tips = []
    for _ in range(seconds // step):
        clock.now += step
        tip = chain.sample()
        tips.append((tip.slot, tip.block, tip.hash))
    return tips


def test_slots_follow_the_wall_clock_and_blocks_arrive_every_20_s_on_average():
    clock = FakeClock()
    sim = SimulatedChain(MAINNET, "pool1/bp1", now=clock)
    first = sim.sample()
    assert 0 <= MAINNET.slot_at(clock.now) - first.slot < 600
    ages = []
    for _ in range(20_000):  # 200,000 simulated seconds, sampled every 10 s
        clock.now += 10
        tip = sim.sample()
        assert tip.slot <= MAINNET.slot_at(clock.now)
        ages.append(clock.now - MAINNET.time_of(tip.slot))
    blocks = sim.block - first.block
    assert 9_400 <= blocks <= 10_600  # 200,000 s / 20 s, within about 6 standard deviations
    assert 15 < statistics.mean(ages) < 25  # a memoryless wait: the tip is ~20 s old on average
    assert max(ages) > 60  # and now and then a minute or more, as on mainnet


def test_block_numbers_hashes_and_epochs_move_together():
    clock = FakeClock()
    sim = SimulatedChain(MAINNET, "pool1/bp1", now=clock)
    tips = run(sim, clock, 3_600)
    blocks = [b for _, b, _ in tips]
    assert blocks == sorted(blocks)
    changed = [(a, b) for a, b in itertools.pairwise(tips) if a[1] != b[1]]
    assert changed and all(a[0] < b[0] and a[2] != b[2] for a, b in changed)
    unchanged = [(a, b) for a, b in itertools.pairwise(tips) if a[1] == b[1]]
    assert all(a == b for a, b in unchanged)
    tip = sim.sample()
    assert tip.epoch == MAINNET.epoch_of(tip.slot) and tip.epoch is not None and tip.epoch > 500
    assert tip.hash is not None and len(tip.hash) == 64


def test_nodes_of_a_pool_share_one_chain_whenever_they_start():
    early, late = FakeClock(), FakeClock()
    first = SimulatedChain(PREVIEW, "pool1", now=early)
    run(first, early, 1_000)
    late.now = early.now  # a second node of the pool, started 1000 s later
    second = SimulatedChain(PREVIEW, "pool1", now=late)
    a, b = run(first, early, 2_000), run(second, late, 2_000)
    assert [(slot, h) for slot, _, h in a] == [(slot, h) for slot, _, h in b]
    other = SimulatedChain(PREVIEW, "pool2", now=FakeClock())  # another pool, another chain
    leaders = {s for s in range(10_000_000, 10_002_000) if first._is_leader(s)}
    assert leaders != {s for s in range(10_000_000, 10_002_000) if other._is_leader(s)}


def test_tip_freezes_while_the_stall_file_exists_and_catches_up_after(tmp_path):
    stall = tmp_path / "stall"
    clock = FakeClock()
    sim = SimulatedChain(MAINNET, "pool1/bp1", stall_file=stall, now=clock)
    run(sim, clock, 300)
    stall.touch()
    frozen = sim.sample()
    during = run(sim, clock, 900)
    assert all(t == (frozen.slot, frozen.block, frozen.hash) for t in during)
    assert clock.now - MAINNET.time_of(frozen.slot) >= 900  # the tip ages like a stuck node's

    stall.unlink()
    after = sim.sample()
    assert after.block > frozen.block + 10  # the blocks of the last 15 minutes arrive at once
    assert MAINNET.slot_at(clock.now) - after.slot < 300
