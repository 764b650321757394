"""Tips from the future: refused, counted, and the node is not eligible while they last."""

from __future__ import annotations

from bpfailover.decider.actions import Reject
from bpfailover.decider.rule import why_not
from tests.decider.sim import POOL, Sim


def test_a_producer_whose_tip_claims_the_future_is_still_failed_over() -> None:
    # A year-ahead tip_time would look fresh for ever: with it refused, the producer goes stale.
    sim = Sim()
    sim.bootstrapped()
    sim.publishers["bp1"].chain = "stalled"
    sim.publishers["bp1"].tip_time = sim.now.wall + 365 * 86400
    assert sim.run(200, until=lambda: sim.producer() == "bp2")
    assert sim.overlaps == []


def test_a_standby_whose_tip_claims_the_future_is_not_eligible_and_it_is_counted() -> None:
    sim = Sim()
    sim.bootstrapped()
    report = sim.retained[("tip", "bp2")].model_copy(
        update={"seq": 10_000, "tip_time": sim.now.wall + 3600}
    )
    actions = sim.decider.on_tip(POOL, report, sim.now, received_at=sim.now.wall)
    rejected = [a for a in actions if isinstance(a, Reject)]
    assert [(r.node, r.reason) for r in rejected] == [("bp2", "future")]
    assert "ahead of the decider's clock" in rejected[0].detail
    view = sim.decider.view(POOL)
    why = why_not(view, view.nodes["bp2"], sim.decider.ctx, sim.now)
    assert why is not None and why.startswith("tip refused")
    sim.run(30)  # sound reports again: eligible again
    assert sim.decider.view(POOL).nodes["bp2"].refused_tip is None
