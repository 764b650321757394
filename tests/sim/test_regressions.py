"""Seeds and schedules the simulation once failed on, kept as tests.

- ``FIXED``: failures of the code at the time, since fixed: they must pass.
- ``OPEN``: failures of the current code, reported and not fixed yet: expected to fail
  (strict, so the test says when a fix lands and the entry moves to ``FIXED``).
- ``MUTANTS``: for each safety fix, the first seed that fails with the fix reverted
  (``tests.sim.mutants``): it must fail with the fix reverted and pass with it.
"""

from __future__ import annotations

import pytest

from tests.sim.faults import Fault, run

FIXED: list[tuple[int, list[Fault], str]] = [
    # A producer that fenced itself (its actuator link lost its publishes) while its tips stayed
    # fresh was never re-commanded: no producer for ever (fixed on main in 49c3b0e).
    (
        18,
        [Fault(56.84, "partition", "producer/act", 38.06, "tx_lost"), Fault(74.89, "sigterm", "bp1", 19.71)],
        "L",
    ),
    # A clean stop whose DISCONNECT was lost: that connection's Will replaced the retained
    # clean-stop report, and a decider that was away read only the Will and counted on a fence.
    # Fixed: the report goes out on a last connection whose own Will is that same report.
    (
        1304,
        [
            Fault(89.47, "dec_pause", "dec1", 9.4),
            Fault(93.82, "sigterm", "bp1", 57.94, "cut"),
            Fault(173.45, "suspend", "dhost1", 3.76),
            Fault(266.59, "flap", "bp1", 76.18, "6.08"),
        ],
        "S",
    ),
]

OPEN: list[tuple[int, list[Fault], str, str]] = []

MUTANTS: list[tuple[str, int]] = [
    # class 1: the old producer re-promoted by a rolled-back producer command. (Seed 39 until the
    # simulated actuators saw their nodes forge: their extra reports move its timing, and its
    # schedule even without the new idle fault no longer overlaps with the fix reverted.)
    ("reapply", 25),
    ("recommand", 0),  # class 2: a fenced producer never re-commanded: no producer
    ("clean_stop", 0),  # class 3: a clean stop promising a fence it will not carry out
    # ("stop_will": the decider's own memory of a clean stop's connection) is a second layer now:
    # the clean-stop report goes out on a connection whose Will is that same report, so no seed
    # in 400 fails with it reverted alone.
    # class 4: CONNACKs as contact. (A Will restarts the decider's wait only for a connection
    # that got a report through, so this fix alone now carries the class.)
    ("contact_any", 20),
]


@pytest.mark.parametrize(("seed", "schedule", "kind"), FIXED, ids=[str(s) for s, _, _ in FIXED])
def test_fixed(seed: int, schedule: list[Fault], kind: str) -> None:
    outcome = run(seed, schedule)
    assert outcome.ok, "\n".join(outcome.notes)


@pytest.mark.parametrize(("seed", "schedule", "kind", "why"), OPEN, ids=[str(s) for s, *_ in OPEN])
def test_open(seed: int, schedule: list[Fault], kind: str, why: str) -> None:
    outcome = run(seed, schedule)
    if outcome.ok:
        pytest.fail(f"seed {seed} passes now ({why}): move it to FIXED")
    assert outcome.violation is not None and outcome.violation.kind == kind
    pytest.xfail(f"{kind}: {why}")


@pytest.mark.parametrize(("mutant", "seed"), MUTANTS, ids=[m for m, _ in MUTANTS])
def test_the_simulation_catches_the_fix_reverted(mutant: str, seed: int) -> None:
    assert not run(seed, mutant=mutant).ok, f"{mutant}: seed {seed} no longer catches it"
    assert run(seed).ok
