"""The whole system when a producer's node stops forging with a fresh tip (``idle``: restarted
with the non-producing flag, its keys in place): its actuator SIGHUPs it back, and when that does
not work the decider fails it over after not_forging_after, with an alert."""

from __future__ import annotations

from tests.sim.faults import Fault, run
from tests.sim.world import DECIDER


def trace(schedule: list[Fault]) -> str:
    outcome = run(5, schedule, verbose=True)
    assert outcome.ok, "\n".join(outcome.notes)
    return "\n".join(outcome.notes)


def test_an_idle_producer_is_sighuped_back_by_its_actuator_and_stays_producer() -> None:
    text = trace([Fault(60.0, "idle", "producer", 80.0)])
    assert "re-applying producer: producer applied, but the node is seen not forging" in text
    assert "producer re-applied and seen" in text
    assert "not_forging" not in text and "failover" not in text


def test_an_idle_producer_that_a_sighup_cannot_fix_is_failed_over_after_not_forging_after() -> None:
    text = trace([Fault(60.0, "idle", "producer", 80.0, "broken")])
    assert "re-applying producer failed" in text
    line = next(x for x in text.splitlines() if " dec1 failover bp1->" in x)
    at = float(line.split()[0])
    assert DECIDER.not_forging_after <= at - 60.0 <= DECIDER.not_forging_after + 2.0
    assert "dec1 not_forging -->bp1" in text
