"""``bpfailover init``: write a complete, consistent deployment bundle for one pool.

Layout (see docs/bundle.md)::

    DIR/broker/   mosquitto.conf ca.crt server.crt server.key passwd acl data/
    DIR/keys/     ca.key command-signing.key command-signing.pub operator-signing.key operator-signing.pub
    DIR/decider.toml  DIR/operator.toml  DIR/monitor.toml
    DIR/nodes/<node>.publisher.toml  DIR/nodes/<node>.actuator.toml   (one broker user each)
    DIR/decider-2.toml   (with ``--deciders 2``: the standby decider, its own broker user)
    DIR/run/<node>/   env env.producer env.relay (local env-swap samples)

Secrets are written 0600 into 0700 folders, each file atomically (temporary file,
then rename), so a rerun with ``--force`` never leaves a half-written key.
"""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bpfailover.broker import certs, configs, mosquitto
from bpfailover.broker.passwd import new_password, passwd_line
from bpfailover.protocol.signing import generate_key, private_key_pem, public_key_b64, public_key_pem
from bpfailover.protocol.topics import TopicError, check_id, check_prefix

log = logging.getLogger(__name__)

SECRET = 0o600
PUBLIC = 0o644
PRIVATE_DIR = 0o700
FIRST_PRIORITY = 100
PRIORITY_STEP = 10

_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class BundleError(ValueError):
    """A mistake in the ``init`` arguments or target folder; the message is one line."""


@dataclass(frozen=True)
class BundlePlan:
    """Validated inputs of one bundle."""

    root: Path
    pool: str
    nodes: list[str]
    broker_host: str
    broker_port: int
    prefix: str
    owner: str
    deciders: int = 1

    def priorities(self) -> list[tuple[str, int]]:
        """Priorities in the order given: 100, 90, 80 ... never below 1."""
        return [
            (name, max(1, FIRST_PRIORITY - PRIORITY_STEP * i)) for i, name in enumerate(self.nodes)
        ]


def current_user() -> str:
    """The user who will own the files (the effective uid), which mosquitto must run as."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return getpass.getuser()


def check_host(host: str) -> str:
    host = host.strip()
    if certs.parse_ip(host) is None and not _HOSTNAME.match(host):
        raise BundleError(
            f"invalid --broker-host {host!r}: "
            "give the DNS name or IP address clients use to reach the broker"
        )
    return host


def plan_bundle(
    root: Path,
    *,
    pool: str,
    nodes: list[str],
    broker_host: str = "127.0.0.1",
    broker_port: int = 8883,
    prefix: str = "bpfailover",
    deciders: int = 1,
) -> BundlePlan:
    """Validate every input; raise BundleError with a one-line message on the first mistake."""
    try:
        check_id(pool, "pool id")
        for node in nodes:
            check_id(node, "node name")
        check_prefix(prefix)
    except TopicError as exc:
        raise BundleError(str(exc)) from None
    if not nodes:
        raise BundleError("--nodes is empty: give at least one node name, e.g. --nodes bp1,bp2")
    repeated = sorted({n for n in nodes if nodes.count(n) > 1})
    if repeated:
        raise BundleError(f"--nodes names {', '.join(repeated)} more than once: give each node once")
    if not 1 <= deciders <= mosquitto.MAX_DECIDERS:
        raise BundleError(f"invalid --deciders {deciders}: use 1, or 2 for an active and a standby decider")
    reserved = [n for n in nodes if n in (*mosquitto.SERVICE_USERS, *mosquitto.decider_users(deciders))]
    if reserved:
        raise BundleError(
            f"node name {reserved[0]!r} is reserved for the broker user of that service: rename the node"
        )
    if not 1 <= broker_port <= 65535:
        raise BundleError(f"invalid --broker-port {broker_port}: use a TCP port between 1 and 65535")
    return BundlePlan(
        root=Path(root).expanduser().absolute(),
        pool=pool,
        nodes=list(nodes),
        broker_host=check_host(broker_host),
        broker_port=broker_port,
        prefix=prefix,
        owner=current_user(),
        deciders=deciders,
    )


def existing_bundle(root: Path) -> Path | None:
    for marker in (root / "broker" / "mosquitto.conf", root / "decider.toml"):
        if marker.exists():
            return marker
    return None


def _make_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def _write(path: Path, content: str | bytes, mode: int) -> None:
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("wrote %s (mode %o)", path, mode)


def write_bundle(
    root: Path,
    *,
    pool: str,
    nodes: list[str],
    broker_host: str = "127.0.0.1",
    broker_port: int = 8883,
    prefix: str = "bpfailover",
    force: bool = False,
    deciders: int = 1,
) -> str:
    """Write the bundle for ``pool`` into ``root``; return a short summary for the operator."""
    plan = plan_bundle(
        root, pool=pool, nodes=nodes, broker_host=broker_host, broker_port=broker_port,
        prefix=prefix, deciders=deciders,
    )
    marker = existing_bundle(plan.root)
    if marker is not None and not force:
        raise BundleError(
            f"{plan.root} already holds a bundle ({marker.relative_to(plan.root)}): "
            "pass --force to overwrite it (new keys and passwords for every user)"
        )
    if plan.root.exists() and not plan.root.is_dir():
        raise BundleError(f"{plan.root} exists and is not a folder: choose another DIR")
    try:
        _write_all(plan)
    except OSError as exc:
        raise BundleError(f"cannot write the bundle into {plan.root}: {exc.strerror or exc}") from None
    log.debug("bundle for pool %s written to %s (nodes %s)", plan.pool, plan.root, ",".join(plan.nodes))
    return summary(plan)


def _write_all(plan: BundlePlan) -> None:
    root = plan.root
    if not root.exists():
        _make_dir(root, PRIVATE_DIR)
    files = mosquitto.BrokerFiles(root / "broker")
    keys = root / "keys"
    for folder in (files.folder, files.data, keys, root / "nodes", root / "run"):
        _make_dir(folder, PRIVATE_DIR)

    ca, ca_key = certs.make_ca(plan.pool)
    server = certs.make_server_cert(plan.broker_host, ca.cert_pem, ca_key)
    _write(keys / "ca.key", ca.key_pem, SECRET)
    _write(files.ca_cert, ca.cert_pem, PUBLIC)
    _write(files.server_cert, server.cert_pem, PUBLIC)
    _write(files.server_key, server.key_pem, SECRET)

    signing = generate_key()
    _write(keys / "command-signing.key", private_key_pem(signing), SECRET)
    _write(keys / "command-signing.pub", public_key_pem(signing.public_key()), PUBLIC)
    verify_key = public_key_b64(signing.public_key())
    operator = generate_key()  # signs control requests; the decider checks them (operator_key)
    _write(keys / "operator-signing.key", private_key_pem(operator), SECRET)
    _write(keys / "operator-signing.pub", public_key_pem(operator.public_key()), PUBLIC)
    operator_key = public_key_b64(operator.public_key())

    users = [
        *(mosquitto.node_user(node, duty) for node in plan.nodes for duty in mosquitto.NODE_DUTIES),
        *mosquitto.SERVICE_USERS,
        *mosquitto.decider_users(plan.deciders)[1:],
    ]
    passwords = {user: new_password() for user in users}
    _write(files.passwd, "".join(passwd_line(u, p) for u, p in passwords.items()), SECRET)
    # 0600 too: mosquitto ≥ 2.0.16 warns about world-readable ACL and password files.
    acl = mosquitto.render_acl(pool=plan.pool, nodes=plan.nodes, prefix=plan.prefix, deciders=plan.deciders)
    _write(files.acl, acl, SECRET)
    _write(
        files.conf,
        mosquitto.render_conf(
            files, pool=plan.pool, port=plan.broker_port,
            address=mosquitto.listen_address(plan.broker_host), user=plan.owner,
        ),
        PUBLIC,
    )

    def access(user: str, ca_file: str) -> configs.MqttAccess:
        return configs.MqttAccess(
            host=plan.broker_host, port=plan.broker_port, prefix=plan.prefix,
            ca_file=ca_file, username=user, password=passwords[user],
        )

    ranked = plan.priorities()
    _write(
        root / "decider.toml",
        configs.render_decider(
            access(mosquitto.DECIDER_USER, "broker/ca.crt"), plan.pool, ranked, operator_key=operator_key
        ),
        SECRET,
    )
    for user in mosquitto.decider_users(plan.deciders)[1:]:
        # The standby: its own broker user and decider id, the same pool and signing key.
        _write(
            root / f"{user}.toml",
            configs.render_decider(
                access(user, "broker/ca.crt"),
                plan.pool,
                ranked,
                decider_id=user,
                standby=True,
                operator_key=operator_key,
            ),
            SECRET,
        )
    _write(
        root / "operator.toml",
        configs.render_operator(access(mosquitto.OPERATOR_USER, "broker/ca.crt"), plan.pool, ranked),
        SECRET,
    )
    _write(
        root / "monitor.toml",
        configs.render_monitor(access(mosquitto.MONITOR_USER, "broker/ca.crt"), plan.pool, ranked),
        SECRET,
    )
    for node, priority in ranked:
        publisher = access(mosquitto.node_user(node, "publisher"), "../broker/ca.crt")
        actuator = access(mosquitto.node_user(node, "actuator"), "../broker/ca.crt")
        _write(
            node_config(root, node, "publisher"),
            configs.render_publisher(publisher, plan.pool, node, priority),
            SECRET,
        )
        _write(
            node_config(root, node, "actuator"),
            configs.render_actuator(actuator, plan.pool, node, priority, verify_key),
            SECRET,
        )
        legacy = root / "nodes" / f"{node}.toml"
        if legacy.exists():
            # A combined file from an older bundle: its shared user is gone from passwd and acl.
            legacy.unlink()
            log.info("removed %s: its broker user no longer exists; use the split files", legacy)
        run = root / "run" / node
        _make_dir(run, PRIVATE_DIR)
        relay = configs.render_env(plan.pool, node, producer=False)
        _write(run / "env.producer", configs.render_env(plan.pool, node, producer=True), PUBLIC)
        _write(run / "env.relay", relay, PUBLIC)
        if not (run / "env").exists():
            # Every node starts as a relay until the decider commands otherwise.
            _write(run / "env", relay, PUBLIC)


def node_config(root: Path, node: str, duty: str) -> Path:
    """``nodes/<node>.publisher.toml`` or ``nodes/<node>.actuator.toml`` in a bundle."""
    return root / "nodes" / f"{node}.{duty}.toml"


def summary(plan: BundlePlan) -> str:
    root = plan.root
    node_files = " ".join(f"nodes/{n}.{{publisher,actuator}}.toml" for n in plan.nodes)
    standbys = "".join(f" {u}.toml" for u in mosquitto.decider_users(plan.deciders)[1:])
    standby_run = "".join(
        f"\n  bpfailover decider -c {root}/{u}.toml     (the standby decider, best on another machine)"
        for u in mosquitto.decider_users(plan.deciders)[1:]
    )
    first = plan.nodes[0]
    where = "this machine" if mosquitto.listen_address(plan.broker_host) else "all interfaces"
    return f"""\
Bundle for pool {plan.pool} written to {root}
  broker/   mosquitto.conf ca.crt server.crt server.key passwd acl data/
  keys/     ca.key command-signing.{{key,pub}} operator-signing.{{key,pub}}   (keep off the nodes)
  decider.toml{standbys} operator.toml monitor.toml
  {node_files}
Broker: {plan.broker_host}:{plan.broker_port} (TLS, listening on {where}); topic prefix {plan.prefix}
Next, each in its own terminal:
  mosquitto -c {root}/broker/mosquitto.conf
  bpfailover decider -c {root}/decider.toml{standby_run}
  bpfailover actuator -c {root}/nodes/{first}.actuator.toml     (likewise for each node)
  bpfailover publisher -c {root}/nodes/{first}.publisher.toml
  bpfailover status -c {root}/monitor.toml     (read-only; operator.toml also sends commands)
To deploy on real nodes, see docs/bundle.md in the bpfailover repository."""
