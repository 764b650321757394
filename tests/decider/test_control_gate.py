"""The control gate: signed, recent, never replayed; who asked comes from the key."""

from __future__ import annotations

from bpfailover.decider.control_gate import CONTROL_MAX_AGE, ControlGate
from bpfailover.protocol.signing import generate_key, key_id, sign
from bpfailover.protocol.wire import ControlRequest

NOW = 1_800_000_000.0
KEY = generate_key()


def request(request_id: str = "r1", sent_at: float = NOW, **fields: object) -> ControlRequest:
    body: dict[str, object] = {"action": "failover", "to": "bp2", "force": True, "requested_by": "mallory"}
    body.update(fields)
    return ControlRequest(request_id=request_id, pool="pool1", sent_at=sent_at, **body)  # type: ignore[arg-type]


def test_a_signed_recent_request_passes_once_and_names_the_key() -> None:
    gate = ControlGate(KEY.public_key())
    signed = sign(request(), KEY)
    assert gate.check(signed, NOW + 1) == (None, f"operator key {key_id(KEY.public_key())}")
    refused, _ = gate.check(signed, NOW + 2)
    assert refused is not None and "seen before" in refused


def test_unsigned_forged_or_tampered_requests_are_refused() -> None:
    gate = ControlGate(KEY.public_key())
    assert "unsigned" in (gate.check(request(), NOW).refused or "")
    other = sign(request("r2"), generate_key())
    assert "does not verify" in (gate.check(other, NOW).refused or "")
    tampered = sign(request("r3", to="bp1"), KEY).model_copy(update={"to": "bp3"})
    assert "does not verify" in (gate.check(tampered, NOW).refused or "")


def test_a_stale_or_future_request_is_refused() -> None:
    gate = ControlGate(KEY.public_key())
    old = sign(request("r4", sent_at=NOW - CONTROL_MAX_AGE - 1), KEY)
    assert "stale" in (gate.check(old, NOW).refused or "")
    ahead = sign(request("r5", sent_at=NOW + CONTROL_MAX_AGE + 1), KEY)
    assert "in the future" in (gate.check(ahead, NOW).refused or "")


def test_without_an_operator_key_unsigned_requests_pass_as_before() -> None:
    gate = ControlGate(None)
    assert gate.check(request("r6"), NOW) == (None, "mallory")
