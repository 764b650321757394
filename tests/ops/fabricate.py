"""Fabricated wire messages for the ops tests: what publishers, actuators and a decider would send."""

from __future__ import annotations

from bpfailover.protocol.wire import (
    DeciderStatus,
    DecisionEvent,
    NodeInputs,
    NodeState,
    RoleCommand,
    TipReport,
)

SLOT_OFFSET = 1591566291.0  # mainnet: tip_time = offset + slot


def tip(
    pool: str,
    node: str,
    now: float,
    *,
    age: float = 1.0,
    ok: bool = True,
    kes: int | None = None,
    sent_at: float | None = None,
    error: str | None = None,
) -> TipReport:
    slot = int(now - age - SLOT_OFFSET)
    return TipReport(
        pool=pool,
        node=node,
        boot="b1",
        seq=1,
        sent_at=now if sent_at is None else sent_at,
        ok=ok,
        error=error,
        slot=slot if ok else None,
        block=10 if ok else None,
        tip_time=SLOT_OFFSET + slot if ok else None,
        source="simulate",
        kes_periods_left=kes,
    )


def state(
    pool: str,
    node: str,
    now: float,
    *,
    role: str = "relay",
    epoch: int = 1,
    online: bool = True,
    error: str | None = None,
    fenced: bool = False,
    pending: str | None = None,
) -> NodeState:
    return NodeState(
        pool=pool,
        node=node,
        boot="a1",
        online=online,
        role=role,
        epoch=epoch,
        fenced=fenced,
        fence_after=120.0,
        error=error,
        pending=pending,
        updated_at=now,
    )


def command(pool: str, node: str, now: float, *, role: str = "relay", epoch: int = 1) -> RoleCommand:
    return RoleCommand(pool=pool, node=node, role=role, epoch=epoch, issued_at=now, decider="d1")


def decider(
    pool: str,
    now: float,
    *,
    producer: str | None = "bp1",
    epoch: int = 1,
    online: bool = True,
    paused: bool = False,
    frozen: bool = False,
    maintenance: dict[str, float | None] | None = None,
) -> DeciderStatus:
    return DeciderStatus(
        pool=pool,
        decider="d1",
        online=online,
        epoch=epoch,
        producer=producer,
        paused=paused,
        frozen=frozen,
        maintenance=maintenance or {},
        updated_at=now,
    )


def event(
    pool: str,
    now: float,
    *,
    kind: str = "failover",
    request_id: str | None = None,
    ok: bool | None = None,
    reason: str = "",
    **inputs: NodeInputs,
) -> DecisionEvent:
    return DecisionEvent(
        pool=pool, at=now, kind=kind, request_id=request_id, ok=ok, reason=reason, inputs=dict(inputs)
    )
