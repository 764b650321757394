"""What ``bpfailover status`` shows: a pool's retained messages turned into a verdict.

Three pure steps, so each is tested with plain data:

1. ``PoolCollector.feed`` keeps the latest tip, node state, role command and
   decider status of one pool, as they arrive from the broker.
2. ``assess(view, now, rules)`` computes, per node, the tip age, clock skew and
   whether it could take over as producer, and for the pool the problems and the
   exit code. Eligibility is computed *locally* with the same inputs as the
   decider's rule (DESIGN §6): the thresholds come from the ``[decider]`` section
   of the operator's configuration (the decider's defaults unless it is set), and
   only the latest report is known, so the decider's ``rise`` count is not checked.
3. ``render_table`` / ``to_json`` format the result.

Exit codes: 0 ok; 1 degraded (no healthy standby, decider offline or frozen,
producer's actuator offline); 2 producer problem (none, stale, or more than one)
— also used by ``ops`` when the broker cannot be reached.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from bpfailover.logs import escape_control
from bpfailover.protocol.topics import TopicError, Topics
from bpfailover.protocol.wire import (
    DeciderStatus,
    DecisionEvent,
    NodeState,
    PayloadRejected,
    RoleCommand,
    TipReport,
    decode,
)
from bpfailover.settings import BpfConfig

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_NO_PRODUCER = 2

KES_WARN_PERIODS = 5  # 5 periods of 36 h on mainnet: a week to rotate the KES key


@dataclass(frozen=True)
class Rules:
    """The thresholds status judges nodes by (the decider's keys of the same names)."""

    stale_after: float = 300.0
    max_clock_skew: float = 10.0
    kes_warn_periods: int = KES_WARN_PERIODS
    decider_silent_after: float = 90.0  # the decider republishes its status every status_interval

    @classmethod
    def from_config(cls, config: BpfConfig) -> Rules:
        d = config.decider
        return cls(
            stale_after=d.stale_after,
            max_clock_skew=d.max_clock_skew,
            decider_silent_after=3 * d.status_interval + config.mqtt.keepalive,
        )


@dataclass
class NodeView:
    """The latest of each retained message about one node."""

    name: str
    priority: int | None = None
    tip: TipReport | None = None
    skew: float | None = None  # received - sent_at of the last tip received live (not retained)
    state: NodeState | None = None
    command: RoleCommand | None = None
    dryrun: RoleCommand | None = None


@dataclass
class PoolView:
    pool: str
    nodes: dict[str, NodeView] = field(default_factory=dict)
    decider: DeciderStatus | None = None
    deciders: dict[str, DeciderStatus] = field(default_factory=dict)  # presence, by decider id
    last_event: DecisionEvent | None = None
    rejected: int = 0

    def node(self, name: str) -> NodeView:
        if name not in self.nodes:
            self.nodes[name] = NodeView(name)
        return self.nodes[name]


class PoolCollector:
    """Feeds messages of one pool into a PoolView; bad payloads are counted, never raised."""

    def __init__(self, topics: Topics, pool: str, priorities: dict[str, int] | None = None) -> None:
        self.topics = topics
        self.view = PoolView(pool)
        for name, priority in (priorities or {}).items():
            self.view.node(name).priority = priority

    def feed(self, topic: str, payload: bytes, *, retain: bool, received_at: float) -> bool:
        """Take one message; return True if it changed the view."""
        try:
            where = self.topics.parse(topic)
        except TopicError:
            return False
        if where.pool != self.view.pool or not payload:
            return False  # an empty retained payload is a deletion: nothing to show
        try:
            if where.kind == "tip" and where.node:
                tip = decode(TipReport, payload, pool=where.pool, node=where.node)
                node = self.view.node(where.node)
                node.tip = tip
                if not retain:
                    node.skew = received_at - tip.sent_at
            elif where.kind == "state" and where.node:
                self.view.node(where.node).state = decode(
                    NodeState, payload, pool=where.pool, node=where.node
                )
            elif where.kind == "role" and where.node:
                self.view.node(where.node).command = decode(
                    RoleCommand, payload, pool=where.pool, node=where.node
                )
            elif where.kind == "dryrun" and where.node:
                self.view.node(where.node).dryrun = decode(
                    RoleCommand, payload, pool=where.pool, node=where.node
                )
            elif where.kind == "decider":
                self.view.decider = decode(DeciderStatus, payload, pool=where.pool)
            elif where.kind == "deciders" and where.node:
                presence = decode(DeciderStatus, payload, pool=where.pool)
                if presence.decider != where.node:
                    raise PayloadRejected("topic_mismatch", "decider id differs from its topic")
                self.view.deciders[where.node] = presence
            elif where.kind == "events":
                self.view.last_event = decode(DecisionEvent, payload, pool=where.pool)
            else:
                return False
        except PayloadRejected:
            self.view.rejected += 1
            return False
        return True

    def complete(self) -> bool:
        """True once every known node has a tip, a state and a role command, and the decider spoke."""
        if self.view.decider is None or not self.view.nodes:
            return False
        return all(n.tip and n.state and n.command for n in self.view.nodes.values())


@dataclass(frozen=True)
class NodeRow:
    name: str
    priority: int | None
    desired: str | None  # commanded role, e.g. "producer"
    desired_epoch: int | None
    applied: str | None  # role applied on the node ("unknown" if undetectable)
    epoch: int | None  # last applied epoch
    pending: str | None
    fenced: bool
    error: str | None
    online: bool | None  # actuator online; None = never reported
    slot: int | None
    tip_age: float | None  # None = no ok tip report (infinitely stale)
    tip_error: str | None
    skew: float | None
    kes_periods_left: int | None
    eligible: bool
    why_not: str | None  # None when eligible; "producer" for the producer itself
    maintenance: bool
    dry_run_role: str | None
    forging: bool | None = None  # as its actuator sees its node (NodeState.forging); None unknown


@dataclass(frozen=True)
class PoolReport:
    pool: str
    rows: list[NodeRow]
    decider_online: bool | None
    decider_id: str | None
    decider_age: float | None
    epoch: int | None
    producer: str | None  # decider's producer
    producers: list[str]  # nodes whose actuator says it applied producer
    paused: bool
    paused_until: float | None
    frozen: bool
    dry_run: bool
    transition: str | None
    problems: list[str]
    notes: list[str]
    code: int
    last_event: str | None
    # Every decider's presence: (id, mode or "?", online, seconds since its last presence, standby)
    deciders: list[tuple[str, str, bool, float, bool]] = field(default_factory=list)


def _maintenance(decider: DeciderStatus | None, node: str, now: float) -> bool:
    if decider is None or node not in decider.maintenance:
        return False
    until = decider.maintenance[node]
    return until is None or until > now


def _tip_age(tip: TipReport | None, now: float) -> float | None:
    if tip is None or not tip.ok or tip.tip_time is None:
        return None
    return max(0.0, now - tip.tip_time)


def _why_not(
    node: NodeView, age: float | None, rules: Rules, maintenance: bool, dry_run_pool: bool = False
) -> str | None:
    """The first reason a standby could not be promoted, in the decider rule's order."""
    if node.priority == 0:
        return "priority 0"
    if maintenance:
        return "maintenance"
    if node.state is None:
        return "no actuator state"
    if not node.state.online:
        return "actuator offline"
    if node.state.dry_run and not dry_run_pool:
        return "actuator in dry-run"
    if node.state.error:
        return f"apply error: {node.state.error}"
    if node.tip is None:
        return "no tip report"
    if not node.tip.ok:
        return f"tip error: {node.tip.error or 'unknown'}"
    if age is None:
        return "tip has no time"
    if node.skew is not None and abs(node.skew) > rules.max_clock_skew:
        return f"clock skew {node.skew:+.1f}s > {rules.max_clock_skew:g}s"
    if age > rules.stale_after:
        return f"stale tip ({fmt_age(age)} > {fmt_age(rules.stale_after)})"
    return None


def assess(view: PoolView, now: float, rules: Rules | None = None) -> PoolReport:
    """Judge one pool at wall-clock time ``now``."""
    rules = rules or Rules()
    decider = view.decider
    applied_producers = sorted(
        n.name
        for n in view.nodes.values()
        if n.state is not None and n.state.role == "producer" and not n.state.fenced
    )
    producer_name = decider.producer if decider and decider.producer else None
    if producer_name is None and len(applied_producers) == 1:
        producer_name = applied_producers[0]

    rows: list[NodeRow] = []
    for name in sorted(view.nodes, key=lambda n: (-(view.nodes[n].priority or 0), n)):
        node = view.nodes[name]
        age = _tip_age(node.tip, now)
        maintenance = _maintenance(decider, name, now)
        is_producer = name == producer_name or name in applied_producers
        dry_run_pool = bool(decider and decider.dry_run)
        why = "producer" if is_producer else _why_not(node, age, rules, maintenance, dry_run_pool)
        rows.append(
            NodeRow(
                name=name,
                priority=node.priority,
                desired=node.command.role if node.command else None,
                desired_epoch=node.command.epoch if node.command else None,
                applied=node.state.role if node.state else None,
                epoch=node.state.epoch if node.state else None,
                pending=node.state.pending if node.state else None,
                fenced=bool(node.state and node.state.fenced),
                error=node.state.error if node.state else None,
                online=node.state.online if node.state else None,
                slot=node.tip.slot if node.tip and node.tip.ok else None,
                tip_age=age,
                tip_error=node.tip.error if node.tip and not node.tip.ok else None,
                skew=node.skew,
                kes_periods_left=node.tip.kes_periods_left if node.tip else None,
                eligible=why is None,
                why_not=why,
                maintenance=maintenance,
                dry_run_role=node.dryrun.role if node.dryrun else None,
                forging=node.state.forging if node.state and node.state.online else None,
            )
        )

    problems: list[str] = []
    notes: list[str] = []
    code = EXIT_OK

    def worse(level: int, text: str) -> None:
        nonlocal code
        problems.append(text)
        code = max(code, level)

    by_name = {r.name: r for r in rows}
    if len(applied_producers) > 1:
        worse(EXIT_NO_PRODUCER, f"more than one node applies producer: {', '.join(applied_producers)}")
    elif not applied_producers:
        worse(EXIT_NO_PRODUCER, "no node applies the producer role")
    else:
        p = by_name[applied_producers[0]]
        if p.tip_age is None:
            worse(EXIT_NO_PRODUCER, f"producer {p.name} has no valid tip ({p.tip_error or 'no report'})")
        elif p.tip_age > rules.stale_after:
            worse(EXIT_NO_PRODUCER, f"producer {p.name} tip is stale ({fmt_age(p.tip_age)} old)")
        if p.online is False:
            worse(EXIT_DEGRADED, f"producer {p.name}'s actuator is offline: it cannot be demoted on command")
        if p.forging is False:
            worse(EXIT_NO_PRODUCER, f"producer {p.name} is seen not forging (its actuator re-applies it)")
        if p.kes_periods_left is not None and p.kes_periods_left <= rules.kes_warn_periods:
            notes.append(f"producer {p.name}: {p.kes_periods_left} KES periods left, rotate the KES key")
    for r in rows:
        if r.forging is True and r.name not in applied_producers:
            worse(EXIT_NO_PRODUCER, f"{r.name} is seen forging but does not apply producer")
    standbys = [r for r in rows if r.why_not != "producer"]
    if not any(r.eligible for r in standbys):
        worse(EXIT_DEGRADED, "no healthy standby" if standbys else "no standby node in this pool")
    if decider is None:
        worse(EXIT_DEGRADED, "no decider status: the decider has never run for this pool")
    elif not decider.online:
        worse(EXIT_DEGRADED, f"decider {decider.decider} is offline: no automatic failover")
    elif now - decider.updated_at > rules.decider_silent_after:
        worse(
            EXIT_DEGRADED,
            f"decider {decider.decider} says online but has not refreshed its status for "
            f"{fmt_age(now - decider.updated_at)}: is it hung?",
        )
    elif decider.frozen:
        worse(EXIT_DEGRADED, "pool is frozen after too many failovers: resume to re-arm")
    deciders = []
    for name, p in sorted(view.deciders.items()):
        age = max(0.0, now - p.updated_at)
        # A presence not refreshed for long says online only because its Will has not come yet.
        online = p.online and age <= rules.decider_silent_after
        deciders.append((name, p.mode or "?", online, age, bool(p.standby)))
    deciding = [d[0] for d in deciders if d[2] and d[1] == "active"]
    if len(deciding) > 1:
        worse(EXIT_DEGRADED, f"more than one decider is active: {', '.join(deciding)}")
    waiting = [d[0] for d in deciders if d[2] and d[1] == "standby"]
    if waiting and not deciding:
        notes.append(f"no decider is active; standby {', '.join(waiting)} takes over after takeover_delay")
    if decider and decider.paused:
        until = f" until {fmt_time(decider.paused_until)}" if decider.paused_until else ""
        notes.append(f"automatic failover is paused{until}")
    if decider and decider.dry_run:
        notes.append("the decider runs in dry-run: decisions go to the dryrun topics only")
    for r in rows:
        if r.desired and r.applied and (r.desired != r.applied or r.desired_epoch != r.epoch):
            notes.append(
                f"{r.name}: commanded {r.desired}@{r.desired_epoch}, applied {r.applied}@{r.epoch}"
                + (f" (applying {r.pending})" if r.pending else "")
            )
        if r.error:
            notes.append(f"{r.name}: last apply error: {r.error}")
        if r.fenced:
            notes.append(f"{r.name}: fenced itself (lost the broker while producer)")
    if view.rejected:
        notes.append(f"{view.rejected} malformed message(s) ignored")

    transition = None
    if decider and decider.transition:
        t = decider.transition
        transition = f"{t.kind} {t.from_ or '-'} -> {t.to} at epoch {t.epoch} ({t.phase})"
    last_event = None
    if view.last_event is not None:
        ev = view.last_event
        last_event = f"{fmt_time(ev.at)} {ev.kind} {describe_event(ev)}"
    return PoolReport(
        pool=view.pool,
        rows=rows,
        decider_online=decider.online if decider else None,
        decider_id=decider.decider if decider else None,
        decider_age=max(0.0, now - decider.updated_at) if decider else None,
        epoch=decider.epoch if decider else max((r.epoch or 0 for r in rows), default=None),
        producer=producer_name,
        producers=applied_producers,
        paused=bool(decider and decider.paused),
        paused_until=decider.paused_until if decider else None,
        frozen=bool(decider and decider.frozen),
        dry_run=bool(decider and decider.dry_run),
        transition=transition,
        problems=problems,
        notes=notes,
        code=code,
        last_event=last_event,
        deciders=deciders,
    )


# --- formatting --------------------------------------------------------------------------------


def fmt_age(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def fmt_time(unix: float | None) -> str:
    if unix is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def describe_event(event: DecisionEvent) -> str:
    """One line for a decision: who, which epoch, why."""
    parts = []
    if event.from_ or event.to:
        parts.append(f"{event.from_ or '-'} -> {event.to or '-'}")
    if event.epoch:
        parts.append(f"epoch {event.epoch}")
    if event.reason:
        parts.append(event.reason)
    return escape_control(", ".join(parts))


def _role(role: str | None, epoch: int | None) -> str:
    if role is None:
        return "-"
    return f"{role}@{epoch}" if epoch is not None else role


def _cells(row: NodeRow) -> list[str]:
    applied = _role(row.applied, row.epoch)
    if row.pending:
        applied += f" ->{row.pending}"
    if row.fenced:
        applied += " fenced"
    if row.forging is True and row.applied != "producer":
        applied += " FORGING"
    elif row.forging is False and row.applied == "producer":
        applied += " NOT FORGING"
    online = "-" if row.online is None else ("yes" if row.online else "NO")
    age = (row.tip_error and "error") or fmt_age(row.tip_age)
    kes = "-" if row.kes_periods_left is None else str(row.kes_periods_left)
    eligible = (
        "yes" if row.eligible else ("(producer)" if row.why_not == "producer" else f"no: {row.why_not}")
    )
    return [
        row.name,
        "-" if row.priority is None else str(row.priority),
        _role(row.desired, row.desired_epoch),
        applied,
        "-" if row.slot is None else str(row.slot),
        age,
        online,
        "?" if row.skew is None else f"{row.skew:+.1f}s",
        kes,
        eligible,
    ]


HEADERS = ["NODE", "PRIO", "DESIRED", "APPLIED", "TIP SLOT", "TIP AGE", "ONLINE", "SKEW", "KES", "ELIGIBLE"]


def render_table(report: PoolReport) -> str:
    if report.decider_online is None:
        decider = "decider: never seen"
    else:
        state = "online" if report.decider_online else "OFFLINE"
        decider = f"decider {report.decider_id} {state} (updated {fmt_age(report.decider_age)} ago)"
    flags = []
    if report.paused:
        flags.append("PAUSED" + (f" until {fmt_time(report.paused_until)}" if report.paused_until else ""))
    if report.frozen:
        flags.append("FROZEN")
    if report.dry_run:
        flags.append("DRY-RUN")
    head = (
        f"pool {report.pool}  epoch {report.epoch if report.epoch is not None else '-'}  "
        f"producer {report.producer or '-'}  {decider}"
    )
    if flags:
        head += "  " + " ".join(flags)
    # Names, reasons and errors come from the wire: escaped before measuring, so that a newline
    # or a terminal escape in a payload can neither forge a row nor drive the operator's terminal.
    table = [HEADERS, *([escape_control(c) for c in _cells(r)] for r in report.rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = [head]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    if len(report.deciders) > 1 or any(d[1] != "active" for d in report.deciders):
        lines.append(
            "deciders: "
            + "; ".join(
                f"{name} {mode}{' (configured standby)' if standby and mode == 'active' else ''} "
                f"{'online' if online else 'OFFLINE'} ({fmt_age(age)} ago)"
                for name, mode, online, age, standby in report.deciders
            )
        )
    maint = [r.name for r in report.rows if r.maintenance]
    if maint:
        lines.append(f"maintenance: {', '.join(maint)}")
    if report.transition:
        lines.append(f"transition: {report.transition}")
    if report.last_event:
        lines.append(f"last event: {report.last_event}")
    verdict = {EXIT_OK: "OK", EXIT_DEGRADED: "DEGRADED", EXIT_NO_PRODUCER: "PRODUCER PROBLEM"}[report.code]
    lines.append(f"status: {verdict}" + ("" if not report.problems else ": " + "; ".join(report.problems)))
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(escape_control(line) for line in lines)


def report_dict(report: PoolReport) -> dict[str, Any]:
    def num(value: float | None) -> float | None:
        return None if value is None or math.isinf(value) else round(value, 3)

    return {
        "pool": report.pool,
        "code": report.code,
        "problems": report.problems,
        "notes": report.notes,
        "epoch": report.epoch,
        "producer": report.producer,
        "applied_producers": report.producers,
        "decider": {
            "id": report.decider_id,
            "online": report.decider_online,
            "age": num(report.decider_age),
        },
        "deciders": [
            {"id": name, "mode": mode, "online": online, "age": num(age), "standby": standby}
            for name, mode, online, age, standby in report.deciders
        ],
        "paused": report.paused,
        "paused_until": report.paused_until,
        "frozen": report.frozen,
        "dry_run": report.dry_run,
        "transition": report.transition,
        "last_event": report.last_event,
        "nodes": [
            {
                "name": r.name,
                "priority": r.priority,
                "desired": r.desired,
                "desired_epoch": r.desired_epoch,
                "applied": r.applied,
                "epoch": r.epoch,
                "pending": r.pending,
                "fenced": r.fenced,
                "error": r.error,
                "online": r.online,
                "slot": r.slot,
                "tip_age": num(r.tip_age),
                "tip_error": r.tip_error,
                "skew": num(r.skew),
                "kes_periods_left": r.kes_periods_left,
                "eligible": r.eligible,
                "why_not": r.why_not,
                "maintenance": r.maintenance,
                "dry_run_role": r.dry_run_role,
                "forging": r.forging,
            }
            for r in report.rows
        ],
    }


def to_json(reports: list[PoolReport], *, indent: int | None = 2) -> str:
    code = max((r.code for r in reports), default=EXIT_OK)
    return json.dumps({"code": code, "pools": [report_dict(r) for r in reports]}, indent=indent)
