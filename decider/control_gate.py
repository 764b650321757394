"""Who may steer a pool: the checks a control request passes before the core sees it.

Role changes by hand (switchover, failover --force, pause, resume, maintenance) are what an
attacker on the broker would want most: a forged ``failover --force`` promotes without
waiting for the old producer. So, with ``[decider] operator_key`` set (``init`` sets it):

- the request must be signed with the operator key (``[operator] signing_key``); the
  signature covers every field, the pool, the target and ``sent_at`` included;
- it must be recent: ``sent_at`` within ``CONTROL_MAX_AGE`` of the decider's clock, either
  way (a captured request cannot be replayed later);
- its ``request_id`` must not have been seen within that time (nor replayed sooner);
- who asked is the key's id, never the ``requested_by`` the sender wrote.

Without an operator key the requests are taken unsigned, as before (the decider warns at
start). A refusal is answered like any other (``ok: false`` with the reason) by the core.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bpfailover.protocol.signing import SignatureError, key_id, verify
from bpfailover.protocol.wire import ControlRequest

CONTROL_MAX_AGE = 60.0  # seconds between the operator's clock and the decider's, either way


class Verdict(NamedTuple):
    refused: str | None  # why it is refused, or None
    by: str  # who asked, as far as the decider can tell


class ControlGate:
    def __init__(self, key: Ed25519PublicKey | None) -> None:
        self.key = key
        self._seen: OrderedDict[str, float] = OrderedDict()  # request_id -> when first seen (wall)

    def check(self, request: ControlRequest, now: float) -> Verdict:
        by = request.requested_by
        if self.key is not None:
            try:
                verify(request, self.key)
            except SignatureError as exc:
                why = "unsigned" if exc.reason == "unsigned" else "its signature does not verify"
                return Verdict(
                    f"{why}: control requests must be signed with the operator key "
                    "([operator] signing_key, keys/operator-signing.key in the bundle)",
                    by,
                )
            by = f"operator key {key_id(self.key)}"
            if request.pool is None or request.sent_at is None:
                return Verdict("a signed request must name its pool and carry sent_at", by)
        if request.sent_at is not None:
            age = now - request.sent_at
            if abs(age) > CONTROL_MAX_AGE:
                when = f"{age:.0f}s ago" if age > 0 else f"{-age:.0f}s in the future"
                return Verdict(
                    f"stale: sent {when}, more than {CONTROL_MAX_AGE:g}s from the decider's clock "
                    "(a replayed request, or a clock that is off: check NTP)",
                    by,
                )
        self._forget(now)
        if request.request_id in self._seen:
            return Verdict(f"request_id {request.request_id} was seen before: a replay", by)
        self._seen[request.request_id] = now
        return Verdict(None, by)

    def _forget(self, now: float) -> None:
        """Ids older than the age limit need no remembering: their requests are refused as stale."""
        while self._seen and next(iter(self._seen.values())) < now - 2 * CONTROL_MAX_AGE:
            self._seen.popitem(last=False)
