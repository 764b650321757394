"""Mosquitto's configuration and ACL for one pool, rendered as text.

Every path in ``mosquitto.conf`` is absolute: mosquitto resolves relative paths
against its working directory, not against the configuration file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import MAX_PAYLOAD

# The broker's limit on a whole MQTT packet; see the comment written into mosquitto.conf.
MAX_PACKET_SIZE = 2 * MAX_PAYLOAD

DECIDER_USER = "decider"
OPERATOR_USER = "operator"
MONITOR_USER = "monitor"
SERVICE_USERS = (DECIDER_USER, OPERATOR_USER, MONITOR_USER)
MAX_DECIDERS = 2
# Each node has one broker user per service, so a credential can affect its own duty only.
# Node users never collide with each other or with a service user: they always end in
# "-publisher" or "-actuator", and no service user does.
NODE_DUTIES = ("publisher", "actuator")


def node_user(node: str, duty: str) -> str:
    """The broker user of one service on one node: ``bp1-publisher``, ``bp1-actuator``."""
    if duty not in NODE_DUTIES:
        raise ValueError(f"unknown node duty {duty!r}: use one of {', '.join(NODE_DUTIES)}")
    return f"{node}-{duty}"


def decider_users(count: int = 1) -> list[str]:
    """The broker users (and decider ids) of ``count`` deciders: decider, decider-2."""
    return [DECIDER_USER, *(f"{DECIDER_USER}-{i}" for i in range(2, count + 1))]

LOOPBACK_HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}


def listen_address(broker_host: str) -> str | None:
    """Bind address: loopback when clients reach the broker on this machine, else all."""
    return LOOPBACK_HOSTS.get(broker_host.lower())


@dataclass(frozen=True)
class BrokerFiles:
    """Absolute paths mosquitto needs, all inside the bundle's ``broker/`` folder."""

    folder: Path

    @property
    def conf(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def passwd(self) -> Path:
        return self.folder / "passwd"

    @property
    def acl(self) -> Path:
        return self.folder / "acl"

    @property
    def data(self) -> Path:
        return self.folder / "data"


def render_conf(files: BrokerFiles, *, pool: str, port: int, address: str | None, user: str) -> str:
    listener = f"listener {port} {address}" if address else f"listener {port}"
    bind_note = (
        "# Loopback only: the bundle was made for a broker reached on this machine.\n"
        if address
        else "# All interfaces: nodes connect from other machines. Open this port in the firewall.\n"
    )
    if user == "root":
        user_note = (
            "# The bundle was written by root, who owns its 0600 key, password and ACL files,\n"
            "# so mosquitto keeps running as root. To run it as a normal user instead, run\n"
            "# `bpfailover init` as that user.\n"
        )
    else:
        user_note = (
            f"# Started as root, mosquitto drops its privileges to {user}, who owns the 0600\n"
            "# key, password and ACL files below and the persistence folder; a non-root user\n"
            f"# ignores this line. So the same command works as root and as {user}.\n"
        )
    return f"""\
# Mosquitto broker for bpfailover pool {pool}, written by `bpfailover init`.
# Start it with:  mosquitto -c {files.conf}
per_listener_settings false

{user_note}user {user}

{bind_note}{listener}
cafile {files.ca_cert}
certfile {files.server_cert}
keyfile {files.server_key}

allow_anonymous false
password_file {files.passwd}
acl_file {files.acl}

# No bpfailover message is larger than {MAX_PAYLOAD} bytes (the wire contract; readers drop
# anything bigger). A packet also carries its topic (under 200 bytes here), a fixed header
# and MQTT 5 properties, so twice the payload leaves ample room. Without this limit a node's
# credentials could make the broker accept, retain and persist messages of up to 256 MiB
# (the protocol's limit).
# A client that sends a larger packet is disconnected and nothing of it is kept.
max_packet_size {MAX_PACKET_SIZE}

# Retained tips, states and role commands survive a restart; saving every
# minute bounds what a crash of the broker itself can lose.
persistence true
persistence_location {files.data}/
autosave_interval 60

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


def render_acl(*, pool: str, nodes: list[str], prefix: str, deciders: int = 1) -> str:
    """Least privilege: each service reaches only the topics of its duty; anything not granted is denied.

    A node's publisher and actuator are separate users, so the publisher's password (readable by
    the unprivileged user that runs cardano-node) cannot forge the actuator's state or read its
    role commands, and neither can touch another node's topics.
    """
    topics = Topics(prefix)
    lines = [
        f"# Access control for bpfailover pool {pool}, written by `bpfailover init`.",
        "# A user may use only the topics granted below; everything else is denied.",
        "",
    ]
    for node in nodes:
        lines += [
            f"# node {node}, publisher (runs as the cardano-node user): writes its own tip, nothing else",
            f"user {node_user(node, 'publisher')}",
            f"topic write {topics.tip(pool, node)}",
            "",
            f"# node {node}, actuator (runs as root): writes its own state, reads only its own role",
            f"user {node_user(node, 'actuator')}",
            f"topic write {topics.state(pool, node)}",
            f"topic read {topics.role(pool, node)}",
            "",
        ]
    base = f"{prefix}/{pool}"
    for user in decider_users(deciders):
        lines += [
            "# decider: reads every node's tip and state and the operator's requests; it reads",
            "# its own retained role, dry-run and status messages back to recover after a restart,",
            "# and every decider's presence; it writes its own",
            f"user {user}",
            f"topic read {base}/tip/+",
            f"topic read {base}/state/+",
            f"topic read {topics.control(pool)}",
            f"topic readwrite {base}/role/+",
            f"topic readwrite {base}/dryrun/+",
            f"topic readwrite {topics.decider(pool)}",
            f"topic write {topics.events(pool)}",
            f"topic read {base}/deciders/+",
            f"topic readwrite {topics.presence(pool, user)}",
            "",
        ]
    lines += [
        "# operator (bpfailover status, switchover, ...): sends requests, reads the whole pool",
        f"user {OPERATOR_USER}",
        f"topic write {topics.control(pool)}",
        f"topic read {base}/#",
        "",
        "# monitor (bpfailover status, status --watch, dashboards): reads the whole pool, writes nothing",
        f"user {MONITOR_USER}",
        f"topic read {base}/#",
        "",
    ]
    return "\n".join(lines)


def find_mosquitto() -> str | None:
    """The mosquitto binary: on PATH, or where Debian and Homebrew install it (sbin is often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None
