"""A test broker mode: mosquitto as AWS IoT Core delivers retained messages (never to wildcards).

AWS IoT Core documents that "subscription to topic filters that contain a wildcard character
can't receive retained messages". mosquitto has no such setting, so ``RetainlessWildcards``
is a small MQTT proxy in front of a test broker that does it:

- it terminates TLS with the bundle's own server certificate (clients verify it as they
  verify the broker: ``127.0.0.1`` is in it) and connects to the broker with TLS;
- it reads MQTT packets both ways: from the client, CONNECT (the protocol version),
  SUBSCRIBE and UNSUBSCRIBE (which filters this connection holds); from the broker,
  PUBLISH;
- a PUBLISH from the broker with the RETAIN flag (mosquitto sets it only on the retained
  messages it sends for a new subscription: live ones are forwarded with RETAIN 0 under
  MQTT 3.1.1, and under MQTT 5 without Retain As Published, which no service asks for)
  whose topic matches none of the connection's filters without a wildcard is dropped, and
  the proxy acknowledges it to the broker itself (PUBACK), as the client would have.

Everything else passes byte for byte. ``stripped`` lists the topics dropped so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from pathlib import Path

log = logging.getLogger("tests.retainless")

CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE = 1, 3, 8, 10
PUBACK = 0x40


def has_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    """One whole MQTT packet (fixed header included); raises IncompleteReadError at the end."""
    head = await reader.readexactly(1)
    length, shift, raw = 0, 0, b""
    while True:
        byte = await reader.readexactly(1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
        if shift > 21:
            raise ValueError("malformed remaining length")
    return head + raw + await reader.readexactly(length)


def _body(packet: bytes) -> bytes:
    i = 1
    while packet[i] & 0x80:
        i += 1
    return packet[i + 1 :]


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _string(data: bytes, i: int) -> tuple[str, int]:
    size = int.from_bytes(data[i : i + 2], "big")
    return data[i + 2 : i + 2 + size].decode(), i + 2 + size


def subscription_filters(packet: bytes, v5: bool) -> list[str]:
    """The topic filters of a SUBSCRIBE or UNSUBSCRIBE packet."""
    body = _body(packet)
    i = 2  # packet id
    if v5:
        size, i = _varint(body, i)
        i += size
    subscribe = packet[0] >> 4 == SUBSCRIBE
    filters = []
    while i < len(body):
        topic, i = _string(body, i)
        filters.append(topic)
        i += 1 if subscribe else 0  # the options byte
    return filters


class _Connection:
    def __init__(self) -> None:
        self.v5 = False
        self.exact: set[str] = set()
        self.filters: set[str] = set()

    def from_client(self, packet: bytes) -> None:
        kind = packet[0] >> 4
        if kind == CONNECT:
            body = _body(packet)
            _name, i = _string(body, 0)
            self.v5 = body[i] == 5
        elif kind == SUBSCRIBE:
            self.filters.update(subscription_filters(packet, self.v5))
        elif kind == UNSUBSCRIBE:
            self.filters.difference_update(subscription_filters(packet, self.v5))
        self.exact = {f for f in self.filters if not has_wildcard(f)}

    def drops(self, packet: bytes) -> tuple[str, bytes | None] | None:
        """For a retained PUBLISH that only wildcard filters would bring: its topic and the PUBACK
        to answer the broker with (None at QoS 0). None for a packet to forward."""
        if packet[0] >> 4 != PUBLISH or not packet[0] & 0x01:
            return None
        body = _body(packet)
        topic, i = _string(body, 0)
        if topic in self.exact:
            return None
        qos = (packet[0] >> 1) & 0x03
        return topic, (bytes([PUBACK, 2]) + body[i : i + 2]) if qos == 1 else None


class RetainlessWildcards:
    """``127.0.0.1:<port>`` in front of ``target_port``; see the module docstring."""

    def __init__(self, bundle: Path, target_host: str, target_port: int, *, tls: bool = True) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.stripped: list[str] = []
        self._server_ctx: ssl.SSLContext | None = None
        self._client_ctx: ssl.SSLContext | None = None
        if tls:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server.load_cert_chain(bundle / "broker" / "server.crt", bundle / "broker" / "server.key")
            self._server_ctx = server
            self._client_ctx = ssl.create_default_context(cafile=str(bundle / "broker" / "ca.crt"))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> int:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._server_ctx)
            )
            self.port = int(server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=main, name="retainless-wildcards", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the retainless-wildcards proxy did not start")
        return self.port

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> RetainlessWildcards:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hostname = self.target[0] if self._client_ctx else None
            up_reader, up_writer = await asyncio.open_connection(
                *self.target, ssl=self._client_ctx, server_hostname=hostname
            )
        except OSError as exc:
            log.info("retainless proxy: broker unreachable: %s", exc)
            writer.close()
            return
        conn = _Connection()
        lock = asyncio.Lock()  # two tasks write to the broker: the client's packets and our PUBACKs
        up = asyncio.ensure_future(self._client_to_broker(reader, up_writer, conn, lock))
        down = asyncio.ensure_future(self._broker_to_client(up_reader, writer, up_writer, conn, lock))
        self._tasks.update((up, down))
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
            self._tasks.discard(task)
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def _client_to_broker(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, conn: _Connection, lock: asyncio.Lock
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            while True:
                packet = await read_packet(reader)
                conn.from_client(packet)
                async with lock:
                    up.write(packet)
                    await up.drain()

    async def _broker_to_client(
        self,
        reader: asyncio.StreamReader,
        down: asyncio.StreamWriter,
        up: asyncio.StreamWriter,
        conn: _Connection,
        lock: asyncio.Lock,
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            while True:
                packet = await read_packet(reader)
                dropped = conn.drops(packet)
                if dropped is None:
                    down.write(packet)
                    await down.drain()
                    continue
                topic, ack = dropped
                self.stripped.append(topic)
                if ack is not None:
                    async with lock:
                        up.write(ack)
                        await up.drain()
