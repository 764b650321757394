"""The wire contract: JSON messages exchanged over MQTT (DESIGN §4).

Every model is strict, rejects unknown fields and carries ``v: 1``. ``decode`` is
the single entry point for bytes arriving from the broker: it enforces the size
limit, the schema and the topic identity, and raises ``PayloadRejected`` with a
short machine-readable reason that services count and log once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bpfailover.protocol.topics import NodeName, PoolId

MAX_PAYLOAD = 8 * 1024
WIRE_VERSION = 1
# Bounds on every number that crosses the wire: a huge integer (an epoch of 4,300 digits)
# or a time of 1e300 must be refused here, before any arithmetic can choke on it.
MAX_COUNT = 2**53  # slots, blocks, epochs, sequence numbers: exact in a float, and plenty
MAX_TIME = 2.0**33  # unix seconds, about the year 2242
MAX_SECONDS = 10.0**7  # a duration (fence_after): 115 days

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
UnixTime = Annotated[float, Field(ge=0, le=MAX_TIME)]

Role = Literal["producer", "relay"]
AppliedRole = Literal["producer", "relay", "unknown"]
Action = Literal["switchover", "failover", "pause", "resume", "maintenance"]


class PayloadRejected(ValueError):
    """An incoming payload that must be ignored. ``reason`` is a short counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class WireModel(BaseModel):
    # Every float is finite: NaN and Infinity are refused (allow_inf_nan).
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    v: Literal[1] = WIRE_VERSION

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class TipReport(WireModel):
    """What a publisher saw of its node's chain tip."""

    pool: PoolId
    node: NodeName
    boot: str = Field(min_length=1, max_length=64)
    seq: Count
    sent_at: UnixTime
    ok: bool
    error: str | None = Field(default=None, max_length=500)
    slot: Count | None = None
    block: Count | None = None
    epoch: Count | None = None
    hash: str | None = Field(default=None, max_length=128)
    tip_time: UnixTime | None = None
    network: str = Field(default="mainnet", max_length=32)
    source: str = Field(default="cardano-cli", max_length=32)
    forging: bool | None = None
    kes_periods_left: int | None = Field(default=None, ge=-MAX_COUNT, le=MAX_COUNT)
    peers: Count | None = None
    # With ok=false, what the source could tell about the node: "starting" (it runs, not up yet:
    # replaying its ledger) or "dead". Absent when the source cannot tell.
    node_status: Literal["starting", "dead"] | None = None


class RoleCommand(WireModel):
    """The decider's order to one node, retained on its role topic."""

    pool: PoolId
    node: NodeName
    role: Role
    epoch: int = Field(ge=1, le=MAX_COUNT)
    issued_at: UnixTime
    decider: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)
    dry_run: bool = False
    sig: str | None = Field(default=None, max_length=200)


class NodeState(WireModel):
    """What an actuator reports about the role applied on its node (retained, with a Will)."""

    pool: PoolId
    node: NodeName
    boot: str = Field(min_length=1, max_length=64)
    online: bool
    role: AppliedRole
    epoch: Count
    fenced: bool = False
    dry_run: bool = False
    method: str = Field(default="env-swap", max_length=32)
    fence_after: float = Field(ge=0, le=MAX_SECONDS)
    pending: Role | None = None
    error: str | None = Field(default=None, max_length=500)
    # The last command this actuator refused (forged, replayed, stale epoch). Reported for
    # humans; unlike ``error`` it does not make the node ineligible, so junk on a role topic
    # cannot sideline a healthy standby.
    rejected: str | None = Field(default=None, max_length=500)
    updated_at: UnixTime
    # The broker connection this state was sent on (a fresh random id per connection, also in
    # that connection's Last Will), so that every Will is told apart from the one before.
    conn: str | None = Field(default=None, max_length=64)
    # A clean stop: the actuator exits and leaves its node as it is, so it promises no fence;
    # a Will of the same connection that arrives later promises nothing either.
    stopped: bool = False
    # The signed role command this actuator accepted last (at its stored epoch): a decider
    # trusts the epoch a node claims only when this backs it.
    command: RoleCommand | None = None
    # A restart this actuator ran for a role change (env-swap) is under way: when it was launched
    # (unix time on the node's clock; the decider uses it to tell one restart from the next and
    # times the wait from when it received this state) and the longest the node may take to come
    # up (``[actuator] start_timeout``). Absent when no such restart is under way.
    starting_since: UnixTime | None = None
    start_timeout: float | None = Field(default=None, ge=0, le=MAX_SECONDS)
    # The node's forging state as its actuator observed it from the node itself (``[actuator]
    # metrics_url`` or ``node_log``), after consensus started: true forging, false not forging,
    # absent (null) unknown: no observation source, the node replaying its ledger, or not yet seen.
    forging: bool | None = None


class Transition(WireModel):
    """A producer change in progress."""

    from_: str | None = Field(default=None, alias="from")
    to: str
    epoch: int = Field(ge=1, le=MAX_COUNT)
    kind: str = Field(max_length=32)
    started_at: UnixTime
    phase: str = Field(max_length=32)


DeciderMode = Literal["starting", "standby", "active"]


class DeciderStatus(WireModel):
    """A decider's status: retained on ``{pool}/decider`` by the active decider, and on
    ``{pool}/deciders/{id}`` by every decider as its presence (both with a Last Will)."""

    pool: PoolId
    decider: str = Field(min_length=1, max_length=64)
    online: bool
    epoch: Count
    producer: str | None = None
    paused: bool = False
    paused_until: UnixTime | None = None
    frozen: bool = False
    dry_run: bool = False
    maintenance: dict[str, UnixTime | None] = Field(default_factory=dict)
    transition: Transition | None = None
    updated_at: UnixTime
    # Added for two deciders per pool; absent in older payloads, which still parse.
    # A random id per decider process: a second process with the same decider id has another.
    instance: str | None = Field(default=None, max_length=64)
    standby: bool | None = None  # configured as the standby (``[decider] standby``)
    mode: DeciderMode | None = None  # what it does now: starting, standby (defers) or active
    # The flap history, as unix times (a restart loses the monotonic clock): the automatic
    # changes within flap_window, and the last change (min_switch_interval counts from it).
    changes: list[UnixTime] = Field(default_factory=list, max_length=100)
    last_change_at: UnixTime | None = None
    # Signed by the decider's key (like role commands): recovery trusts what it says (paused,
    # frozen, maintenance, the flap history), so a forged "frozen" must not count.
    sig: str | None = Field(default=None, max_length=200)


class ControlRequest(WireModel):
    """An operator's request to the decider, on ``{prefix}/{pool}/control``."""

    request_id: str = Field(min_length=1, max_length=64)
    pool: PoolId | None = None
    action: Action
    node: NodeName | None = None
    to: NodeName | None = None
    enabled: bool = True
    until: UnixTime | None = None
    force: bool = False
    requested_by: str = Field(default="operator", max_length=64)
    sent_at: UnixTime | None = None
    # Ed25519 signature by the operator key (base64), over the canonical JSON of the other
    # fields: pool, action, target, until, force, sent_at and request_id are all covered.
    sig: str | None = Field(default=None, max_length=200)


class NodeInputs(WireModel):
    """One node's view behind a decision."""

    age: float | None = None
    online: bool = False
    eligible: bool = False
    why_not: str | None = None
    role: AppliedRole = "unknown"
    epoch: Count = 0
    skew: float | None = None
    forging: bool | None = None  # as its actuator sees its node (NodeState.forging)


class DecisionEvent(WireModel):
    pool: PoolId
    at: UnixTime
    kind: str = Field(max_length=32)
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    epoch: Count = 0
    reason: str = Field(default="", max_length=1000)
    request_id: str | None = None
    ok: bool | None = None
    dry_run: bool = False
    inputs: dict[str, NodeInputs] = Field(default_factory=dict)


M = TypeVar("M", bound=WireModel)
NODE_MESSAGES = (TipReport, RoleCommand, NodeState)


def summarise(error: ValidationError, what: str = "payload") -> str:
    """The first validation error in one line: ``where: message (+N more)``."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or what
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def decode(model: type[M], payload: bytes, *, pool: str | None = None, node: str | None = None) -> M:
    """Parse bytes from the broker into ``model``; check size, schema and topic identity."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadRejected("oversized", f"{len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    try:
        message = model.model_validate_json(payload)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise PayloadRejected("malformed", "payload is not valid JSON") from None
        raise PayloadRejected("schema", f"{model.__name__} {summarise(exc)}") from None
    got_pool: Any = getattr(message, "pool", None)
    if pool is not None and got_pool is not None and got_pool != pool:
        raise PayloadRejected("topic_mismatch", f"payload pool {got_pool!r} but topic pool {pool!r}")
    if node is not None and isinstance(message, NODE_MESSAGES) and message.node != node:
        raise PayloadRejected("topic_mismatch", f"payload node {message.node!r} but topic node {node!r}")
    return message
