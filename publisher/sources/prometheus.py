"""Tip from the node's Prometheus metrics endpoint (default http://127.0.0.1:12798/metrics).

cardano-node's metric names vary with the node version and the tracing system:
``cardano_node_metrics_slotNum_int`` (legacy tracing, and the new tracing system
with its default prefix), ``slotNum_int`` (cardano-tracer without prefix),
``slotNum`` (with ``metricsNoSuffix``), ``cardano_node_ChainDB_metrics_slotNum_int``
(nodes before 1.25), ``cardano_node_metrics_ChainDB_SlotNum_int`` (the new tracing
system of nodes 8.x-9.1, whose ChainDB tracer named them ``ChainDB.SlotNum``,
``ChainDB.BlockNum``, ``ChainDB.Epoch``). Names are compared after dropping the prefix
and the ``_int``/``_counter``/``_real`` suffix, case-insensitively.

The new tracing system of nodes 10.5 and later also exposes the tip's block hash as a label:
``cardano_node_metrics_tipBlock{hash="…",parent_hash="…",issuer_VKey_hash="…"} 1``
(cardano-node ``Cardano/Node/Tracing/Tracers/ChainDB.hs``, ``PrometheusM "tipBlock"``); the
``hash`` label becomes the TipReport's hash.

While the node replays its ledger after a start it has no slotNum yet, and
``blockReplayProgress`` (percent) is below 100: the sample is then an error that says
the node is starting. (A running node may keep a last value just below 100, such as
99.998: with a slotNum, the tip counts.)
"""

from __future__ import annotations

import math
import re

from prometheus_client.parser import text_string_to_metric_families

from bpfailover.node_metrics import MetricsUnavailable, canonical, fetch
from bpfailover.publisher.sources.base import SourceError, TipSample, count, one_line, required_count

MAX_BODY = 8 * 1024 * 1024

SLOT = ("slotnum", "chaindb_slotnum")
BLOCK = ("blocknum", "chaindb_blocknum")
EPOCH = ("epoch", "chaindb_epoch")
REPLAY = ("blockreplayprogress",)
FORGING = ("forging_enabled",)
KES_LEFT = ("remainingkesperiods",)
# connectedPeers: non-P2P nodes; peerSelection_hot / _Hot: P2P (legacy / new tracing).
PEERS = ("connectedpeers", "peerselection_hot", "peersfromnodekernel")



TIP_BLOCK = "tipblock"
HASH = re.compile(r"^[0-9a-fA-F]{64}$")

Sample = tuple[str, dict[str, str], float]


def _parse(text: str) -> list[Sample]:
    return [
        (s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def _samples(text: str) -> list[Sample]:
    try:
        return _parse(text)
    except ValueError:
        pass
    # One malformed line must not hide the others: parse line by line, skipping bad ones.
    found: list[Sample] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        try:
            found += _parse(line + "\n")
        except ValueError:
            continue
    return found


def parse_metrics(text: str, what: str = "metrics") -> TipSample:
    """Read the tip from a Prometheus text exposition; raise SourceError if it has none."""
    values: dict[str, float] = {}
    tip_hash: str | None = None
    for name, labels, value in _samples(text):
        key = canonical(name)
        values.setdefault(key, value)
        if key == TIP_BLOCK and tip_hash is None and HASH.match(labels.get("hash", "")):
            tip_hash = labels["hash"].lower()
    if not values:
        raise SourceError(f"{what} hold no Prometheus samples: {one_line(text, 80)!r}")

    def first(keys: tuple[str, ...]) -> float | None:
        return next((values[k] for k in keys if k in values and not math.isnan(values[k])), None)

    slot = first(SLOT)
    replay = first(REPLAY)
    # (Only without a tip: a running node may keep reporting a last value just below 100.)
    if slot is None and replay is not None and replay < 100:
        raise SourceError(
            f"{what}: the node is starting, replaying its ledger ({replay:.1f}% done)", status="starting"
        )
    if slot is None:
        raise SourceError(f"{what} have no slotNum yet (node starting, or not a cardano-node endpoint)")
    forging = first(FORGING)
    kes = first(KES_LEFT)
    return TipSample(
        slot=required_count(slot, "slotNum"),
        block=count(first(BLOCK), "blockNum"),
        epoch=count(first(EPOCH), "epoch"),
        hash=tip_hash,
        forging=None if forging is None else forging > 0,
        kes_periods_left=None if kes is None or not math.isfinite(kes) else int(kes),
        peers=count(first(PEERS), "peers"),
    )


class PrometheusSource:
    name = "prometheus"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def fetch(self) -> str:
        try:
            return fetch(self.url, self.timeout, MAX_BODY)
        except MetricsUnavailable as exc:
            raise SourceError(str(exc)) from None

    def sample(self) -> TipSample:
        return parse_metrics(self.fetch(), f"metrics at {self.url}")
