"""Ed25519 signatures over RoleCommands.

The signature covers the canonical JSON of every field but ``sig``: keys sorted,
no whitespace, UTF-8. Private keys are PKCS#8 PEM files; a verify key is given
either as a PEM file or as the raw 32-byte public key in base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bpfailover.protocol.wire import ControlRequest, DeciderStatus, NodeState, RoleCommand


class SignatureError(ValueError):
    """A command whose signature is missing or does not verify."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class KeyLoadError(ValueError):
    """A key file or value that cannot be loaded."""


Signed = TypeVar("Signed", RoleCommand, ControlRequest, DeciderStatus)


def canonical_json(message: RoleCommand | ControlRequest | DeciderStatus) -> bytes:
    """The bytes a signature covers: every field but ``sig``, sorted, compact."""
    body = message.model_dump(mode="json", by_alias=True, exclude={"sig"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(message: Signed, key: Ed25519PrivateKey) -> Signed:
    signature = key.sign(canonical_json(message))
    return message.model_copy(update={"sig": base64.b64encode(signature).decode()})


def verify(message: RoleCommand | ControlRequest | DeciderStatus, key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless ``message`` carries a valid signature by ``key``."""
    what = type(message).__name__
    if not message.sig:
        raise SignatureError("unsigned", f"{what} carries no signature but a key to check it with is set")
    try:
        signature = base64.b64decode(message.sig, validate=True)
        key.verify(signature, canonical_json(message))
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError("bad_signature", f"{what} signature does not verify") from None


def sign_command(command: RoleCommand, key: Ed25519PrivateKey) -> RoleCommand:
    return sign(command, key)


def verify_command(command: RoleCommand, key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless ``command`` carries a valid signature by ``key``."""
    verify(command, key)


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (who signed), for logs and answers."""
    return public_key_b64(key)[:12]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyLoadError(f"cannot load signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyLoadError(f"signing key {path} is not an Ed25519 key")
    return key


def load_verify_key(value: str | Path) -> Ed25519PublicKey:
    """Load a public key from a PEM file path or from a base64 raw key."""
    text = str(value).strip()
    path = Path(text)
    try:
        if path.is_file():
            data = path.read_bytes()
            if b"BEGIN" in data:
                key = serialization.load_pem_public_key(data)
                if not isinstance(key, Ed25519PublicKey):
                    raise KeyLoadError(f"verify key {path} is not an Ed25519 key")
                return key
            text = data.decode().strip()
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except KeyLoadError:
        raise
    except (OSError, ValueError, binascii.Error) as exc:
        raise KeyLoadError(
            f"cannot load verify key {text[:60]!r}: expected a PEM file or a base64 Ed25519 key ({exc})"
        ) from None


def claim_backed(state: NodeState, key: Ed25519PublicKey) -> bool:
    """Whether the epoch (and the producer role) a NodeState claims is backed by the signed role
    command it carries: a command for this node, signed with ``key``, at the claimed epoch or
    above; and for an applied producer, a producer command at exactly that epoch.

    A state that claims nothing (epoch 0, not producer) needs no backing.
    """
    if state.epoch == 0 and state.role != "producer":
        return True
    command = state.command
    if command is None or command.dry_run or (command.pool, command.node) != (state.pool, state.node):
        return False
    try:
        verify_command(command, key)
    except SignatureError:
        return False
    if state.epoch > command.epoch:
        return False
    if state.role == "producer" and state.pending is None:
        return command.role == "producer" and command.epoch == state.epoch
    return True
