"""guild-operators' env file: the role is the ``POOL_NAME`` line, toggled in place.

guild's ``cnode.sh`` sources ``scripts/env`` and starts the node with the KES key, VRF key
and operational certificate of ``$POOL_FOLDER/$POOL_NAME`` when all three files exist.
Stake-pool operators switch a node between producer and relay with one line of that
file's "User Variables" section:

    POOL_NAME="mypool"     # producer: the keys of priv/pool/mypool are passed to the node
    #POOL_NAME=""          # relay: guild's default, the name is unset

Only that line is touched; every other byte of the file (guild's updater rewrites the rest
of it, keeping the user section) stays as it is. The comment after the value keeps its
column, so that a promotion followed by a demotion gives back the original file.

Pure text functions: the method (``env_swap``) does the reading and the atomic write.
"""

from __future__ import annotations

import re
from typing import Literal

# One assignment of POOL_NAME at the start of a line, active or commented out:
# indent, "#" (commented), "export ", the value (quoted or bare), then the rest (a comment).
LINE = re.compile(
    r"""^(?P<indent>[ \t]*)(?P<hash>\#[ \t]*)?(?P<export>export[ \t]+)?POOL_NAME=
        (?P<value>"[^"\n]*"|'[^'\n]*'|[^\s#;]*)
        (?P<rest>[^\r\n]*)(?P<eol>\r?\n?)$""",
    re.VERBOSE,
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Detected = Literal["producer", "relay", "other", "missing"]


class NoPoolNameLine(ValueError):
    """The file has no ``POOL_NAME=`` line, commented or not: nothing can be toggled safely."""


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _matches(text: str) -> list[tuple[int, re.Match[str]]]:
    lines = text.splitlines(keepends=True)
    return [(i, m) for i, line in enumerate(lines) if (m := LINE.match(line))]


def active_value(text: str) -> str | None:
    """The value bash would give POOL_NAME from this file's assignments (the last active one wins);
    None when no line assigns it."""
    value = None
    for _, m in _matches(text):
        if not m["hash"]:
            value = _unquote(m["value"])
    return value


def detect(text: str, name: str) -> Detected:
    """``producer`` when POOL_NAME is ``name``, ``relay`` when it is unset or empty (only commented
    lines, or ``POOL_NAME=""``), ``other`` for another pool's name, ``missing`` with no line at all."""
    if not _matches(text):
        return "missing"
    value = active_value(text)
    if not value:
        return "relay"
    return "producer" if value == name else "other"


def _rewrite(m: re.Match[str], line: str) -> str:
    """``line`` in place of the match, the trailing comment kept at its column."""
    rest = m["rest"]
    stripped = rest.lstrip(" \t")
    if stripped and rest != stripped:
        old_column = m.start("rest") + (len(rest) - len(stripped))
        pad = max(1, old_column - len(m["indent"]) - len(line))
        rest = " " * pad + stripped
    return f"{m['indent']}{line}{rest}{m['eol']}"


def set_role(text: str, role: Literal["producer", "relay"], name: str) -> str:
    """The file with POOL_NAME set to ``name`` (producer) or commented out as ``#POOL_NAME=""``
    (relay); every other line unchanged. Raise NoPoolNameLine when there is no line to toggle.

    Producer: the last active assignment gets the name (bash's last one wins); with none, the
    first commented-out line becomes active. Relay: every active assignment is commented out.
    """
    if not NAME.match(name):
        raise ValueError(f"pool name {name!r} is not a plain folder name")
    lines = text.splitlines(keepends=True)
    found = _matches(text)
    if not found:
        raise NoPoolNameLine("no POOL_NAME= line (commented or not) to toggle")
    active = [(i, m) for i, m in found if not m["hash"]]
    if role == "relay":
        for i, m in active:
            lines[i] = _rewrite(m, '#POOL_NAME=""')
    else:
        i, m = active[-1] if active else found[0]
        lines[i] = _rewrite(m, f'{m["export"] or ""}POOL_NAME="{name}"')
    return "".join(lines)
