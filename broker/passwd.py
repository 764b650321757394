"""Mosquitto's password file format, written without the ``mosquitto_passwd`` tool.

Mosquitto ≥ 2.0 stores ``user:$7$<iterations>$<base64 salt>$<base64 hash>``, where
the hash is PBKDF2-HMAC-SHA512 over the password with a 12-byte salt and 64-byte
output. It accepts 101 iterations, the count ``mosquitto_passwd`` itself uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64


def new_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$...`` string mosquitto compares a client's password against."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` entry (for tests and sanity checks)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations), len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def passwd_line(user: str, password: str) -> str:
    if ":" in user or not user:
        raise ValueError(f"invalid mosquitto user name {user!r}")
    return f"{user}:{hash_password(password)}\n"
