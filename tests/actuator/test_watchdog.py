"""The sd_notify client against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfailover.actuator.watchdog import STARTUP_SLACK, Watchdog, watchdog_restart_bound

AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET; ``env`` is what systemd would give the service."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket

    def env(self, watchdog_sec: float | None = 20.0, pid: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.notify_socket}
        if watchdog_sec is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_sec * 1_000_000))
            env["WATCHDOG_PID"] = str(os.getpid() if pid is None else pid)
        return env

    def receive(self) -> str:
        """The next datagram; a datagram sent before is already queued, so the deadline is slack."""
        self.sock.settimeout(2.0)
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        """Every datagram queued now, without waiting."""
        self.sock.setblocking(False)
        found = []
        while True:
            try:
                found.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return found


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    folder = tmp_path
    if len(str(folder / "notify")) > AF_UNIX_PATH_MAX:
        folder = Path(tempfile.mkdtemp(prefix="bpf-"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield FakeSystemd(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"bpfailover-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield FakeSystemd(sock, "@" + name)
    finally:
        sock.close()


def test_ready_sends_ready_and_status(systemd: FakeSystemd) -> None:
    watchdog = Watchdog.from_env(systemd.env())
    watchdog.ready("bp1: relay at epoch 7,\nfence armed")
    assert systemd.receive() == "READY=1\nSTATUS=bp1: relay at epoch 7, fence armed"


def test_ready_reaches_an_abstract_socket(abstract_systemd: FakeSystemd) -> None:
    watchdog = Watchdog.from_env(abstract_systemd.env())
    watchdog.ready()
    assert abstract_systemd.receive().splitlines()[0] == "READY=1"
    assert watchdog.ping(0.0)
    assert abstract_systemd.receive() == "WATCHDOG=1"


def test_status_and_stopping(systemd: FakeSystemd) -> None:
    watchdog = Watchdog.from_env(systemd.env())
    watchdog.status("fenced")
    watchdog.stopping("SIGTERM")
    assert systemd.receive() == "STATUS=fenced"
    assert systemd.receive() == "STOPPING=1\nSTATUS=SIGTERM"


def test_interval_comes_from_watchdog_usec(systemd: FakeSystemd) -> None:
    assert Watchdog.from_env(systemd.env(watchdog_sec=20)).interval == 20.0
    assert Watchdog.from_env(systemd.env(watchdog_sec=None)).interval is None


def test_ping_is_rate_limited_to_half_the_interval(systemd: FakeSystemd) -> None:
    watchdog = Watchdog.from_env(systemd.env(watchdog_sec=20))
    sent = [watchdog.ping(now) for now in (100.0, 100.25, 109.9, 110.0, 110.1, 119.9, 120.0)]
    assert sent == [True, False, False, True, False, False, True]
    assert systemd.pending() == ["WATCHDOG=1"] * 3


def test_watchdog_pid_of_another_process_disables_pings(systemd: FakeSystemd) -> None:
    watchdog = Watchdog.from_env(systemd.env(watchdog_sec=20, pid=os.getpid() + 1))
    assert watchdog.interval is None
    assert not watchdog.ping(0.0)
    assert systemd.pending() == []
    watchdog.ready()  # sd_notify itself is not tied to WATCHDOG_PID
    assert systemd.receive().startswith("READY=1")


def test_watchdog_pid_is_matched_against_the_given_pid(systemd: FakeSystemd) -> None:
    env = systemd.env(watchdog_sec=20, pid=4242)
    assert Watchdog.from_env(env, pid=4242).interval == 20.0
    assert Watchdog.from_env(env, pid=4243).interval is None


def test_no_notify_socket_is_a_no_op() -> None:
    watchdog = Watchdog.from_env({"WATCHDOG_USEC": "20000000"})
    assert not watchdog.notifying
    assert watchdog.interval is None
    watchdog.ready()
    watchdog.status("x")
    watchdog.stopping()
    assert not watchdog.ping(0.0)


def test_unreachable_socket_never_raises_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watchdog = Watchdog.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "20000000"})
    with caplog.at_level(logging.DEBUG, logger="bpfailover.actuator.watchdog"):
        watchdog.ready()
        assert not watchdog.ping(0.0)
        assert not watchdog.ping(0.1)  # a failed ping is retried at once, not rate-limited
        watchdog.stopping()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sd_notify" in warnings[0].getMessage()


def test_closed_socket_never_raises(systemd: FakeSystemd) -> None:
    watchdog = Watchdog.from_env(systemd.env())
    systemd.sock.close()
    watchdog.ready()
    assert not watchdog.ping(0.0)


def test_a_full_systemd_queue_never_blocks_the_loop(systemd: FakeSystemd) -> None:
    watchdog = Watchdog.from_env(systemd.env(watchdog_sec=0.000002))  # half interval: 1 us
    sent = [watchdog.ping(float(i)) for i in range(5000)]  # nobody reads: the queue fills up
    assert sent[0]
    assert not sent[-1]


def test_invalid_notify_socket_and_watchdog_usec_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bpfailover.actuator.watchdog"):
        assert not Watchdog.from_env({"NOTIFY_SOCKET": "relative/path"}).notifying
        assert Watchdog.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"}).interval is None
    assert len(caplog.records) == 2


def test_restart_bound_adds_interval_abort_wait_restart_and_startup() -> None:
    assert watchdog_restart_bound(20.0, restart_sec=2.0, abort_sec=5.0) == 27.0 + STARTUP_SLACK
