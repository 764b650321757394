"""A TCP proxy between one node and the broker that can cut, delay or blackhole the link.

TLS and MQTT pass through untouched (the proxy only moves bytes), so the node still
verifies the broker's certificate: ``127.0.0.1`` is in the bundle's server certificate.

Modes, switchable at any time from the test's thread:

- ``pass``: bytes flow both ways.
- ``delay``: every chunk (and the end of the stream) is forwarded ``seconds`` after it
  was read, in order: latency, not a bandwidth limit.
- ``blackhole``: a network partition where TCP stays up. Existing connections stay
  open but nothing is delivered either way; what is read is held, as the peers' TCP
  stacks would keep retransmitting it. New connections are accepted and fed nothing
  (their SYN would be dropped by a real partition; here the handshake hangs instead).
  On ``heal``: a connection both of whose ends are still open gets its held bytes,
  in order (TCP retransmission after the partition); one that either end closed during
  the partition is reset on both sides (the closing end's kernel would answer the
  retransmissions with RST); the connections accepted during it are reset.
- ``cut``: every connection is reset (RST on both sides) and new ones are reset as
  soon as they are accepted, until ``heal``.
- ``lossy``: a link that connects but loses what the node sends. A new connection's
  TLS handshake and its first ``app_records`` TLS application-data records from the
  node pass (TLS 1.3: the encrypted Finished, then MQTT CONNECT), then every byte from
  the node is read and dropped, while the broker's bytes still reach the node. So the
  broker accepts the connection (CONNACK) and hears nothing more: no SUBSCRIBE, no
  PUBLISH, no PINGREQ, until it drops the client after 1.5 x keepalive (and sends its
  Will); the node reconnects, and so on. The proxy reads TLS record headers only, never
  MQTT. Connections open when the mode starts lose everything from then on. On ``heal``,
  a connection that lost bytes is reset (its TLS stream is broken); the others go on.

The proxy runs its own asyncio loop on a daemon thread; the public methods are
thread-safe and return once the mode change took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tests.faults.proxy")

CHUNK = 65536
_EOF = b""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, as a cut cable or a crashed peer's kernel would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _Direction:
    """One way of one connection: what was read and when it may be written."""

    queue: asyncio.Queue[tuple[float, bytes]] = field(default_factory=asyncio.Queue)
    closed_by_source: bool = False


class _UpstreamGate:
    """``lossy`` mode, one connection, node -> broker: whole TLS records pass until the
    ``app_records``-th application-data record (content type 23) has; then nothing does."""

    APPLICATION_DATA = 23
    HEADER = 5  # content type, version (2), length (2)

    def __init__(self, app_records: int) -> None:
        self.left = app_records
        self.pending = b""
        self.dropped = 0

    def feed(self, data: bytes) -> bytes:
        """What of ``data`` may go on to the broker."""
        if self.left <= 0:
            self.dropped += len(data)
            return b""
        self.pending += data
        passed = bytearray()
        while self.left > 0 and len(self.pending) >= self.HEADER:
            end = self.HEADER + int.from_bytes(self.pending[3:5], "big")
            if len(self.pending) < end:
                break
            record, self.pending = self.pending[:end], self.pending[end:]
            passed += record
            if record[0] == self.APPLICATION_DATA:
                self.left -= 1
        if self.left <= 0:
            self.dropped += len(self.pending)
            self.pending = b""
        return bytes(passed)


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None
    up: _Direction = field(default_factory=_Direction)  # node -> broker
    down: _Direction = field(default_factory=_Direction)  # broker -> node
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    orphan: bool = False  # accepted during a blackhole: never connected upstream
    dead: bool = False
    gate: _UpstreamGate | None = None  # lossy mode: what of the node's bytes passes

    def kill(self) -> None:
        if self.dead:
            return
        self.dead = True
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class FaultProxy:
    """``127.0.0.1:<port>`` forwarding to ``target_host:target_port`` with injectable faults."""

    def __init__(self, target_host: str, target_port: int, *, name: str = "proxy",
                 listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.name = name
        self.port = 0
        self.mode = "pass"
        self.delay_seconds = 0.0
        self.app_records = 2
        self.dropped_bytes = 0  # node -> broker bytes lost in lossy mode, all connections
        self.accepted = 0
        self.reset_count = 0
        self._conns: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._mode_changed: asyncio.Event | None = None

    # --- lifecycle (test thread) ------------------------------------------------------------

    def start(self) -> int:
        """Listen on a free port; return it."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close_all())
            loop.close()

        self._thread = threading.Thread(target=main, name=f"fault-proxy-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self.port

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- faults (test thread) ---------------------------------------------------------------

    def heal(self) -> None:
        """Back to ``pass``; see the module docstring for what happens to held bytes."""
        self._call(self._set_mode("pass", 0.0))

    def delay(self, seconds: float) -> None:
        self._call(self._set_mode("delay", seconds))

    def blackhole(self) -> None:
        self._call(self._set_mode("blackhole", 0.0))

    def cut(self) -> None:
        self._call(self._set_mode("cut", 0.0))

    def lossy(self, app_records: int = 2) -> None:
        """Connections get through, then lose every byte the node sends (module docstring).
        ``app_records``: 2 for TLS 1.3 (Finished and CONNECT are both application data), 1 for 1.2."""
        self.app_records = app_records
        self._call(self._set_mode("lossy", 0.0))

    @property
    def open_connections(self) -> int:
        return sum(1 for c in list(self._conns) if not c.dead)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            raise RuntimeError(f"proxy {self.name} is not running")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- the loop ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._mode_changed = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.kill()
        self._conns.clear()

    async def _set_mode(self, mode: str, delay: float) -> None:
        previous = self.mode
        self.mode, self.delay_seconds = mode, delay
        log.info("proxy %s: %s -> %s%s", self.name, previous, mode, f" {delay:g}s" if delay else "")
        if mode == "cut":
            for conn in list(self._conns):
                self._kill(conn)
        elif mode == "lossy" and previous != "lossy":
            for conn in list(self._conns):
                conn.gate = _UpstreamGate(0)
        elif previous == "lossy":
            for conn in list(self._conns):
                if conn.gate is not None and conn.gate.dropped:
                    self._kill(conn)
                conn.gate = None
        elif previous == "blackhole" and mode != "blackhole":
            for conn in list(self._conns):
                if conn.orphan or conn.up.closed_by_source or conn.down.closed_by_source:
                    self._kill(conn)
        # Wake writers waiting for the blackhole to end.
        assert self._mode_changed is not None
        self._mode_changed.set()
        self._mode_changed = asyncio.Event()

    def _kill(self, conn: _Connection) -> None:
        if not conn.dead:
            self.reset_count += 1
        conn.kill()
        self._conns.discard(conn)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "cut":
            self.reset_count += 1
            _reset(writer)
            return
        if self.mode == "blackhole":
            conn = _Connection(writer, None, orphan=True)
            self._conns.add(conn)
            conn.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                while await reader.read(CHUNK):
                    pass  # swallowed: nothing crosses the partition
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.info("proxy %s: broker %s:%s unreachable: %s", self.name, *self.target, exc)
            _reset(writer)
            return
        conn = _Connection(writer, up_writer)
        if self.mode == "lossy":
            conn.gate = _UpstreamGate(self.app_records)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.ensure_future(self._read(reader, conn, conn.up)),
            asyncio.ensure_future(self._write(up_writer, conn, conn.up)),
            asyncio.ensure_future(self._read(up_reader, conn, conn.down)),
            asyncio.ensure_future(self._write(writer, conn, conn.down)),
        ]

    async def _read(self, reader: asyncio.StreamReader, conn: _Connection, way: _Direction) -> None:
        loop = asyncio.get_running_loop()
        while not conn.dead:
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = _EOF
            gate = conn.gate if way is conn.up else None
            if gate is not None and data:
                before = gate.dropped
                data = gate.feed(data)
                self.dropped_bytes += gate.dropped - before
                if not data:
                    continue  # lost on the way (or a partial record held back)
            due = loop.time() + (self.delay_seconds if self.mode == "delay" else 0.0)
            await way.queue.put((due, data))
            if not data:
                way.closed_by_source = True
                return

    async def _write(self, writer: asyncio.StreamWriter, conn: _Connection, way: _Direction) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not conn.dead:
                due, data = await way.queue.get()
                while self.mode == "blackhole" and not conn.dead:
                    assert self._mode_changed is not None
                    await self._mode_changed.wait()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if conn.dead:
                    return
                if not data:
                    # The source closed: close this side too, then drop the connection.
                    self._kill_quietly(conn)
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            self._kill_quietly(conn)
        except asyncio.CancelledError:
            pass

    def _kill_quietly(self, conn: _Connection) -> None:
        """A peer went away on its own: pass that on without counting it as an injected reset."""
        if conn.dead:
            return
        conn.dead = True
        with contextlib.suppress(Exception):
            conn.client.close()
        if conn.upstream is not None:
            with contextlib.suppress(Exception):
                conn.upstream.close()
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        self._conns.discard(conn)


def wait_connections(proxy: FaultProxy, count: int, timeout: float = 10.0) -> None:
    """Block until ``proxy`` has at least ``count`` open connections."""
    deadline = time.monotonic() + timeout
    while proxy.open_connections < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy {proxy.name}: {proxy.open_connections} of {count} connections")
        time.sleep(0.02)
