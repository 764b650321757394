"""Hypothesis strategies for hostile messages: every wire message type, valid at the core and
then mutated (huge and non-finite numbers, far-future times, wrong pool or node, oversized and
control-character strings, unknown fields, forged, foreign or replayed signatures), plus raw junk.

Each message is drawn for a topic of the bundle, mostly of the type that topic carries, so that
many pass the schema and reach the decider's and the actuators' logic.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from bpfailover.protocol.signing import sign
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import MAX_PAYLOAD, ControlRequest, DeciderStatus, RoleCommand
from tests.hostile.world import Raw, dumps

HUGE_INT = Raw("1" + "0" * 4300)  # 4,301 digits: past Python's int/str conversion limit
NUMBER_MUTANTS: list[Any] = [
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw("1e300"),
    Raw("-1e300"),
    HUGE_INT,
    Raw("-" + "9" * 4300),
    2**53 + 1,
    2**64,
    -1,
    0,
    1e18,
    0.5,
    True,
    "12",
    None,
    [],
    {},
]
STRING_MUTANTS: list[Any] = [
    "",
    "x" * 600,
    "\x00\x01\x07\x1b[31m\r\n",
    "bp1/../#",
    "+",
    "pool2",
    "bp9",
    "BP1",
    "\u202e\ufeff" * 20,
    "ü" * 100,
    7,
    None,
]
ACTIONS = ["switchover", "failover", "pause", "resume", "maintenance"]
ROLES = ["producer", "relay", "unknown", "leader", "", None]


@dataclass
class Context:
    """What a strategy needs to know about the running pool; ``captured`` grows with the suite
    (genuine signed messages seen on the broker, for replays)."""

    pool: str
    nodes: list[str]
    topics: Topics
    foreign_key: Ed25519PrivateKey
    operator_key: Ed25519PrivateKey
    captured: dict[str, list[bytes]] = field(default_factory=dict)

    def topic_names(self) -> list[tuple[str, str | None]]:
        """(kind, node or decider id) of every topic in the bundle, and an unknown node's."""
        names: list[tuple[str, str | None]] = []
        for kind in ("tip", "state", "role", "dryrun"):
            names += [(kind, n) for n in [*self.nodes, "bp9"]]
        names += [("decider", None), ("deciders", "decider"), ("deciders", "decider-2")]
        names += [("control", None), ("events", None)]
        return names

    def topic(self, kind: str, node: str | None) -> str:
        base = f"{self.topics.prefix}/{self.pool}/{kind}"
        return base if node is None else f"{base}/{node}"


def mostly(valid: st.SearchStrategy[Any], *hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times in four: most messages pass the schema and reach the logic behind it."""
    return st.one_of(valid, valid, valid, *hostile) if len(hostile) == 1 else st.one_of(valid, *hostile)


def times() -> st.SearchStrategy[Any]:
    """A time: recent, old, a year ahead, or a number mutant."""
    now = time.time()
    return st.one_of(
        st.floats(now - 5, now + 0.5),
        st.floats(now - 5, now + 0.5),
        st.sampled_from([now + 365 * 86400, now + 3600, now - 3600, 0.0, 2.0**33, 2.0**33 + 1]),
        st.sampled_from(NUMBER_MUTANTS),
    )


def counts() -> st.SearchStrategy[Any]:
    return mostly(st.integers(0, 2**53), st.sampled_from(NUMBER_MUTANTS))


def mutate(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """Set, drop or add up to three fields (none, half of the time)."""
    body = dict(body)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        how = draw(st.sampled_from(["number", "string", "drop", "extra", "v"]))
        key = draw(st.sampled_from(sorted(body))) if body else "v"
        if how == "number":
            body[key] = draw(st.sampled_from(NUMBER_MUTANTS))
        elif how == "string":
            body[key] = draw(st.sampled_from(STRING_MUTANTS))
        elif how == "drop":
            body.pop(key, None)
        elif how == "extra":
            body["extra_" + draw(st.sampled_from(["field", "sig2", "admin"]))] = True
        else:
            body["v"] = draw(st.sampled_from([2, 0, "1", None]))
    return body


Signable = type[RoleCommand | ControlRequest | DeciderStatus]


def signature(draw: st.DrawFn, ctx: Context, model: Signable, body: dict[str, Any]) -> dict[str, Any]:
    """No signature, garbage, a valid signature of other bytes, or a signature by a foreign key."""
    how = draw(st.sampled_from(["none", "garbage", "foreign", "foreign", "other_bytes"]))
    body = {k: v for k, v in body.items() if k != "sig"}
    if how == "garbage":
        body["sig"] = draw(
            st.sampled_from(["", "!!!", "A" * 200, base64.b64encode(b"\0" * 64).decode(), "x" * 201])
        )
    elif how in ("foreign", "other_bytes"):
        try:
            message = model.model_validate_json(dumps(body))
        except ValueError:
            body["sig"] = base64.b64encode(b"\1" * 64).decode()
            return body
        signed = sign(message, ctx.foreign_key if how == "foreign" else ctx.operator_key)
        if how == "other_bytes":
            # A real operator signature, moved onto a request it does not cover.
            return {**body, "sig": signed.sig, "request_id": f"moved-{draw(st.integers(0, 10**6))}"}
        body["sig"] = signed.sig
    return body


@st.composite
def tip_report(draw: st.DrawFn, ctx: Context, node: str) -> dict[str, Any]:
    now = time.time()
    body: dict[str, Any] = {
        "v": 1,
        "pool": ctx.pool,
        "node": node,
        "boot": draw(st.sampled_from(["node-boot", "hostile", "x" * 64])),
        "seq": draw(counts()),
        "sent_at": draw(st.one_of(st.just(now), times())),
        "ok": draw(st.booleans()),
        "tip_time": draw(times()),
    }
    if draw(st.booleans()):
        body.update(slot=draw(counts()), block=draw(counts()), epoch=draw(counts()), peers=draw(counts()))
        kes = st.one_of(st.integers(-(2**53), 2**53), st.sampled_from(NUMBER_MUTANTS))
        body["kes_periods_left"] = draw(kes)
        body["forging"] = draw(st.sampled_from([True, False, None, "yes"]))
    return mutate(draw, body)


@st.composite
def role_command(draw: st.DrawFn, ctx: Context, node: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "pool": ctx.pool,
        "node": node,
        "role": draw(st.sampled_from(ROLES)),
        "epoch": draw(mostly(st.integers(1, 2**53), st.sampled_from(NUMBER_MUTANTS))),
        "issued_at": draw(times()),
        "decider": draw(st.sampled_from(["decider", "decider-2", "intruder"])),
        "reason": "hostile",
        "dry_run": draw(st.booleans()),
    }
    return signature(draw, ctx, RoleCommand, mutate(draw, body))


@st.composite
def node_state(draw: st.DrawFn, ctx: Context, node: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "pool": ctx.pool,
        "node": node,
        "boot": "hostile",
        "online": draw(st.booleans()),
        "role": draw(st.sampled_from(ROLES)),
        "epoch": draw(counts()),
        "fenced": draw(st.booleans()),
        "dry_run": draw(st.booleans()),
        "fence_after": draw(mostly(st.floats(0, 10**7), st.sampled_from(NUMBER_MUTANTS))),
        "pending": draw(st.sampled_from(["producer", "relay", None])),
        "error": draw(st.sampled_from([None, "boom", "x" * 501])),
        "updated_at": draw(times()),
        "stopped": draw(st.booleans()),
    }
    if draw(st.booleans()):
        # A command behind the claim: forged, foreign, or a genuine one replayed from elsewhere.
        replay = ctx.captured.get("role", [])
        if replay and draw(st.booleans()):
            body["command"] = Raw(draw(st.sampled_from(replay)).decode())
        else:
            body["command"] = Raw(dumps(draw(role_command(ctx, node))))
    return mutate(draw, body)


@st.composite
def decider_status(draw: st.DrawFn, ctx: Context, decider: str | None) -> dict[str, Any]:
    now = time.time()
    body: dict[str, Any] = {
        "v": 1,
        "pool": ctx.pool,
        "decider": decider or draw(st.sampled_from(["decider", "decider-2", "intruder"])),
        "online": draw(st.booleans()),
        "epoch": draw(counts()),
        "producer": draw(st.sampled_from([*ctx.nodes, None, "bp9"])),
        "paused": draw(st.booleans()),
        "paused_until": draw(st.one_of(st.none(), times())),
        "frozen": draw(st.booleans()),
        "dry_run": draw(st.booleans()),
        "maintenance": {n: draw(st.one_of(st.none(), times())) for n in ctx.nodes if draw(st.booleans())},
        "updated_at": draw(st.one_of(st.just(now), times())),
        "mode": draw(st.sampled_from(["active", "standby", "starting", None])),
        "standby": draw(st.sampled_from([True, False, None])),
        "instance": "hostile",
        "changes": draw(st.lists(times(), max_size=3)),
    }
    return signature(draw, ctx, DeciderStatus, mutate(draw, body))


@st.composite
def control_request(draw: st.DrawFn, ctx: Context) -> dict[str, Any]:
    now = time.time()
    body: dict[str, Any] = {
        "v": 1,
        "request_id": f"hostile-{draw(st.integers(0, 10**9))}",
        "pool": ctx.pool,
        "action": draw(st.sampled_from([*ACTIONS, "shutdown"])),
        "node": draw(st.sampled_from([*ctx.nodes, None])),
        "to": draw(st.sampled_from([*ctx.nodes, None])),
        "enabled": draw(st.booleans()),
        "until": draw(st.one_of(st.none(), times())),
        "force": draw(st.booleans()),
        "requested_by": draw(st.sampled_from(["operator", "root", "\x1b[31m"])),
        "sent_at": draw(st.one_of(st.just(now), times())),
    }
    replay = ctx.captured.get("control", [])
    if replay and draw(st.integers(0, 3)) == 0:
        return {"__raw__": draw(st.sampled_from(replay))}  # a genuine request, replayed
    return signature(draw, ctx, ControlRequest, mutate(draw, body))


@st.composite
def decision_event(draw: st.DrawFn, ctx: Context) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "pool": ctx.pool,
        "at": draw(times()),
        "kind": draw(st.sampled_from(["failover", "promoted", "frozen", "control"])),
        "from": draw(st.sampled_from([*ctx.nodes, None])),
        "to": draw(st.sampled_from([*ctx.nodes, None])),
        "epoch": draw(counts()),
        "reason": "hostile",
        "ok": draw(st.sampled_from([True, False, None])),
    }
    return mutate(draw, body)


def junk() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=100).map(str.encode),
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b"1e999999",
                b"NaN",
                b'"x"',
                b"{" * 5000,
                # Deep nesting within the payload limit: a packet over the bundle's
                # max_packet_size (16 KiB) never gets past the broker (tests/broker/test_bundle.py).
                b"[" * 4000 + b"]" * 4000,
                b"x" * (MAX_PAYLOAD + 1),
                b'{"v":1,"pool":"pool1",' + b'"a":' * 2000 + b"1" + b"}" * 2000,
                b'{"v":1,"epoch":' + HUGE_INT.text.encode() + b"}",
                b"\x00\xff\xfe" * 100,
                b'{"v":1}\x00',
            ]
        ),
    )


def body_for(ctx: Context, kind: str, node: str | None) -> Callable[[], st.SearchStrategy[dict[str, Any]]]:
    """The strategy of the message type this topic carries."""
    target = node or ctx.nodes[0]
    return {
        "tip": lambda: tip_report(ctx, target),
        "state": lambda: node_state(ctx, target),
        "role": lambda: role_command(ctx, target),
        "dryrun": lambda: role_command(ctx, target),
        "decider": lambda: decider_status(ctx, None),
        "deciders": lambda: decider_status(ctx, node),
        "control": lambda: control_request(ctx),
        "events": lambda: decision_event(ctx),
    }[kind]


@st.composite
def hostile_message(
    draw: st.DrawFn, ctx: Context, topics: list[tuple[str, str | None]] | None = None
) -> tuple[str, bytes, bool]:
    """(topic, payload, retain): usually the topic's own message type, sometimes another's or junk."""
    kind, node = draw(st.sampled_from(topics or ctx.topic_names()))
    shape = draw(st.integers(0, 9))
    if shape == 0:
        payload = draw(junk())
    else:
        if shape == 1:  # a message of another type on this topic
            other_kind, other_node = draw(st.sampled_from(ctx.topic_names()))
            body = draw(body_for(ctx, other_kind, other_node)())
        else:
            body = draw(body_for(ctx, kind, node)())
        raw = body.get("__raw__")
        payload = raw if isinstance(raw, bytes) else dumps(body).encode()
    retain = kind != "control" and draw(st.booleans())
    return ctx.topic(kind, node), payload, retain
