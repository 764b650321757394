"""What the core asks its shell to do: plain data, published in the order given."""

from __future__ import annotations

from dataclasses import dataclass

from bpfailover.protocol.wire import DeciderStatus, DecisionEvent, RoleCommand


@dataclass(frozen=True)
class PublishRole:
    """Retained on ``{prefix}/{pool}/role/{node}``; the shell signs it when a key is set."""

    pool: str
    node: str
    command: RoleCommand


@dataclass(frozen=True)
class PublishDryRun:
    """Retained on ``{prefix}/{pool}/dryrun/{node}``: what would have been commanded."""

    pool: str
    node: str
    command: RoleCommand


@dataclass(frozen=True)
class PublishStatus:
    """Retained on ``{prefix}/{pool}/decider``."""

    pool: str
    status: DeciderStatus


@dataclass(frozen=True)
class PublishEvent:
    """Not retained, on ``{prefix}/{pool}/events``."""

    pool: str
    event: DecisionEvent


@dataclass(frozen=True)
class Reject:
    """An input the core refused (e.g. a time ahead of our clock): count it and log it once."""

    pool: str
    node: str
    reason: str  # a short counter label
    detail: str


@dataclass(frozen=True)
class PublishPresence:
    """Retained on ``{prefix}/{pool}/deciders/{decider}``: this decider's own presence."""

    pool: str
    status: DeciderStatus


Action = PublishRole | PublishDryRun | PublishStatus | PublishEvent | Reject | PublishPresence
