"""systemd's watchdog for the actuator: a hung actuator cannot fence, so the supervisor kills it.

A producer's actuator that is alive but stuck (a deadlock, a blocked fsync, a bug that
spins) still holds its MQTT session through paho's own thread, so the broker sends no
Last Will and the decider sees nothing wrong, yet the fence check never runs. With
``WatchdogSec=`` in the unit, systemd kills an actuator that stops sending ``WATCHDOG=1``
and ``Restart=always`` starts a fresh one, whose fence check runs again.

That only works if the pings prove the fence check runs. The rule for callers:

    ``ping()`` is called only from the thread that runs the fence check: right after a
    fence check (``ActuatorCore.on_alive``; during a promotion, after the abort callback
    asked the fence timer), or from the waits of an apply under way on that thread.
    Never from a timer or a thread of its own.

A stuck loop then stops the pings, whatever the other threads do. While the loop is busy
applying a role (a restart command running, a pause between retries, a file step waited
for), it pings from those waits: busy is not hung, and a demotion must not be killed
half-way.

This is the sd_notify(3) datagram protocol without python-systemd: ``KEY=value`` lines
sent to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace). ``WATCHDOG_USEC`` is honoured only when ``WATCHDOG_PID`` is unset or
names this process, as sd_watchdog_enabled(3) says. No send ever raises: a failing
notification must not kill the process that fences the node; the first failure of a run
of failures is logged at warning, the rest at debug.

``watchdog_restart_bound`` is how long a hung actuator delays its fence: from its last ping
until a new process is running the fence check again. The actuator's advertised fence time
adds it: the new process finds the last broker contact in its state folder
(``bpfailover.actuator.contact``), so it fences at once if that was too long ago.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("bpfailover.actuator.watchdog")

# What deploy/systemd/bpfailover-actuator@.service sets (tests/ops/test_systemd_units.py checks).
UNIT_RESTART_SEC = 2.0  # RestartSec=
UNIT_TIMEOUT_ABORT_SEC = 5.0  # TimeoutAbortSec=: SIGABRT after a missed ping, SIGKILL this much later
# From systemd starting the new process until its fence timer runs: the interpreter, the
# imports (pydantic, paho, cryptography), the settings and keys. About 2 s on a small idle
# VPS; 10 s leaves room for a host whose CPU and disk cardano-node keeps busy.
STARTUP_SLACK = 10.0


def watchdog_restart_bound(
    interval: float,
    restart_sec: float = UNIT_RESTART_SEC,
    abort_sec: float = UNIT_TIMEOUT_ABORT_SEC,
) -> float:
    """Seconds from a hung actuator's last ping until its successor runs the fence check, at most.

    systemd notices the missing ping after ``interval`` (WatchdogSec), sends SIGABRT and
    SIGKILL ``abort_sec`` later if the process is still there, starts the unit again after
    ``restart_sec`` (RestartSec), and the new process needs ``STARTUP_SLACK`` to get going.
    """
    return interval + abort_sec + restart_sec + STARTUP_SLACK


class Watchdog:
    """sd_notify for one process; every method is a no-op outside systemd."""

    def __init__(self, address: str | None, interval: float | None) -> None:
        self.address = address
        self._interval = interval if address is not None else None
        self._last_ping: float | None = None
        self._socket: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *, pid: int | None = None) -> Watchdog:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` as systemd sets them."""
        address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        return cls(address, _watchdog_interval(environ, os.getpid() if pid is None else pid))

    @property
    def interval(self) -> float | None:
        """WatchdogSec in seconds; None when systemd watches no pings from this process."""
        return self._interval

    @property
    def notifying(self) -> bool:
        """Whether there is a notification socket at all."""
        return self.address is not None

    def ready(self, status: str = "running") -> None:
        """Start-up is done (Type=notify): the node's role is converged and the fence is armed."""
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """One line for ``systemctl status``."""
        self._send(f"STATUS={_one_line(text)}")

    def stopping(self, status: str = "stopping") -> None:
        """A clean stop has begun; systemd stops watching for pings."""
        self._send(f"STOPPING=1\nSTATUS={_one_line(status)}")

    def ping(self, now: float) -> bool:
        """WATCHDOG=1, at most every half interval (``now``: the caller's monotonic clock).

        Call it only right after a fence check (module docstring). True when a ping was sent.
        """
        if self._interval is None:
            return False
        if self._last_ping is not None and now - self._last_ping < self._interval / 2:
            return False
        if not self._send("WATCHDOG=1"):
            return False  # not rate-limited: the next iteration tries again
        self._last_ping = now
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> bool:
        """One datagram; never blocks on a busy systemd, never raises. True when sent."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode("utf-8", "replace"), self.address)
        except Exception as exc:  # OSError mostly; nothing here may stop the fence
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "sd_notify to %s failed (%s): %s", self._shown_address, message.split("=")[0], exc)
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify to %s works again", self._shown_address)
            self._failing = False
        return True

    @property
    def _shown_address(self) -> str:
        return (self.address or "").replace("\0", "@", 1)


def _socket_address(value: str) -> str | None:
    """The address for ``sendto``; None when there is none or it is not an AF_UNIX one."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # the Linux abstract namespace
    if value:
        log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX path or @name; not notifying systemd", value)
    return None


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    raw_pid = environ.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            if int(raw_pid) != pid:
                return None  # meant for another process (e.g. our parent): sd_watchdog_enabled(3)
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not a process id; ignoring the watchdog", raw_pid)
            return None
    raw = environ.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warning("WATCHDOG_USEC=%r is not a positive number of microseconds; ignoring it", raw)
        return None
    return usec / 1_000_000


def _usec(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def _one_line(text: str) -> str:
    return " ".join(text.split())
