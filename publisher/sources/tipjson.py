"""Parse the JSON printed by ``cardano-cli query tip``.

Current output (cardano-cli 8.x-10.x)::

    {"block": 3590825, "epoch": 1050, "era": "Conway", "hash": "3a4e...", "slot": 90754380,
     "slotInEpoch": 34380, "slotsToEpochEnd": 52020, "syncProgress": "100.00"}

cardano-cli before 1.26 printed ``blockNo``, ``headerHash`` and ``slotNo``; those are
accepted too. A node still at the chain's origin prints no slot at all: that is
an error ("no tip yet"), not a tip at slot 0.
"""

from __future__ import annotations

import json
import re

from bpfailover.publisher.sources.base import SourceError, TipSample, count, one_line, required_count

_HEX = re.compile(r"^[0-9a-fA-F]{1,128}$")
MAX_OUTPUT = 64 * 1024


def parse_tip_json(text: str | bytes, what: str = "output") -> TipSample:
    """Read a tip from cardano-cli style JSON; raise SourceError with a one-line reason."""
    if len(text) > MAX_OUTPUT:
        raise SourceError(f"{what} is too long ({len(text)} bytes) for a tip")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not text.strip():
        raise SourceError(f"{what} is empty")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise SourceError(f"{what} is not JSON: {one_line(text, 80)!r}") from None
    if not isinstance(data, dict):
        raise SourceError(f"{what} is not a JSON object: {one_line(text, 80)!r}")
    slot_value = data.get("slot", data.get("slotNo"))
    if slot_value is None:
        era = data.get("era")
        where = f" (era {era})" if isinstance(era, str) else ""
        raise SourceError(f"{what} has no tip slot{where}: the node is still at the chain's origin")
    slot = required_count(slot_value, "slot")
    block = count(data.get("block", data.get("blockNo")), "block")
    epoch = count(data.get("epoch"), "epoch")
    tip_hash = data.get("hash", data.get("headerHash"))
    if tip_hash is not None and not (isinstance(tip_hash, str) and _HEX.match(tip_hash)):
        raise SourceError(f"hash is not a hex block hash: {str(tip_hash)[:40]!r}")
    progress = data.get("syncProgress")
    return TipSample(
        slot=slot,
        block=block,
        epoch=epoch,
        hash=tip_hash.lower() if tip_hash else None,
        sync_progress=progress if isinstance(progress, str) else None,
    )
