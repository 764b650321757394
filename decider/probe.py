"""Before a decider connects under its own MQTT client id: is this decider id already running?

Two processes with one client id take the broker session from each other, back and forth,
for ever; so a decider first looks, read-only and under a throwaway client id, at the
retained presence of its id (``{prefix}/{pool}/deciders/{id}`` of its first pool). One that
says online may be a live process, or a crashed one whose Will the broker has not sent yet:
a live one republishes its presence within ``refresh`` seconds, a dead one does not (or its
Will arrives). Only a live one refuses the start.
"""

from __future__ import annotations

import logging
import time

from bpfailover.decider.peers import duplicate_line
from bpfailover.link import Incoming, LinkError, MqttLink, make_client_id
from bpfailover.protocol.wire import DeciderStatus, PayloadRejected, decode
from bpfailover.settings import MqttSettings

log = logging.getLogger("bpfailover.decider")

QUIET = 0.5  # seconds without a message after the SUBACK: the retained presence is not there


def find_duplicate(
    settings: MqttSettings, topic: str, pool: str, decider_id: str, instance: str, refresh: float
) -> str | None:
    """The one line to refuse the start with, or None when no other live process has our id."""
    link = MqttLink(
        settings.model_copy(update={"client_id": None}),
        make_client_id("decider-probe", unique=True),
        subscriptions=[topic],
        mark_subscribed=True,
    )
    try:
        link.start(attempts=2)
    except LinkError as exc:
        log.warning("could not look for another decider with id %s first: %s", decider_id, exc)
        return None
    try:
        return _watch(link, pool, decider_id, instance, refresh)
    finally:
        link.stop()


def _watch(link: MqttLink, pool: str, decider_id: str, instance: str, refresh: float) -> str | None:
    start = time.monotonic()
    deadline = start + QUIET + 5.0  # the SUBACK, then QUIET
    suspect: DeciderStatus | None = None
    while (now := time.monotonic()) < deadline:
        item = link.get(timeout=deadline - now)
        if item is None:
            break
        if not isinstance(item, Incoming):
            if item.kind == "subscribed" and suspect is None:
                deadline = time.monotonic() + QUIET
            continue
        try:
            status = decode(DeciderStatus, item.payload, pool=pool) if item.payload else None
        except PayloadRejected:
            continue
        if status is None or status.decider != decider_id or status.instance in (None, instance):
            continue
        if not status.online:
            return None  # its Will, or a clean stop: it is gone
        if not item.retain:
            age = max(0.0, time.time() - status.updated_at)
            return duplicate_line(decider_id, status.instance or "?", age)
        if suspect is None:
            suspect = status
            log.info(
                "decider %s: instance %s says online; waiting up to %.0fs for a sign of life",
                decider_id,
                status.instance,
                refresh,
            )
            deadline = time.monotonic() + refresh
    return None
