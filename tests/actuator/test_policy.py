"""Command acceptance: topic identity, schema, signatures and the epoch rule (pure, no I/O)."""

from __future__ import annotations

import pytest

from bpfailover.actuator.policy import CommandRejected, Expected, check_command, epoch_rule, needs_apply
from bpfailover.protocol.signing import generate_key, sign_command
from tests.actuator.helpers import command

TOPIC = "bpfailover/pool1/role/bp1"
KEY = generate_key()
EXPECTED = Expected(TOPIC, "pool1", "bp1", KEY.public_key())
UNSIGNED_OK = Expected(TOPIC, "pool1", "bp1", None)
BODY = b'{"v":1,"pool":"pool1","node":"bp1",%b,"issued_at":1.0,"decider":"d"}'


def check(
    payload: bytes,
    *,
    expected: Expected = EXPECTED,
    epoch: int = 0,
    role: str | None = None,
    applied: str = "",
) -> str:
    try:
        return check_command(
            TOPIC,
            payload,
            expected,
            stored_epoch=epoch,
            stored_role=role,  # type: ignore[arg-type]
            applied=applied or role or "relay",  # type: ignore[arg-type]
        ).kind
    except CommandRejected as exc:
        return f"rejected:{exc.reason}"


def signed(role: str, epoch: int, **extra: object) -> bytes:
    return sign_command(command(role, epoch, **extra), KEY).to_json()


# --- the epoch rule -----------------------------------------------------------------------


def test_higher_epoch_is_applied() -> None:
    assert epoch_rule(command("producer", 5), 4, "relay").kind == "apply"
    assert epoch_rule(command("relay", 1), 0, None).kind == "apply"


def test_same_epoch_same_role_is_a_confirmation() -> None:
    assert epoch_rule(command("producer", 4), 4, "producer").kind == "confirm"


def test_lower_epoch_is_rejected() -> None:
    with pytest.raises(CommandRejected) as info:
        epoch_rule(command("producer", 3), 4, "relay")
    assert info.value.reason == "stale_epoch"


def test_same_epoch_other_role_is_rejected() -> None:
    with pytest.raises(CommandRejected) as info:
        epoch_rule(command("producer", 4), 4, "relay")
    assert info.value.reason == "epoch_conflict"


def test_replayed_old_signed_command_is_rejected() -> None:
    old = signed("producer", 2)  # genuinely signed, but from an earlier epoch
    assert check(old, epoch=2, role="producer") == "confirm"
    assert check(old, epoch=3, role="relay") == "rejected:stale_epoch"


# --- signatures ---------------------------------------------------------------------------


def test_signed_command_is_accepted() -> None:
    assert check(signed("producer", 1)) == "apply"


def test_forged_command_is_rejected() -> None:
    forged = sign_command(command("producer", 9), generate_key()).to_json()
    assert check(forged) == "rejected:bad_signature"


def test_tampered_command_is_rejected() -> None:
    good = sign_command(command("relay", 9), KEY)
    tampered = good.model_copy(update={"role": "producer"}).to_json()
    assert check(tampered) == "rejected:bad_signature"


def test_unsigned_command_is_rejected_when_a_verify_key_is_set() -> None:
    assert check(command("producer", 1).to_json()) == "rejected:unsigned"


def test_unsigned_command_is_accepted_without_a_verify_key() -> None:
    assert check(command("producer", 1).to_json(), expected=UNSIGNED_OK) == "apply"


# --- identity and schema ------------------------------------------------------------------


def test_command_for_another_node_is_rejected() -> None:
    assert check(signed("producer", 1, node="bp2")) == "rejected:topic_mismatch"


def test_command_for_another_pool_is_rejected() -> None:
    assert check(signed("producer", 1, pool="pool2")) == "rejected:topic_mismatch"


def test_message_on_another_topic_is_rejected() -> None:
    with pytest.raises(CommandRejected) as info:
        check_command(
            "bpfailover/pool1/role/bp2",
            signed("producer", 1),
            EXPECTED,
            stored_epoch=0,
            stored_role=None,
            applied="relay",
        )
    assert info.value.reason == "topic"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{oops", "malformed"),
        (
            b'{"v":1,"pool":"pool1","node":"bp1","role":"king","epoch":1,"issued_at":1.0,"decider":"d"}',
            "schema",
        ),
        (
            b'{"v":1,"pool":"pool1","node":"bp1","role":"relay","epoch":0,"issued_at":1.0,"decider":"d"}',
            "schema",
        ),
        (b"x" * 9000, "oversized"),
    ],
    ids=["malformed", "unknown-role", "epoch-zero", "oversized"],
)
def test_bad_payload_is_rejected(payload: bytes, reason: str) -> None:
    assert check(payload) == f"rejected:{reason}"


def test_dry_run_command_on_the_role_topic_is_rejected() -> None:
    assert check(signed("producer", 1, dry_run=True)) == "rejected:dry_run_command"


def test_cleared_retained_message_is_not_a_command() -> None:
    assert check(b"") == "cleared"


def test_apply_only_when_role_differs() -> None:
    new_epoch_same_role = epoch_rule(command("relay", 5), 4, "relay")
    assert not needs_apply(new_epoch_same_role, "relay")
    assert needs_apply(new_epoch_same_role, "producer")
    assert needs_apply(epoch_rule(command("relay", 4), 4, "relay", "unknown"), "unknown")  # failed demotion


@pytest.mark.parametrize("applied", ["relay", "unknown"])
def test_producer_at_the_stored_epoch_is_refused_on_a_node_that_left_producer(applied: str) -> None:
    # Fenced, or a promotion that failed: the retained copy at that epoch may be a rolled-back one.
    assert check(signed("producer", 4), epoch=4, role="producer", applied=applied) == "rejected:reapply"
    assert check(signed("producer", 4), epoch=4, role="producer", applied="producer") == "confirm"
    assert check(signed("producer", 5), epoch=4, role="producer", applied=applied) == "apply"
    assert check(signed("relay", 4), epoch=4, role="relay", applied=applied) == "confirm"
