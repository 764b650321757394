"""The decider's Prometheus metrics.

One ``DeciderMetrics`` per decider process owns its own registry (so tests can make
several), which also exposes the shared ``bpfailover_rejected_messages_total``
counter of ``bpfailover.rejections``. The decider feeds it the same per-node
inputs it puts in its DecisionEvents, after each evaluation:

    metrics.serve(9108)                      # once, at start (port 0 = any free port)
    metrics.observe_view(view, ctx, now)     # each pool, after each evaluation
    metrics.observe_event(event)             # each published DecisionEvent: counts failovers, fencing

Metric names (all prefixed ``bpfailover_``):

    node_tip_age_seconds{pool,node}        +Inf when the node has no valid tip
    node_role{pool,node,role}              1 for the role applied now, 0 for the others
    node_online{pool,node}                 actuator online (1/0)
    node_eligible{pool,node}               could be promoted now (1/0); 0 for the producer itself
    node_clock_skew_seconds{pool,node}     received - sent_at of its last tip
    node_kes_periods_left{pool,node}
    node_epoch{pool,node}                  the epoch the node's actuator last applied (0 = none)
    pool_epoch{pool}  pool_paused{pool}  pool_frozen{pool}
    pool_stale_after_seconds{pool}         the decider's stale_after: the tip-age threshold
    failovers_total{pool,kind}             producer changes: kind failover | switchover
    fenced_total{pool,node}                fencing events: the node demoted itself, or is certainly fenced
    decider_up                             1 while the decider runs
    rejected_messages_total{component,reason}

The counters of a pool start at 0 with its first ``observe_view``, so that ``increase()`` (the
Grafana dashboard's annotations) sees the first failover or fencing of a pool, not only later ones.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from bpfailover.decider.model import Context, Now, PoolView
from bpfailover.protocol.wire import DecisionEvent, NodeInputs
from bpfailover.rejections import REJECTED

ROLES = ("producer", "relay", "unknown")
CHANGE_KINDS = ("failover", "switchover")


class DeciderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        node = ["pool", "node"]
        self.tip_age = Gauge(
            "bpfailover_node_tip_age_seconds", "Age of the node's last valid chain tip", node, registry=r
        )
        self.role = Gauge(
            "bpfailover_node_role", "Role applied on the node (1 = this role)", [*node, "role"], registry=r
        )
        self.online = Gauge("bpfailover_node_online", "The node's actuator is online", node, registry=r)
        self.eligible = Gauge(
            "bpfailover_node_eligible",
            "The node could be promoted now (0 for the producer)",
            node,
            registry=r,
        )
        self.skew = Gauge(
            "bpfailover_node_clock_skew_seconds", "Received time minus the tip's sent_at", node, registry=r
        )
        self.kes = Gauge(
            "bpfailover_node_kes_periods_left", "KES periods left on the node's key", node, registry=r
        )
        self.node_epoch = Gauge(
            "bpfailover_node_epoch", "The epoch the node's actuator last applied", node, registry=r
        )
        self.epoch = Gauge("bpfailover_pool_epoch", "The pool's current epoch", ["pool"], registry=r)
        self.paused = Gauge("bpfailover_pool_paused", "Automatic failover paused", ["pool"], registry=r)
        self.frozen = Gauge("bpfailover_pool_frozen", "Pool frozen by the flap budget", ["pool"], registry=r)
        self.stale_after = Gauge(
            "bpfailover_pool_stale_after_seconds",
            "Tip age above which the pool's producer is stale",
            ["pool"],
            registry=r,
        )
        self.changes = Counter(
            "bpfailover_failovers",
            "Producer changes by kind (failover, switchover)",
            ["pool", "kind"],
            registry=r,
        )
        self.fenced = Counter(
            "bpfailover_fenced",
            "Fencing events: the node demoted itself after losing the broker, or is certainly fenced",
            node,
            registry=r,
        )
        self.up = Gauge("bpfailover_decider_up", "1 while the decider runs", registry=r)
        self.up.set(1)
        r.register(REJECTED)
        self._counters_started: set[str] = set()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- updates -----------------------------------------------------------------------------

    def observe_node(
        self,
        pool: str,
        node: str,
        *,
        tip_age: float | None,
        role: str,
        online: bool,
        eligible: bool | None = None,
        skew: float | None = None,
        kes_periods_left: int | None = None,
        epoch: int | None = None,
    ) -> None:
        self.tip_age.labels(pool, node).set(math.inf if tip_age is None else tip_age)
        for name in ROLES:
            self.role.labels(pool, node, name).set(1 if name == role else 0)
        self.online.labels(pool, node).set(1 if online else 0)
        if eligible is not None:
            self.eligible.labels(pool, node).set(1 if eligible else 0)
        if skew is not None:
            self.skew.labels(pool, node).set(skew)
        if kes_periods_left is not None:
            self.kes.labels(pool, node).set(kes_periods_left)
        if epoch is not None:
            self.node_epoch.labels(pool, node).set(epoch)

    def observe_pool(
        self, pool: str, *, epoch: int, paused: bool | None = None, frozen: bool | None = None
    ) -> None:
        self.epoch.labels(pool).set(epoch)
        if paused is not None:
            self.paused.labels(pool).set(1 if paused else 0)
        if frozen is not None:
            self.frozen.labels(pool).set(1 if frozen else 0)

    def observe_inputs(
        self,
        pool: str,
        inputs: Mapping[str, NodeInputs],
        *,
        epoch: int | None = None,
        paused: bool | None = None,
        frozen: bool | None = None,
        kes: Mapping[str, int | None] | None = None,
    ) -> None:
        """Per-node gauges from the decider's NodeInputs (the ones its events carry)."""
        for node, i in inputs.items():
            self.observe_node(
                pool,
                node,
                tip_age=i.age,
                role=i.role,
                online=i.online,
                eligible=i.eligible,
                skew=i.skew,
                kes_periods_left=(kes or {}).get(node),
                epoch=i.epoch,
            )
        if epoch is not None:
            self.observe_pool(pool, epoch=epoch, paused=paused, frozen=frozen)

    def observe_view(self, view: PoolView, ctx: Context, now: Now) -> None:
        """Every gauge of one pool from the decider core's view (call after each evaluation)."""
        from bpfailover.decider.emit import node_inputs  # the same inputs the decider's events carry

        kes = {
            n.name: n.last_tip.kes_periods_left if n.last_tip is not None else None
            for n in view.nodes.values()
        }
        self.observe_inputs(
            view.id,
            node_inputs(view, ctx, now),
            epoch=view.epoch,
            paused=view.paused,
            frozen=view.frozen,
            kes=kes,
        )
        self.stale_after.labels(view.id).set(ctx.settings.stale_after)
        if view.id not in self._counters_started:  # its nodes are configured: once is enough
            self.start_counters(view.id, view.nodes)

    def start_counters(self, pool: str, nodes: Iterable[str]) -> None:
        """Create a pool's counters at 0: a series that appears at 1 shows no ``increase()``."""
        self._counters_started.add(pool)
        for kind in CHANGE_KINDS:
            self.changes.labels(pool, kind)
        for node in nodes:
            self.fenced.labels(pool, node)

    def count_change(self, pool: str, kind: str) -> None:
        self.changes.labels(pool, kind).inc()

    def count_fenced(self, pool: str, node: str) -> None:
        self.fenced.labels(pool, node).inc()

    def observe_event(self, event: DecisionEvent) -> None:
        """Count producer changes and fencing, and refresh the gauges from an event's inputs."""
        if event.kind in CHANGE_KINDS and not event.dry_run and event.ok is not False:
            self.count_change(event.pool, event.kind)
        fenced = fenced_node(event)
        if fenced is not None:
            self.count_fenced(event.pool, fenced)
        self.observe_inputs(event.pool, event.inputs, epoch=event.epoch or None)

    # --- endpoint ----------------------------------------------------------------------------

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the /metrics endpoint on a daemon thread; return the bound port (0 = any free)."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        self.up.set(0)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def fenced_node(event: DecisionEvent) -> str | None:
    """The node a ``fenced`` event counts for: the one that reports it demoted itself (``to``), or
    the old producer the decider counts certainly fenced (``from``, promoting ``to``).

    The first is the actuator's own report, a fact in any mode; the second belongs to a
    transition, and a dry-run pool's transitions change nothing."""
    if event.kind != "fenced":
        return None
    if event.from_ is not None:
        return None if event.dry_run else event.from_
    return event.to
