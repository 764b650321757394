"""The actuator's role states and the moves between them (h11's transition tables).

A node is, as far as its actuator knows, in one of six states:

    relay       runs as relay                     producer   runs as producer
    fenced      relay, demoted by its own fence   unknown    an apply failed or was cut short
    promoting   a promotion under way             demoting   a demotion (or a fence) under way

Every apply starts with a move in ``STARTS`` and ends in one of ``ENDS``; anything else is
refused (``IllegalMove``) before the method runs. That is the whole life of a role: a
promotion only from a node not running producer, a demotion or a fence only from one that
might, and an apply never on top of another.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from bpfailover.protocol.wire import AppliedRole, Role

Start = Literal["promote", "demote", "fence"]


class RoleState(StrEnum):
    RELAY = "relay"
    FENCED = "fenced"
    PROMOTING = "promoting"
    PRODUCER = "producer"
    DEMOTING = "demoting"
    UNKNOWN = "unknown"


class IllegalMove(RuntimeError):
    """A move the table does not allow: a bug, refused before anything runs on the node."""


R = RoleState
STARTS: dict[tuple[RoleState, Start], RoleState] = {
    # A promotion: from a node not running producer (a fenced one only at a higher epoch: policy).
    (R.RELAY, "promote"): R.PROMOTING,
    (R.FENCED, "promote"): R.PROMOTING,
    (R.UNKNOWN, "promote"): R.PROMOTING,
    # A demotion: from a node that runs, or may run, producer.
    (R.PRODUCER, "demote"): R.DEMOTING,
    (R.UNKNOWN, "demote"): R.DEMOTING,
    # A fence: the same, on the node's own initiative.
    (R.PRODUCER, "fence"): R.DEMOTING,
    (R.UNKNOWN, "fence"): R.DEMOTING,
}
ENDS: dict[RoleState, frozenset[RoleState]] = {
    R.PROMOTING: frozenset({R.PRODUCER, R.UNKNOWN}),
    # A demotion that failed but whose stop_command stopped the node ends as relay.
    R.DEMOTING: frozenset({R.RELAY, R.FENCED, R.UNKNOWN}),
}


def role_state(applied: AppliedRole, pending: Role | None, fenced: bool) -> RoleState:
    """The named state of what the controller records."""
    if pending == "producer":
        return R.PROMOTING
    if pending == "relay":
        return R.DEMOTING
    if applied == "relay":
        return R.FENCED if fenced else R.RELAY
    return R.PRODUCER if applied == "producer" else R.UNKNOWN


def start(state: RoleState, move: Start) -> RoleState:
    """The state an apply moves to; IllegalMove if the table has no such move."""
    try:
        return STARTS[(state, move)]
    except KeyError:
        raise IllegalMove(f"cannot {move} a node that is {state}") from None


def end(during: RoleState, after: RoleState) -> RoleState:
    """Check where an apply ended; IllegalMove if that is not one of its outcomes."""
    if after not in ENDS.get(during, frozenset()):
        raise IllegalMove(f"an apply that was {during} cannot end {after}")
    return after
