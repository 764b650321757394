"""What the decider subscribes to, and over how many connections.

With ``[mqtt] retained_wildcards = true`` (mosquitto, HiveMQ, EMQX) each pool costs six
filters: ``deciders/+``, ``tip/+``, ``state/+``, ``role/+``, ``decider`` and ``control``.
With ``false`` (AWS IoT Core, which sends retained messages only to subscriptions without
wildcards) the ``+`` filters of tips, states and role commands become one exact topic per
node, from the pools and nodes in the decider's ``[[pools]]``; ``deciders/+`` stays a wildcard
(the other deciders' ids are not configured), its presences arrive live, every 10 s.

Filters are spread over as many connections as ``max_subscriptions_per_connection`` needs;
the first holds the work connection's share.
"""

from __future__ import annotations

from collections.abc import Iterable

from bpfailover.protocol.topics import Topics
from bpfailover.settings import PoolSpec


def pool_filters(topics: Topics, pool: PoolSpec, *, exact: bool) -> list[str]:
    """One pool's filters; the presences first, so that a broker that sends retained messages
    in subscription order delivers them before the topics that end the retained read."""
    filters = [topics.wildcard("deciders", pool.id)]
    for kind in ("tip", "state", "role"):
        if exact:
            filters += [topics.node_topic(pool.id, kind, node.name) for node in pool.nodes]  # type: ignore[arg-type]
        else:
            filters.append(topics.wildcard(kind, pool.id))
    return [*filters, topics.decider(pool.id), topics.control(pool.id)]


def decider_filters(topics: Topics, pools: Iterable[PoolSpec], *, exact: bool) -> list[str]:
    return [f for pool in pools for f in pool_filters(topics, pool, exact=exact)]
