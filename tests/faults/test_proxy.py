"""The fault proxy itself, against a plain TCP echo server (fast, no broker)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy, wait_connections


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fault_proxy = FaultProxy("127.0.0.1", server.server_address[1], name="echo")
    fault_proxy.start()
    yield fault_proxy
    fault_proxy.stop()
    server.shutdown()
    server.server_close()


def _connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    return sock


def _echo(sock: socket.socket, payload: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"hello") == b"hello"


def test_delay_adds_latency_in_order(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        wait_connections(proxy, 1)
        proxy.delay(0.3)
        started = time.monotonic()
        assert _echo(sock, b"abc") == b"abc"
        # 0.3 s each way
        assert time.monotonic() - started >= 0.55


def test_cut_resets_existing_and_refuses_new(proxy: FaultProxy) -> None:
    sock = _connect(proxy)
    assert _echo(sock, b"x") == b"x"
    proxy.cut()
    with pytest.raises(OSError):
        sock.sendall(b"y")
        if not sock.recv(10):
            raise ConnectionResetError("closed")
    sock.close()
    with pytest.raises(OSError):  # refused: reset as soon as it is accepted
        fresh = _connect(proxy)
        try:
            fresh.settimeout(2)
            fresh.sendall(b"z")
            if not fresh.recv(10):
                raise ConnectionResetError("closed")
        finally:
            fresh.close()
    proxy.heal()
    with _connect(proxy) as sock2:
        assert _echo(sock2, b"back") == b"back"


def test_blackhole_holds_bytes_and_delivers_them_on_heal(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"1") == b"1"
        proxy.blackhole()
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.heal()
        sock.settimeout(5)
        assert sock.recv(10) == b"held"


def test_blackhole_accepts_new_connections_but_forwards_nothing(proxy: FaultProxy) -> None:
    proxy.blackhole()
    with _connect(proxy) as sock:
        sock.sendall(b"lost")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.heal()
        sock.settimeout(5)
        with pytest.raises(OSError):
            if not sock.recv(10):
                raise ConnectionResetError("closed")


def _record(content_type: int, body: bytes) -> bytes:
    """A TLS record as the lossy mode sees it: type, version, length, body (never decrypted)."""
    return bytes([content_type, 3, 3]) + len(body).to_bytes(2, "big") + body


def test_lossy_passes_the_handshake_and_first_records_then_drops_what_the_node_sends(
    proxy: FaultProxy,
) -> None:
    proxy.lossy(app_records=2)
    with _connect(proxy) as sock:
        sock.settimeout(5)
        handshake = _record(22, b"hello") + _record(20, b"\x01")
        first = _record(23, b"finished") + _record(23, b"connect")
        # Sent in pieces that split a record header: the gate reassembles whole records.
        both = handshake + first
        sock.sendall(both[:3])
        sock.sendall(both[3:])
        got = b""
        while len(got) < len(both) and (chunk := sock.recv(4096)):
            got += chunk
        assert got == both
        sock.sendall(_record(23, b"publish"))
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert proxy.dropped_bytes == len(_record(23, b"publish"))
    proxy.heal()
    with _connect(proxy) as sock2:
        assert _echo(sock2, b"back") == b"back"


def test_lossy_drops_everything_on_open_connections_and_resets_them_on_heal(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"1") == b"1"
        proxy.lossy()
        sock.sendall(b"lost")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.heal()
        sock.settimeout(5)
        with pytest.raises(OSError):
            if not sock.recv(10):
                raise ConnectionResetError("closed")
