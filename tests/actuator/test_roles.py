"""The role table: named states, the moves an apply may start and end with, nothing else."""

from __future__ import annotations

import pytest

from bpfailover.actuator.controller import RoleController
from bpfailover.actuator.methods import build_method
from bpfailover.actuator.roles import ENDS, STARTS, IllegalMove, RoleState, end, role_state, start
from tests.actuator.helpers import NodeFiles

R = RoleState


@pytest.mark.parametrize(
    ("applied", "pending", "fenced", "state"),
    [
        ("relay", None, False, R.RELAY),
        ("relay", None, True, R.FENCED),
        ("producer", None, False, R.PRODUCER),
        ("unknown", None, False, R.UNKNOWN),
        ("relay", "producer", False, R.PROMOTING),
        ("producer", "relay", False, R.DEMOTING),
    ],
)
def test_every_recorded_role_has_a_name(applied: str, pending: str | None, fenced: bool, state: R) -> None:
    assert role_state(applied, pending, fenced) == state  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "move"),
    [
        (R.PRODUCER, "promote"),  # already producer: nothing to run
        (R.PROMOTING, "promote"),  # never an apply on top of another
        (R.DEMOTING, "promote"),
        (R.RELAY, "demote"),
        (R.FENCED, "fence"),
        (R.RELAY, "fence"),
        (R.PROMOTING, "fence"),
    ],
)
def test_a_move_not_in_the_table_is_refused(state: R, move: str) -> None:
    assert (state, move) not in STARTS
    with pytest.raises(IllegalMove):
        start(state, move)  # type: ignore[arg-type]


def test_an_apply_ends_only_in_one_of_its_outcomes() -> None:
    assert end(R.DEMOTING, R.FENCED) == R.FENCED
    assert R.RELAY not in ENDS[R.PROMOTING]  # a failed promotion is unknown, never a trusted relay
    with pytest.raises(IllegalMove):
        end(R.PROMOTING, R.RELAY)
    with pytest.raises(IllegalMove):
        end(R.DEMOTING, R.PRODUCER)


def test_the_controller_refuses_an_illegal_move_before_the_method_runs(node_files: NodeFiles) -> None:
    controller = RoleController("pool1", "bp1", build_method(node_files.settings()), node_files.store())
    controller.start()
    assert controller.state == R.RELAY
    with pytest.raises(IllegalMove, match="cannot demote a node that is relay"):
        controller._apply("relay", "test", abort=None, move="demote")
    assert node_files.restart.calls() == []
