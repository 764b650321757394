"""Running many seeds: in this process or spread over worker processes."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from tests.sim.faults import END, Fault, run


@dataclass
class Summary:
    seeds: int = 0
    failures: list[tuple[int, str, list[str]]] = field(default_factory=list)
    excluded: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0

    def line(self) -> str:
        rate = self.sim_seconds / self.wall_seconds if self.wall_seconds else 0.0
        return (
            f"{self.seeds} seeds, {len(self.failures)} failed, {self.excluded} excluded from L (operator "
            f"needed, alert raised); {self.sim_seconds:.0f} simulated seconds in {self.wall_seconds:.1f}s "
            f"({rate:.0f} sim-s/s, {1000 * self.wall_seconds / max(1, self.seeds):.0f} ms per seed)"
        )


def _one(seed: int, mutant: str | None = None) -> tuple[int, bool, str, list[str], float, bool]:
    outcome = run(seed, mutant=mutant)
    return (
        seed,
        outcome.ok,
        str(outcome.violation or ""),
        outcome.notes,
        outcome.sim_seconds,
        bool(outcome.excluded),
    )


def run_seeds(
    seeds: range | list[int],
    *,
    workers: int | None = None,
    stop_at_first: bool = False,
    mutant: str | None = None,
) -> Summary:
    """Run every seed; with ``workers`` > 1, in that many processes (results in seed order)."""
    summary = Summary()
    started = time.perf_counter()
    workers = workers or 1
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            chunk = 4 if stop_at_first else max(1, len(seeds) // (workers * 8))
            results = pool.map(_one, seeds, [mutant] * len(seeds), chunksize=chunk)
            for result in results:
                _count(summary, result)
                if stop_at_first and summary.failures:
                    pool.shutdown(cancel_futures=True)
                    break
    else:
        for seed in seeds:
            _count(summary, _one(seed, mutant))
            if stop_at_first and summary.failures:
                break
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _count(summary: Summary, result: tuple[int, bool, str, list[str], float, bool]) -> None:
    seed, ok, violation, notes, sim_seconds, excluded = result
    summary.seeds += 1
    summary.sim_seconds += sim_seconds
    summary.excluded += excluded
    if not ok:
        summary.failures.append((seed, violation, notes))


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


__all__ = ["END", "Fault", "Summary", "default_workers", "run_seeds"]
