"""Log hygiene: text from the wire cannot forge log lines, and a hostile stream cannot flood tracebacks.

Topics, reasons, names, error texts and request fields arrive from whoever can publish
to the broker. ``escape_control`` turns their control characters (newlines, carriage
returns, ANSI escapes, bidi overrides) into visible escapes, so that one event stays one
line and a terminal shows what was sent rather than obeying it. ``EscapingFormatter``
applies it to the final message of every record (and to exception messages inside a
traceback), which is why the services need no escaping of their own at each call site.

``TracebackLimit`` keeps an exception handler in a service loop from printing a
traceback per message when a stream of bad input keeps hitting the same bug.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

# C0 and C1 control characters, DEL, the Unicode line and paragraph separators (some log
# viewers break lines on them) and the bidirectional overrides ("Trojan Source" reordering).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\n``, ``\\x1b``, ``\\u202e``).

    Idempotent, so that text escaped for a table and then logged is not escaped twice.
    """
    return _CONTROL.sub(_escaped, text)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class EscapingFormatter(logging.Formatter):
    """A Formatter whose message is always one line with no terminal control sequences.

    The traceback keeps its own line breaks; only the exception messages inside it, which may
    quote received text, are escaped.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo) -> str:
        text = super().formatException(ei)
        exc: BaseException | None = ei[1]
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            try:
                said = str(exc)
            except Exception:  # a broken __str__ shows as such in the traceback already
                said = ""
            clean = escape_control(said)
            if clean != said:
                text = text.replace(said, clean)
            exc = exc.__cause__ or exc.__context__
        return text


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """The services' logging: one escaped line per event on stderr (systemd's journal)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


# --- tracebacks, rate-limited -------------------------------------------------------------------

TRACEBACK_EVERY = 60.0  # seconds between two full tracebacks of one site


@dataclass
class _Site:
    shown_at: float
    suppressed: int = 0


class TracebackLimit:
    """Logs an exception handler's tracebacks: each site's first in full, then one per ``every`` s.

    A site is the logger and message format of the call. The exceptions in between are logged
    at DEBUG in one line, counted, and the count is said with the next full traceback. Call
    ``exception`` from an ``except`` block, like ``Logger.exception``.
    """

    def __init__(self, every: float = TRACEBACK_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._sites: dict[tuple[str, str], _Site] = {}
        self._lock = threading.Lock()

    def exception(self, logger: logging.Logger, msg: str, *args: object) -> None:
        key = (logger.name, msg)
        now = self.clock()
        with self._lock:
            site = self._sites.get(key)
            if site is not None and now - site.shown_at < self.every:
                site.suppressed += 1
                full = False
                suppressed = 0
            else:
                full = True
                suppressed = site.suppressed if site is not None else 0
                since = now - site.shown_at if site is not None else 0.0
                self._sites[key] = _Site(shown_at=now)
        if not full:
            exc = sys.exc_info()[1]
            what = f"{type(exc).__name__}: {exc}" if exc is not None else "no exception"
            logger.debug(msg + " [%s; traceback not repeated within %gs]", *args, what, self.every)
            return
        note = (
            f" [{suppressed} more like this in the last {since:.0f}s, logged without traceback]"
            if suppressed
            else ""
        )
        logger.error(msg + "%s", *args, note, exc_info=True)


_DEFAULT = TracebackLimit()


def log_exception(logger: logging.Logger, msg: str, *args: object) -> None:
    """``logger.exception(msg, *args)``, with the process-wide traceback limit per site."""
    _DEFAULT.exception(logger, msg, *args)
