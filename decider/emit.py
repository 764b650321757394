"""Building the core's output: role commands, events with their inputs, and status."""

from __future__ import annotations

import math
import zlib
from datetime import UTC, datetime

from bpfailover.decider.actions import Action, PublishDryRun, PublishEvent, PublishRole, PublishStatus
from bpfailover.decider.model import Command, Context, Now, PoolView
from bpfailover.decider.rule import why_not
from bpfailover.protocol.wire import DeciderStatus, DecisionEvent, NodeInputs, Role, RoleCommand
from bpfailover.protocol.wire import Transition as WireTransition

DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration_text(seconds: float) -> str:
    """A duration for people, to its two largest units: 45s, 1m30s, 1h, 2d3h."""
    left = round(abs(seconds))
    for i, (unit, size) in enumerate(DURATION_UNITS):
        if left >= size or size == 1:
            big, rest = divmod(left, size)
            text = f"{big}{unit}"
            if i + 1 < len(DURATION_UNITS):
                small_unit, small_size = DURATION_UNITS[i + 1]
                if rest // small_size:
                    text += f"{rest // small_size}{small_unit}"
            return text
    return "0s"  # unreachable: the last unit always matches


def time_text(unix: float, now: float) -> str:
    """A wall time in a reason: UTC ISO-8601 and how far from now, e.g. 2026-11-26T14:03:26Z (in 1h)."""
    stamp = datetime.fromtimestamp(unix, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    left = unix - now
    return f"{stamp} (in {duration_text(left)})" if left >= 0 else f"{stamp} ({duration_text(left)} ago)"


def node_inputs(view: PoolView, ctx: Context, now: Now) -> dict[str, NodeInputs]:
    """Each node's facts behind a decision: tip age, online, eligible or why not.

    The producer is not a candidate for its own place: it shows as not eligible, ``producer``.
    """
    result = {}
    for node in view.nodes.values():
        age = node.age(now)
        reason = "producer" if node.name == view.producer else why_not(view, node, ctx, now)
        state = node.state
        result[node.name] = NodeInputs(
            age=None if math.isinf(age) else round(age, 3),
            online=node.online,
            eligible=reason is None,
            why_not=reason,
            role=state.role if state is not None else "unknown",
            epoch=state.epoch if state is not None else 0,
            skew=None if node.skew is None else round(node.skew, 3),
            forging=state.forging if state is not None and state.online else None,
        )
    return result


def status_key(view: PoolView) -> tuple[object, ...]:
    """Everything in the status but its timestamp, to publish on change."""
    t = view.transition
    return (
        view.epoch,
        view.producer,
        view.paused,
        view.paused_until,
        view.frozen,
        view.dry_run,
        tuple(sorted(view.maintenance.items())) if view.maintenance else (),
        None if t is None else (t.kind, t.from_, t.to, t.epoch, t.phase, t.started.wall),
        tuple(view.changes_wall),
        view.last_change_wall,
    )


def build_status(view: PoolView, ctx: Context, now: Now, *, online: bool = True) -> DeciderStatus:
    t = view.transition
    transition = None
    if t is not None:
        transition = WireTransition(
            from_=t.from_, to=t.to, epoch=t.epoch, kind=t.kind, started_at=t.started.wall, phase=t.phase
        )
    return DeciderStatus(
        pool=view.id,
        decider=ctx.decider_id,
        online=online,
        epoch=view.epoch,
        producer=view.producer,
        paused=view.paused,
        paused_until=view.paused_until,
        frozen=view.frozen,
        dry_run=view.dry_run,
        maintenance=dict(view.maintenance),
        transition=transition,
        updated_at=now.wall,
        instance=ctx.instance,
        standby=ctx.settings.standby if ctx.instance is not None else None,
        mode=ctx.mode if ctx.instance is not None else None,
        changes=list(view.changes_wall),
        last_change_at=view.last_change_wall,
    )


class Outbox:
    """Collects the actions of one evaluation of one pool, updating the view as it goes."""

    def __init__(self, view: PoolView, ctx: Context, now: Now) -> None:
        self.view = view
        self.ctx = ctx
        self.now = now
        self.actions: list[Action] = []

    def _command(self, node: str, role: Role, epoch: int, reason: str, dry_run: bool) -> RoleCommand:
        return RoleCommand(
            pool=self.view.id,
            node=node,
            role=role,
            epoch=epoch,
            issued_at=self.now.wall,
            decider=self.ctx.decider_id,
            reason=reason[:500],
            dry_run=dry_run,
        )

    def command(self, node: str, role: Role, epoch: int, reason: str) -> None:
        """Command ``node`` (or, in a dry-run pool, say on the dry-run topic what we would)."""
        view = self.view
        dry = view.dry_run
        cmd = self._command(node, role, epoch, reason, dry)
        if dry:
            self.actions.append(PublishDryRun(view.id, node, cmd))
        else:
            self.actions.append(PublishRole(view.id, node, cmd))
        view.nodes[node].command = Command(
            role, epoch, confirmed=dry, issued_mono=self.now.mono, decider=self.ctx.decider_id
        )

    def would_command(self, node: str, role: Role, epoch: int, reason: str) -> None:
        """Only report on the dry-run topic; the view does not change."""
        self.actions.append(PublishDryRun(self.view.id, node, self._command(node, role, epoch, reason, True)))

    def event(
        self,
        kind: str,
        reason: str,
        *,
        from_: str | None = None,
        to: str | None = None,
        epoch: int | None = None,
        request_id: str | None = None,
        ok: bool | None = None,
        dry_run: bool | None = None,
    ) -> None:
        view = self.view
        self.actions.append(
            PublishEvent(
                view.id,
                DecisionEvent(
                    pool=view.id,
                    at=self.now.wall,
                    kind=kind,
                    from_=from_,
                    to=to,
                    epoch=view.epoch if epoch is None else epoch,
                    reason=reason[:1000],
                    request_id=request_id,
                    ok=ok,
                    dry_run=view.dry_run if dry_run is None else dry_run,
                    inputs=node_inputs(view, self.ctx, self.now),
                ),
            )
        )

    def alert(self, key: str, reason: str, *, to: str | None = None, kind: str = "alert") -> None:
        """Raise an alert once; it is raised again only after ``clear(key)``."""
        if key in self.view.alerts:
            return
        self.view.alerts.add(key)
        self.event(kind, reason, to=to)

    def clear(self, key: str) -> None:
        self.view.alerts.discard(key)

    def status(self, *, online: bool = True) -> None:
        view = self.view
        self.actions.append(PublishStatus(view.id, build_status(view, self.ctx, self.now, online=online)))
        view.last_status = status_key(view)
        if view.last_status_mono is None:
            # The first status (at recovery, for every pool at once): the next falls due a
            # little sooner, by a fraction of the interval fixed per pool, so that thousands
            # of pools do not republish in the same tick every status_interval.
            spread = zlib.crc32(view.id.encode()) % 1000 / 2000 * self.ctx.settings.status_interval
            view.last_status_mono = self.now.mono - spread
        else:
            view.last_status_mono = self.now.mono
