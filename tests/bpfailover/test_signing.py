from __future__ import annotations

import pytest

from bpfailover.protocol.signing import (
    KeyLoadError,
    SignatureError,
    canonical_json,
    generate_key,
    load_signing_key,
    load_verify_key,
    private_key_pem,
    public_key_b64,
    public_key_pem,
    sign_command,
    verify_command,
)
from bpfailover.protocol.wire import RoleCommand


def command(**over: object) -> RoleCommand:
    body: dict[str, object] = {
        "pool": "pool1",
        "node": "bp1",
        "role": "producer",
        "epoch": 3,
        "issued_at": 1700000000.25,
        "decider": "d1",
        "reason": "failover",
    }
    body.update(over)
    return RoleCommand(**body)  # type: ignore[arg-type]


def test_signed_command_verifies_after_the_wire() -> None:
    key = generate_key()
    signed = sign_command(command(), key)
    received = RoleCommand.model_validate_json(signed.to_json())
    verify_command(received, key.public_key())


def test_canonical_json_is_independent_of_sig_and_sorted() -> None:
    a = canonical_json(command())
    b = canonical_json(command(sig="whatever"))
    assert a == b
    assert a.startswith(b'{"decider":"d1"')


def test_missing_signature_fails_verification() -> None:
    with pytest.raises(SignatureError) as err:
        verify_command(command(), generate_key().public_key())
    assert err.value.reason == "unsigned"


@pytest.mark.parametrize("change", [{"role": "relay"}, {"epoch": 4}, {"node": "bp2"}])
def test_tampered_command_fails_verification(change: dict[str, object]) -> None:
    key = generate_key()
    signed = sign_command(command(), key)
    tampered = signed.model_copy(update=change)
    with pytest.raises(SignatureError) as err:
        verify_command(tampered, key.public_key())
    assert err.value.reason == "bad_signature"


def test_signature_by_another_key_fails() -> None:
    forged = sign_command(command(), generate_key())
    with pytest.raises(SignatureError):
        verify_command(forged, generate_key().public_key())


def test_garbage_signature_fails() -> None:
    with pytest.raises(SignatureError):
        verify_command(command(sig="!!not-base64!!"), generate_key().public_key())


def test_keys_load_from_files_and_base64(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    (tmp_path / "k").write_bytes(private_key_pem(key))
    (tmp_path / "k.pub").write_bytes(public_key_pem(key.public_key()))
    loaded = load_signing_key(tmp_path / "k")
    signed = sign_command(command(), loaded)
    verify_command(signed, load_verify_key(tmp_path / "k.pub"))
    verify_command(signed, load_verify_key(public_key_b64(key.public_key())))


def test_unloadable_keys_are_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "junk").write_text("junk")
    with pytest.raises(KeyLoadError):
        load_signing_key(tmp_path / "junk")
    with pytest.raises(KeyLoadError):
        load_verify_key("not-a-key")
