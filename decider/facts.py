"""What the decider's core can be told: one typed fact per kind of input (h11's events).

The shell (``bpfailover.decider.service``) and the whole-system simulation (``tests/sim``) turn
what the broker delivers, and the passing of time, into these, and hand each to
``Decider.process(fact, now)``, which returns the actions to publish. Nothing else
changes the core's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from bpfailover.protocol.wire import ControlRequest, DeciderStatus, NodeState, RoleCommand, TipReport


@dataclass(frozen=True)
class TipSeen:
    """A tip report; ``received_at`` on the decider's wall clock (for skew and freshness)."""

    pool: str
    report: TipReport
    received_at: float
    retained: bool = False


@dataclass(frozen=True)
class StateSeen:
    """An actuator's NodeState (a live report, a retained one, or its Last Will)."""

    pool: str
    state: NodeState
    # The epoch it claims is backed by the signed command it carries (``signing.claim_backed``),
    # or there is no key to check with. An untrusted claim never moves the pool's epoch.
    trusted: bool = True


@dataclass(frozen=True)
class RoleReadBack:
    """A role command on a role topic: our own echo, or one the broker retained."""

    pool: str
    command: RoleCommand
    retained: bool


@dataclass(frozen=True)
class StatusReadBack:
    """A DeciderStatus on the pool's decider topic."""

    pool: str
    status: DeciderStatus
    retained: bool


@dataclass(frozen=True)
class PresenceSeen:
    """A decider's presence on ``deciders/{id}``: another decider's, a duplicate's, or our own."""

    pool: str
    status: DeciderStatus
    retained: bool


@dataclass(frozen=True)
class ControlAsked:
    """An operator's request."""

    pool: str
    request: ControlRequest
    refused: str | None = None  # why the shell's checks refused it (signature, age, replay)
    by: str | None = None  # who asked, as the shell could tell (the operator key's id)


@dataclass(frozen=True)
class LinkChanged:
    """Every broker connection the decider needs is up (True), or one is down (False)."""

    up: bool


@dataclass(frozen=True)
class RetainedReadDone:
    """Everything the broker retained has been read since the (re)subscription."""


@dataclass(frozen=True)
class Tick:
    """The periodic timer: every pool is evaluated."""


@dataclass(frozen=True)
class Due:
    """A scheduled instant came (a producer's tip going stale): those pools are evaluated."""


Fact = (
    TipSeen
    | StateSeen
    | RoleReadBack
    | StatusReadBack
    | PresenceSeen
    | ControlAsked
    | LinkChanged
    | RetainedReadDone
    | Tick
    | Due
)
