"""``python -m tests.sim``: a soak of the whole-system simulation, or the replay of one seed.

python -m tests.sim --seeds 10000 [--start 0] [--workers 2]
python -m tests.sim --seed 1234 --verbose      # the schedule, every fault, log line and event
"""

from __future__ import annotations

import argparse
import sys

from tests.sim.faults import run
from tests.sim.soak import default_workers, run_seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--verbose", action="store_true", help="with --seed: print the whole trace")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--stop", action="store_true", help="stop at the first failure")
    parser.add_argument("--mutant", help="revert one safety fix (tests.sim.mutants) to see the sim catch it")
    args = parser.parse_args(argv)
    if args.seed is not None:
        outcome = run(args.seed, verbose=args.verbose, mutant=args.mutant)
        print("\n".join(outcome.notes) if outcome.notes else f"seed {args.seed}: ok")
        return 0 if outcome.ok else 1
    summary = run_seeds(
        range(args.start, args.start + args.seeds),
        workers=args.workers,
        stop_at_first=args.stop,
        mutant=args.mutant,
    )
    for seed, violation, notes in summary.failures:
        print(f"FAILED seed {seed}: {violation}")
        print("  " + notes[1] if len(notes) > 1 else "")
        print(f"  replay: python -m tests.sim --seed {seed} --verbose")
    print(summary.line())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
