"""Seeing the node's forging state from the node itself, not assuming it from the key files.

Two sources, either or both (``[actuator] metrics_url``, ``[actuator] node_log``):

- **Metrics**: cardano-node's ``forging_enabled`` gauge (``cardano_node_metrics_forging_enabled``,
  with or without ``_int``), set by the node's ``BlockForgingUpdate`` trace: 1 for "Enabling
  block forging", 0 for "Disabling block forging" *and* 0 for "not effective until consensus has
  started" (cardano-node ``Cardano/Node/Tracing/Tracers/Startup.hs``). Two things make the bare
  value untrustworthy: a SIGHUP during a ledger replay sets it to 0 although the node will forge
  from the keys it loaded at start once the replay ends; and a node started with the
  non-producing flag reports 1 until its first SIGHUP (cardano-node issues #6113, #6576). So the
  value counts only while the node is *up* (it has a tip: ``slotNum``, and no ledger replay under
  way) and, for the sighup method, only after a SIGHUP that reached the node while it was up.
- **Log**: the node's own lines "Performing block forging reconfiguration: Enabling block
  forging…", "…: Disabling block forging…", "…: Changing block forging is not effective until
  consensus has started" (the SIGHUP was ignored: unknown, and to be sent again) and "Block
  forging reconfiguration error: … Block forging is not reconfigured." (nothing changed). The
  first two are only ever printed once consensus has started, so they are the truth from then on.

Where both disagree, forging wins: a node that might forge is treated as forging.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bpfailover.node_metrics import MetricsUnavailable, canonical, fetch

log = logging.getLogger("bpfailover.actuator")

METRICS_TIMEOUT = 1.0  # seconds: a look must never hold up the actuator's loop (the fence)
MAX_BODY = 1024 * 1024  # a node's exposition is a few KiB; more is not an answer to parse
LOG_TAIL = 256 * 1024  # bytes of an existing log read at the first look

_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# The metrics read_metrics looks at (canonical names); every other line is skipped unparsed,
# so that a body of garbage costs a scan, not a parse per line.
WANTED = frozenset(
    (
        "forging_enabled",
        "slotnum",
        "chaindb_slotnum",
        "blockreplayprogress",
        "basicinfo",
        "node_start_time",
        "nodestarttime",
    )
)

ENABLED = "Enabling block forging"
DISABLED = "Disabling block forging"
NOT_EFFECTIVE = "Changing block forging is not effective until consensus has started"
RECONFIG_ERROR = "Block forging reconfiguration error"


@dataclass(frozen=True)
class Sight:
    """One look at the node: ``forging`` as the source says it (None: it says nothing), ``up``
    whether consensus has started (None: cannot tell), ``ignored`` the last SIGHUP was ignored
    (the node still replays), ``start`` which run of the node this is (its start time), ``error``
    why the source could not be read."""

    forging: bool | None = None
    up: bool | None = None
    ignored: bool = False
    start: str | None = None
    error: str | None = None


def read_metrics(text: str) -> Sight:
    """What a Prometheus exposition of cardano-node says about forging and whether it is up."""
    values: dict[str, float] = {}
    start: str | None = None
    for line in text.splitlines():
        name = _NAME.match(line.lstrip())
        if name is None or canonical(name.group()) not in WANTED:
            continue  # blank, a comment, or a metric nobody reads
        try:
            families = list(text_string_to_metric_families(line + "\n"))
        except ValueError:
            continue  # one malformed line must not hide the others
        for family in families:
            for sample in family.samples:
                key = canonical(sample.name)
                values.setdefault(key, sample.value)
                if key == "basicinfo" and "nodeStartTime" in sample.labels:
                    start = sample.labels["nodeStartTime"]
    if start is None:
        for key in ("node_start_time", "nodestarttime"):
            if key in values:
                start = f"{values[key]:.0f}"
                break
    slot = next((values[k] for k in ("slotnum", "chaindb_slotnum") if k in values), None)
    replay = values.get("blockreplayprogress")
    replaying = slot is None and replay is not None and replay < 100
    up = slot is not None and not math.isnan(slot) and not replaying
    flag = values.get("forging_enabled")
    forging = None if flag is None or math.isnan(flag) else flag > 0
    return Sight(forging=forging, up=up, start=start)


# The same events in the node's JSON (machine) log format: "kind":"BlockForgingUpdate" with
# "enabled":"EnabledBlockForging" | "DisabledBlockForging" | "NotEffective".
_JSON_UPDATE = re.compile(
    r'"kind"\s*:\s*"BlockForgingUpdate".*?"enabled"\s*:\s*"(\w+)"|'
    r'"enabled"\s*:\s*"(\w+)".*?"kind"\s*:\s*"BlockForgingUpdate"'
)


def read_log_line(line: str) -> Sight | None:
    """The forging verdict of one cardano-node log line (text or JSON format), if it has one.

    A reconfiguration error leaves forging as it was: it is no verdict.
    """
    if ENABLED in line:
        return Sight(forging=True, up=True)
    if DISABLED in line:
        return Sight(forging=False, up=True)
    if NOT_EFFECTIVE in line:
        return Sight(forging=None, up=False, ignored=True)
    match = _JSON_UPDATE.search(line)
    if match is not None:
        value = match.group(1) or match.group(2)
        if value == "EnabledBlockForging":
            return Sight(forging=True, up=True)
        if value == "DisabledBlockForging":
            return Sight(forging=False, up=True)
        if value == "NotEffective":
            return Sight(forging=None, up=False, ignored=True)
    return None


def read_log_lines(lines: list[str]) -> Sight | None:
    """The latest forging verdict among cardano-node log lines; None when none is among them."""
    for line in reversed(lines):
        found = read_log_line(line)
        if found is not None:
            return found
    return None


class MetricsProbe:
    """Reads ``metrics_url``: a look returns within METRICS_TIMEOUT whatever the endpoint does.

    The fetch runs in a thread of its own, waited for at most METRICS_TIMEOUT: a socket timeout
    bounds each read, not a whole answer sent a byte at a time. A fetch still under way when the
    next look comes makes that look an error too, so at most one hangs at any time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fetch: threading.Thread | None = None

    def look(self) -> Sight:
        if self._fetch is not None and self._fetch.is_alive():
            return Sight(error=f"metrics {self.url}: the previous look is still unanswered")
        answer: list[Sight] = []
        fetch = threading.Thread(target=self._get, args=(answer,), name="metrics-look", daemon=True)
        fetch.start()
        fetch.join(METRICS_TIMEOUT)
        if not answer:
            self._fetch = fetch
            return Sight(error=f"metrics {self.url}: no complete answer within {METRICS_TIMEOUT:g}s")
        return answer[0]

    def _get(self, answer: list[Sight]) -> None:
        """What the endpoint says, or why it says nothing, into ``answer``."""
        try:
            answer.append(read_metrics(fetch(self.url, METRICS_TIMEOUT, MAX_BODY)))
        except MetricsUnavailable as exc:
            answer.append(Sight(error=str(exc)))


class LogProbe:
    """Follows ``node_log`` like ``tail -F``: new lines since the last look; a rotated or
    truncated file is read again from its start. The latest verdict is kept between looks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""
        self.verdict: Sight | None = None

    def _new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if self._inode != stat.st_ino or stat.st_size < self._offset:
                    first = self._inode is None
                    self._inode, self._partial = stat.st_ino, b""
                    self._offset = max(0, stat.st_size - LOG_TAIL) if first else 0
                handle.seek(self._offset)
                data = handle.read(LOG_TAIL)
        except OSError as exc:
            raise LookFailed(f"node_log {self.path}: {exc.strerror or exc}") from None
        self._offset += len(data)
        data = self._partial + data
        complete, _, self._partial = data.rpartition(b"\n")
        if len(self._partial) > LOG_TAIL:
            self._partial = b""  # a "line" that long is no verdict (nor a text log): not held
        return complete.decode("utf-8", errors="replace").splitlines() if complete else []

    def look(self) -> Sight:
        try:
            lines = self._new_lines()
        except LookFailed as exc:
            return Sight(error=str(exc))
        found = read_log_lines(lines)
        if found is not None:
            self.verdict = found
        return self.verdict if self.verdict is not None else Sight()

    def forget(self) -> None:
        """A SIGHUP is about to be sent: only what the node says from now on answers it."""
        self._new_lines_quietly()
        self.verdict = None

    def _new_lines_quietly(self) -> None:
        with contextlib.suppress(LookFailed):
            self._new_lines()


class LookFailed(Exception):
    """A source could not be read."""


@dataclass(frozen=True)
class Observed:
    """What the actuator reports: ``forging`` (None unknown), ``up``, ``ignored`` (a SIGHUP to send
    again once the node is up), and ``untested`` (a sighup node never SIGHUPed while up since it
    started: its metric cannot be trusted until it is)."""

    forging: bool | None
    up: bool | None = None
    ignored: bool = False
    untested: bool = False
    error: str | None = None


class ForgingObserver:
    """Combines the configured sources and the rule that says when their word counts."""

    def __init__(
        self,
        metrics: MetricsProbe | None,
        node_log: LogProbe | None,
        *,
        needs_sighup: bool,
    ) -> None:
        """``needs_sighup``: the metric counts only after a SIGHUP that reached the node while it
        was up (the sighup method, whose node starts with the non-producing flag)."""
        self.metrics = metrics
        self.node_log = node_log
        self.needs_sighup = needs_sighup
        self._tested_start: str | None = None  # the node run a SIGHUP reached while it was up
        self._tested = False
        self._last_start: str | None = None
        self._up_at_send: str | None = None  # the node run that was up when a SIGHUP was sent
        self._sent_up = False
        self.last = Observed(None)

    @property
    def configured(self) -> bool:
        return self.metrics is not None or self.node_log is not None

    def node_restarted(self) -> None:
        """The actuator restarted the node: nothing seen before counts."""
        self._tested = False
        if self.node_log is not None:
            self.node_log.forget()

    def before_sighup(self) -> None:
        """A SIGHUP is about to be sent. A node up now is up when it arrives (consensus does not
        stop), so its metric will be the truth; looked at before, never after: a replay that ends
        between the signal and the look would make an ignored SIGHUP look like one that counted."""
        self._up_at_send = None
        if self.metrics is not None:
            sight = self.metrics.look()
            self._up_at_send = sight.start if sight.up else None
            self._sent_up = bool(sight.up)
        if self.node_log is not None:
            self.node_log.forget()

    def after_sighup(self) -> None:
        """The SIGHUP is sent: if the node was up before, its metric counts from now on."""
        if self.metrics is not None and self._sent_up:
            self._tested, self._tested_start = True, self._up_at_send
        self._sent_up = False

    def look(self) -> Observed:
        found = [self._from_metrics(), self._from_log()]
        seen = [o for o in found if o is not None]
        if not seen:
            self.last = Observed(None)
            return self.last
        forging: bool | None = None
        values = [o.forging for o in seen if o.forging is not None]
        if values:
            forging = any(values)
        up = any(o.up for o in seen) if any(o.up is not None for o in seen) else None
        errors = [o.error for o in seen if o.error]
        self.last = Observed(
            forging,
            up=up,
            ignored=any(o.ignored for o in seen) and forging is None,
            untested=any(o.untested for o in seen) and forging is None,
            error="; ".join(errors) or None,
        )
        return self.last

    def _from_metrics(self) -> Observed | None:
        if self.metrics is None:
            return None
        sight = self.metrics.look()
        if sight.error is not None:
            return Observed(None, error=sight.error)
        if sight.start is not None and sight.start != self._last_start:
            if self._last_start is not None and sight.start != self._tested_start:
                self._tested = False  # the node restarted since: its metric is untested again
            if self._last_start is not None and self.node_log is not None:
                self.node_log.verdict = None  # what the log said was of the run before
            self._last_start = sight.start
        if not sight.up:
            return Observed(None, up=sight.up)
        if self.needs_sighup and not (self._tested and sight.start == self._tested_start):
            return Observed(None, up=True, untested=True)
        return Observed(sight.forging, up=True)

    def _from_log(self) -> Observed | None:
        if self.node_log is None:
            return None
        sight = self.node_log.look()
        return Observed(sight.forging, up=sight.up, ignored=sight.ignored, error=sight.error)


def build_observer(metrics_url: str | None, node_log: Path | None, *, needs_sighup: bool) -> ForgingObserver:
    return ForgingObserver(
        MetricsProbe(metrics_url) if metrics_url else None,
        LogProbe(node_log) if node_log is not None else None,
        needs_sighup=needs_sighup,
    )
