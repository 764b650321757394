"""The fault suite's own MQTT clients (checker, injector): built, connected and stopped alike."""

from __future__ import annotations

import contextlib
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


def admin_client(role: str, ca_file: Path | None, credentials: tuple[str, str]) -> paho.Client:
    """A paho client for the test admin, to be given its callbacks and then ``connect``ed."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bpf-fault-{role}-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.tls_set(ca_certs=str(ca_file) if ca_file else None)
    client.username_pw_set(*credentials)
    client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
    return client


def connect(client: paho.Client, host: str, port: int) -> paho.Client:
    """Connect in the background (paho retries until the broker is there)."""
    client.connect_async(host, port, keepalive=5)
    client.loop_start()
    return client


def stop(done: threading.Event, thread: threading.Thread | None, client: paho.Client | None) -> None:
    """Stop a helper's own thread, then its client."""
    done.set()
    if thread is not None:
        thread.join(5)
    if client is not None:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
