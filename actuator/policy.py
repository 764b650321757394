"""Which role commands the actuator accepts: pure functions, no I/O, no clock.

A command is checked in this order: exact topic, size/schema/identity (``wire.decode``),
not a dry-run command, signature (when a verify key is configured), then the epoch rule
against the stored epoch and role (DESIGN §7):

- higher epoch  -> ``Verdict("apply")``
- same epoch, same role -> ``Verdict("confirm")`` (re-report; a relay command re-applies
  relay on a node not known to run it)
- same epoch, producer, on a node that does not run producer (it fenced itself, or the
  promotion failed or was interrupted) -> ``CommandRejected("reapply")``: a producer
  command is carried out once. After a fence the retained copy at that epoch may be one a
  rolled-back broker brought back while another node was promoted at a higher epoch;
  only a higher epoch promotes this node again (the decider re-commands it).
- lower epoch, or same epoch with another role -> ``CommandRejected``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bpfailover.protocol.signing import SignatureError, verify_command
from bpfailover.protocol.wire import AppliedRole, PayloadRejected, Role, RoleCommand, decode


class CommandRejected(ValueError):
    """A command that must change nothing; ``reason`` is a short counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Verdict:
    kind: Literal["apply", "confirm", "cleared"]
    command: RoleCommand | None = None


@dataclass(frozen=True)
class Expected:
    """Who this actuator is: the only topic and identity it takes commands for."""

    topic: str
    pool: str
    node: str
    verify_key: Ed25519PublicKey | None = None


def epoch_rule(
    command: RoleCommand, stored_epoch: int, stored_role: Role | None, applied: AppliedRole = "producer"
) -> Verdict:
    """Apply the epoch rule; raise CommandRejected for a stale, conflicting or spent command."""
    if command.epoch > stored_epoch:
        return Verdict("apply", command)
    if command.epoch < stored_epoch:
        raise CommandRejected(
            "stale_epoch",
            f"{command.role} at epoch {command.epoch} is older than stored epoch {stored_epoch}",
        )
    if command.role != stored_role:
        raise CommandRejected(
            "epoch_conflict",
            f"{command.role} at epoch {command.epoch} but {stored_role} was applied at that epoch",
        )
    if command.role == "producer" and applied != "producer":
        raise CommandRejected(
            "reapply",
            f"producer at epoch {command.epoch} again, but this node left producer at that epoch "
            f"(it runs {applied}); only a higher epoch promotes it again",
        )
    return Verdict("confirm", command)


def check_command(
    topic: str,
    payload: bytes,
    expected: Expected,
    *,
    stored_epoch: int,
    stored_role: Role | None,
    applied: AppliedRole,
) -> Verdict:
    """Decide what to do with one message from the broker; raise CommandRejected if refused."""
    if topic != expected.topic:
        raise CommandRejected("topic", f"message on {topic!r}; this actuator only takes {expected.topic!r}")
    if not payload:
        # An empty retained message clears the topic: there is no command, nothing to do.
        return Verdict("cleared")
    try:
        command = decode(RoleCommand, payload, pool=expected.pool, node=expected.node)
    except PayloadRejected as exc:
        raise CommandRejected(exc.reason, exc.detail) from None
    if command.dry_run:
        raise CommandRejected("dry_run_command", "a dry-run command on the role topic is never applied")
    if expected.verify_key is not None:
        try:
            verify_command(command, expected.verify_key)
        except SignatureError as exc:
            raise CommandRejected(exc.reason, str(exc).split(": ", 1)[-1]) from None
    return epoch_rule(command, stored_epoch, stored_role, applied)


def needs_apply(verdict: Verdict, applied: AppliedRole) -> bool:
    """Whether the node must be changed: never when the commanded role is already applied.

    A new epoch for the role already applied only updates the stored epoch.
    """
    return verdict.command is not None and verdict.command.role != applied
