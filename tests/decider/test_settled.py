"""The settled shortcut is checked against the full rule: a shortcut that drifts is caught."""

from __future__ import annotations

import pytest

from bpfailover.decider.model import Now
from bpfailover.decider.pool import PoolMachine, Settled
from tests.decider.sim import Sim


def test_a_shortcut_that_hides_a_due_failover_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = Sim()
    sim.bootstrapped()

    def always_settled(self: PoolMachine, now: Now) -> Settled:
        return Settled(now, now.wall + 3600, now.mono + 3600)

    monkeypatch.setattr(PoolMachine, "_settled", always_settled)
    sim.publishers["bp1"].chain = "dead"
    with pytest.raises(AssertionError, match="judged settled, but the rule would do"):
        sim.run(400, until=lambda: sim.producer() == "bp2")
