"""Topic names: builders, a parser, and validation of pool ids and node names.

Layout (DESIGN §3), at most 4 levels below the prefix:

    {prefix}/{pool}/tip/{node}      {prefix}/{pool}/decider
    {prefix}/{pool}/state/{node}    {prefix}/{pool}/control
    {prefix}/{pool}/role/{node}     {prefix}/{pool}/events
    {prefix}/{pool}/dryrun/{node}   {prefix}/{pool}/deciders/{decider}

``deciders/{decider}`` is each decider's presence (one per decider id, see docs/decider.md);
its last level is a decider id, parsed like a node name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import AfterValidator

ID_CHARS = "[a-z0-9_-]{1,32}"
ID_PATTERN = re.compile(rf"^{ID_CHARS}$")
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})?$")
DEFAULT_PREFIX = "bpfailover"

NodeKind = Literal["tip", "state", "role", "dryrun", "deciders"]
PoolKind = Literal["decider", "control", "events"]
NODE_KINDS: tuple[str, ...] = ("tip", "state", "role", "dryrun", "deciders")
POOL_KINDS: tuple[str, ...] = ("decider", "control", "events")


class TopicError(ValueError):
    """A topic or identifier that does not fit the layout."""


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise TopicError(f"invalid {what} {value!r}: use 1-32 characters of a-z, 0-9, '_' and '-'")
    return value


def check_prefix(value: str) -> str:
    if not isinstance(value, str) or not PREFIX_PATTERN.fullmatch(value):
        raise TopicError(
            f"invalid topic prefix {value!r}: use one or two levels of letters, digits, '_' and '-'"
        )
    return value


PoolId = Annotated[str, AfterValidator(lambda v: check_id(v, "pool id"))]
NodeName = Annotated[str, AfterValidator(lambda v: check_id(v, "node name"))]


@dataclass(frozen=True)
class Topic:
    """A parsed topic: which pool, which kind, and for node topics which node."""

    pool: str
    kind: str
    node: str | None = None


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str = DEFAULT_PREFIX
    _valid: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        # Every message's topic is parsed: one match for the usual, valid ones (the checks
        # below, in one pattern); anything else takes the long way, which says what is wrong.
        valid = re.compile(
            rf"{re.escape(self.prefix)}/({ID_CHARS})/"
            rf"(?:({'|'.join(POOL_KINDS)})|({'|'.join(NODE_KINDS)})/({ID_CHARS}))"
        )
        object.__setattr__(self, "_valid", valid)

    def node_topic(self, pool: str, kind: NodeKind, node: str) -> str:
        if kind not in NODE_KINDS:
            raise TopicError(f"unknown node topic kind {kind!r}")
        return f"{self.prefix}/{check_id(pool, 'pool id')}/{kind}/{check_id(node, 'node name')}"

    def pool_topic(self, pool: str, kind: PoolKind) -> str:
        if kind not in POOL_KINDS:
            raise TopicError(f"unknown pool topic kind {kind!r}")
        return f"{self.prefix}/{check_id(pool, 'pool id')}/{kind}"

    def tip(self, pool: str, node: str) -> str:
        return self.node_topic(pool, "tip", node)

    def state(self, pool: str, node: str) -> str:
        return self.node_topic(pool, "state", node)

    def role(self, pool: str, node: str) -> str:
        return self.node_topic(pool, "role", node)

    def dryrun(self, pool: str, node: str) -> str:
        return self.node_topic(pool, "dryrun", node)

    def decider(self, pool: str) -> str:
        return self.pool_topic(pool, "decider")

    def presence(self, pool: str, decider: str) -> str:
        """One decider's own presence and status, whether it is active or standby."""
        return f"{self.prefix}/{check_id(pool, 'pool id')}/deciders/{check_id(decider, 'decider id')}"

    def control(self, pool: str) -> str:
        return self.pool_topic(pool, "control")

    def events(self, pool: str) -> str:
        return self.pool_topic(pool, "events")

    def wildcard(self, kind: str, pool: str = "+") -> str:
        """Subscription filter for one kind in one pool (or every pool with ``+``)."""
        if kind in NODE_KINDS:
            return f"{self.prefix}/{pool}/{kind}/+"
        if kind in POOL_KINDS:
            return f"{self.prefix}/{pool}/{kind}"
        raise TopicError(f"unknown topic kind {kind!r}")

    def parse(self, topic: str) -> Topic:
        """Split a topic under this prefix; raise TopicError for anything else."""
        match = self._valid.fullmatch(topic)
        if match is not None:
            pool, pool_kind, node_kind, node = match.groups()
            return Topic(pool, pool_kind) if node_kind is None else Topic(pool, node_kind, node)
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise TopicError(f"topic {topic!r} is not under prefix {self.prefix!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) == 2 and parts[1] in POOL_KINDS:
            return Topic(pool=check_id(parts[0], "pool id"), kind=parts[1])
        if len(parts) == 3 and parts[1] in NODE_KINDS:
            return Topic(
                pool=check_id(parts[0], "pool id"),
                kind=parts[1],
                node=check_id(parts[2], "node name"),
            )
        raise TopicError(f"topic {topic!r} does not match the bpfailover layout")
