"""Log hygiene: received text cannot forge log lines, and tracebacks of one site are rate-limited."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from bpfailover.logs import LOG_FORMAT, EscapingFormatter, TracebackLimit, escape_control

HOSTILE = "bp1\n2026-01-01 00:00:00 INFO    bpfailover: forged line\r\x1b[31mred\x1b[0m\u202eevil"


def record(msg: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("bpfailover.test", logging.WARNING, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def test_escape_control_shows_every_control_character_and_is_idempotent() -> None:
    escaped = escape_control(HOSTILE)
    assert escaped == (
        "bp1\\n2026-01-01 00:00:00 INFO    bpfailover: forged line\\r\\x1b[31mred\\x1b[0m\\u202eevil"
    )
    assert escape_control(escaped) == escaped
    assert escape_control("plain text: ünïcode ok") == "plain text: ünïcode ok"


def test_a_payload_field_with_newline_and_ansi_escape_logs_as_one_escaped_line() -> None:
    line = EscapingFormatter(LOG_FORMAT).format(record("rejected %s on %s", "schema", HOSTILE))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith("rejected schema on bp1\\n2026-01-01 00:00:00 INFO    bpfailover: forged line"
                         "\\r\\x1b[31mred\\x1b[0m\\u202eevil")


def test_a_traceback_keeps_its_lines_but_escapes_the_received_text_in_its_exception_message() -> None:
    try:
        try:
            raise KeyError("inner\nforged")
        except KeyError as inner:
            raise ValueError(f"bad payload {HOSTILE}") from inner
    except ValueError:
        exc_info = sys.exc_info()
    failed = record("error in %s (continuing)", "topic", exc_info=exc_info)
    text = EscapingFormatter(LOG_FORMAT).format(failed)
    lines = text.splitlines()
    assert lines[0].endswith("error in topic (continuing)")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1].startswith("ValueError: bad payload bp1\\n2026-01-01")
    assert "\x1b" not in text and "\r" not in text
    assert not any(line.startswith("2026-01-01") for line in lines)


def test_the_cli_logging_setup_escapes_what_services_log() -> None:
    """The formatter is what `bpfailover <service>` installs (a fresh process: pytest owns this one's)."""
    code = (
        "import logging, sys\n"
        "from bpfailover.cli import setup_logging\n"
        "from bpfailover.rejections import Rejections\n"
        "setup_logging('info')\n"
        "Rejections('decider', logging.getLogger('bpfailover.decider')).reject("
        "'schema', sys.argv[1], topic=sys.argv[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", code, HOSTILE], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "rejected schema on bp1\\n2026-01-01" in lines[0] and "\x1b" not in lines[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(limit: TracebackLimit, logger: logging.Logger, what: str = "topic") -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        limit.exception(logger, "error in %s (continuing)", what)


def test_tracebacks_of_one_site_are_shown_once_per_interval_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limit = TracebackLimit(every=60.0, clock=clock)
    logger = logging.getLogger("bpfailover.test.limit")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    for _ in range(35):  # a hostile stream hitting the same bug, all in the same second
        fail(limit, logger)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1 and with_traceback[0].levelno == logging.ERROR
    assert with_traceback[0].getMessage() == "error in topic (continuing)"
    quiet = [r for r in caplog.records if not r.exc_info]
    assert len(quiet) == 34 and {r.levelno for r in quiet} == {logging.DEBUG}
    assert "RuntimeError: boom" in quiet[0].getMessage()

    caplog.clear()
    clock.now += 59.0
    fail(limit, logger)
    assert not any(r.exc_info for r in caplog.records)
    clock.now += 1.0
    fail(limit, logger, "other-topic")
    [shown] = [r for r in caplog.records if r.exc_info]
    assert shown.getMessage() == (
        "error in other-topic (continuing) [35 more like this in the last 60s, logged without traceback]"
    )

    caplog.clear()
    clock.now += 61.0
    fail(limit, logger)
    [shown] = caplog.records
    assert shown.exc_info and shown.getMessage() == "error in topic (continuing)"  # nothing suppressed


def test_each_site_has_its_own_limit(caplog: pytest.LogCaptureFixture) -> None:
    limit = TracebackLimit(every=60.0, clock=FakeClock())
    logger = logging.getLogger("bpfailover.test.sites")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    for _ in range(3):
        fail(limit, logger)
        try:
            raise RuntimeError("other")
        except RuntimeError:
            limit.exception(logger, "internal error in the actuator loop (continuing)")
    assert len([r for r in caplog.records if r.exc_info]) == 2
