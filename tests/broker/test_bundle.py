"""``bpfailover init``: the bundle's files, and a real mosquitto accepting them."""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from bpfailover.broker.bundle import current_user, write_bundle
from bpfailover.broker.mosquitto import MAX_PACKET_SIZE
from bpfailover.broker.passwd import check_password, hash_password
from bpfailover.cli import main
from bpfailover.protocol.signing import load_signing_key, load_verify_key, public_key_b64
from bpfailover.protocol.wire import MAX_PAYLOAD
from bpfailover.settings import load_config, read_toml
from tests.brokers import BrokerHandle, wait_for

NODES = ["bp1", "bp2", "bp3"]
DUTIES = ["publisher", "actuator"]
NODE_USERS = [f"{n}-{d}" for n in NODES for d in DUTIES]
SECRETS = [
    "keys/ca.key", "keys/command-signing.key", "broker/server.key", "broker/passwd",
    "broker/acl", "decider.toml", "operator.toml", "monitor.toml",
    *(f"nodes/{n}.{d}.toml" for n in NODES for d in DUTIES),
]
PUBLIC = ["broker/mosquitto.conf", "broker/ca.crt", "broker/server.crt", "keys/command-signing.pub"]
PRIVATE_DIRS = [".", "broker", "broker/data", "keys", "nodes", "run"]


@pytest.fixture(autouse=True)
def _no_bpf_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # BPF_* variables override configuration files; these tests read the files as written.
    import os

    for key in list(os.environ):
        if key.upper().startswith("BPF_") and not key.upper().startswith("BPF_TEST_"):
            monkeypatch.delenv(key)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    write_bundle(root, pool="pool1", nodes=NODES, broker_host="127.0.0.1", broker_port=18883)
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def passwords(root: Path) -> dict[str, str]:
    return dict(line.split(":", 1) for line in (root / "broker" / "passwd").read_text().splitlines())


# --- the files ---------------------------------------------------------------------------------


def test_bundle_has_every_file_with_secrets_0600_in_0700_folders(bundle: Path) -> None:
    for name in SECRETS:
        assert mode(bundle / name) == 0o600, name
    for name in PUBLIC:
        assert mode(bundle / name) == 0o644, name
    for name in PRIVATE_DIRS:
        assert mode(bundle / name) == 0o700, name
    for node in NODES:
        assert {p.name for p in (bundle / "run" / node).iterdir()} == {"env", "env.producer", "env.relay"}
    # One file per service, no combined file: each can be owned by the user running that service.
    assert {p.name for p in (bundle / "nodes").iterdir()} == {f"{n}.{d}.toml" for n in NODES for d in DUTIES}


def test_mosquitto_conf_uses_absolute_paths_tls_and_no_anonymous(bundle: Path) -> None:
    conf = (bundle / "broker" / "mosquitto.conf").read_text()
    settings = dict(
        line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert settings["per_listener_settings"] == "false"
    assert settings["listener"] == "18883 127.0.0.1"
    assert settings["allow_anonymous"] == "false"
    assert settings["persistence"] == "true"
    assert settings["log_dest"] == "stderr"
    assert settings["user"] == current_user()
    broker_dir = bundle / "broker"
    for key, name in [("cafile", "ca.crt"), ("certfile", "server.crt"), ("keyfile", "server.key"),
                      ("password_file", "passwd"), ("acl_file", "acl")]:
        assert Path(settings[key]).is_absolute()
        assert Path(settings[key]) == broker_dir / name
    assert settings["persistence_location"] == f"{broker_dir / 'data'}/"
    assert (broker_dir / "data").is_dir()


def test_public_broker_host_listens_on_every_interface_with_its_name_in_the_cert(tmp_path: Path) -> None:
    write_bundle(tmp_path, pool="pool1", nodes=["bp1"], broker_host="mqtt.example.net", broker_port=8883)
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text()
    assert re.search(r"^listener 8883$", conf, re.M)
    cert = x509.load_pem_x509_certificate((tmp_path / "broker" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.example.net", "localhost"]
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)


def test_ip_broker_host_is_an_ip_san(tmp_path: Path) -> None:
    write_bundle(tmp_path, pool="pool1", nodes=["bp1"], broker_host="203.0.113.7", broker_port=8883)
    cert = x509.load_pem_x509_certificate((tmp_path / "broker" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("203.0.113.7") in names.get_values_for_type(x509.IPAddress)
    ca = x509.load_pem_x509_certificate((tmp_path / "broker" / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    cert.verify_directly_issued_by(ca)


def acl_blocks(bundle: Path) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    user = None
    for line in (bundle / "broker" / "acl").read_text().splitlines():
        if line.startswith("user "):
            user = line.split()[1]
            blocks[user] = []
        elif line.startswith("topic ") and user:
            blocks[user].append(line)
    return blocks


def test_acl_gives_each_node_service_only_its_own_exact_topics(bundle: Path) -> None:
    blocks = acl_blocks(bundle)
    assert blocks["bp1-publisher"] == ["topic write bpfailover/pool1/tip/bp1"]
    assert blocks["bp1-actuator"] == [
        "topic write bpfailover/pool1/state/bp1",
        "topic read bpfailover/pool1/role/bp1",
    ]
    for node in NODES:
        for line in blocks[f"{node}-publisher"] + blocks[f"{node}-actuator"]:
            assert "+" not in line and "#" not in line and line.endswith(f"/{node}")
    assert blocks["decider"] == [
        "topic read bpfailover/pool1/tip/+",
        "topic read bpfailover/pool1/state/+",
        "topic read bpfailover/pool1/control",
        "topic readwrite bpfailover/pool1/role/+",
        "topic readwrite bpfailover/pool1/dryrun/+",
        "topic readwrite bpfailover/pool1/decider",
        "topic write bpfailover/pool1/events",
        "topic read bpfailover/pool1/deciders/+",
        "topic readwrite bpfailover/pool1/deciders/decider",
    ]
    assert blocks["operator"] == ["topic write bpfailover/pool1/control", "topic read bpfailover/pool1/#"]
    assert blocks["monitor"] == ["topic read bpfailover/pool1/#"]
    assert set(blocks) == {*NODE_USERS, "decider", "operator", "monitor"}


def test_every_toml_loads_and_matches_the_broker(bundle: Path) -> None:
    hashes = passwords(bundle)
    assert set(hashes) == {*NODE_USERS, "decider", "operator", "monitor"}
    verify_key = load_signing_key(bundle / "keys" / "command-signing.key").public_key()

    decider = load_config(bundle / "decider.toml")
    operator = load_config(bundle / "operator.toml")
    monitor = load_config(bundle / "monitor.toml")
    services = {f"{n}-{d}": load_config(bundle / "nodes" / f"{n}.{d}.toml") for n in NODES for d in DUTIES}
    everyone = [("decider", decider), ("operator", operator), ("monitor", monitor), *services.items()]
    for user, config in everyone:
        mqtt = config.mqtt
        assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.prefix, mqtt.protocol) == (
            "127.0.0.1", 18883, True, "bpfailover", "5"
        )
        assert mqtt.username == user
        assert mqtt.ca_file == bundle / "broker" / "ca.crt"
        assert check_password(mqtt.secret() or "", hashes[user]), user

    assert decider.decider.signing_key == bundle / "keys" / "command-signing.key"
    assert (decider.decider.stale_after, decider.decider.min_switch_interval) == (300, 300)
    [pool] = decider.pools
    assert pool.id == "pool1" and pool.initial_producer == "bp1"
    assert [(n.name, n.priority) for n in pool.nodes] == [("bp1", 100), ("bp2", 90), ("bp3", 80)]
    assert operator.pool.id == "pool1" and operator.pools == decider.pools
    assert monitor.pool.id == "pool1" and monitor.pools == decider.pools

    publisher, actuator = services["bp2-publisher"], services["bp2-actuator"]
    for config in (publisher, actuator):
        assert (config.pool.id, config.node.name, config.node.priority) == ("pool1", "bp2", 90)
    assert publisher.publisher.source == "simulate"
    assert publisher.publisher.stall_file == bundle / "run" / "bp2" / "stall"
    assert actuator.actuator.method == "env-swap"
    assert actuator.actuator.env_file == bundle / "run" / "bp2" / "env"
    assert actuator.actuator.state_dir == bundle / "run" / "bp2" / "state"
    assert actuator.actuator.restart_command == "true"
    assert actuator.actuator.verify_key == public_key_b64(verify_key)
    published = load_verify_key(bundle / "keys" / "command-signing.pub")
    assert public_key_b64(published) == actuator.actuator.verify_key


def test_each_node_file_has_only_the_sections_its_service_needs(bundle: Path) -> None:
    for node in NODES:
        for duty in DUTIES:
            sections = set(read_toml(bundle / "nodes" / f"{node}.{duty}.toml"))
            assert sections == {"mqtt", "pool", "node", duty}, (node, duty)
    assert set(read_toml(bundle / "monitor.toml")) == {"mqtt", "pool", "pools"}


def test_force_removes_a_combined_node_file_whose_user_is_gone(tmp_path: Path) -> None:
    write_bundle(tmp_path, pool="pool1", nodes=["bp1"])
    legacy = tmp_path / "nodes" / "bp1.toml"
    legacy.write_text('[mqtt]\nusername = "bp1"\n')  # what an older init wrote
    write_bundle(tmp_path, pool="pool1", nodes=["bp1"], force=True)
    assert not legacy.exists()
    assert "bp1" not in passwords(tmp_path)


def test_two_deciders_get_a_standby_config_with_its_own_user(tmp_path: Path) -> None:
    write_bundle(tmp_path, pool="pool1", nodes=list(NODES), deciders=2)
    assert set(passwords(tmp_path)) == {*NODE_USERS, "decider", "decider-2", "operator", "monitor"}
    first, second = load_config(tmp_path / "decider.toml"), load_config(tmp_path / "decider-2.toml")
    assert (first.decider.id, first.decider.standby) == (None, False)
    assert (second.decider.id, second.decider.standby) == ("decider-2", True)
    assert second.mqtt.username == "decider-2" and second.decider.signing_key == first.decider.signing_key
    assert second.pools == first.pools
    acl = (tmp_path / "broker" / "acl").read_text()
    standby = acl.split("user decider-2\n")[1].split("\n\n")[0].splitlines()
    assert "topic readwrite bpfailover/pool1/role/+" in standby
    assert "topic readwrite bpfailover/pool1/deciders/decider-2" in standby
    assert "topic readwrite bpfailover/pool1/deciders/decider" not in standby


def test_the_default_bundle_has_one_decider(bundle: Path) -> None:
    assert not (bundle / "decider-2.toml").exists()
    assert "standby" not in (bundle / "decider.toml").read_text()


def test_node_toml_shows_production_values_in_comments(bundle: Path) -> None:
    text = "".join((bundle / "nodes" / f"bp1.{d}.toml").read_text() for d in DUTIES)
    for line in [
        '# source = "cardano-cli"',
        '# socket_path = "/opt/cardano/cnode/sockets/node.socket"',
        '# env_file = "/opt/cardano/cnode/scripts/env"',
        '# restart_command = "systemctl restart cnode"',
        '# state_dir = "/var/lib/bpfailover"',
    ]:
        assert line in text


def test_env_samples_differ_only_in_pool_name(bundle: Path) -> None:
    run = bundle / "run" / "bp1"
    producer = (run / "env.producer").read_text()
    relay = (run / "env.relay").read_text()
    assert re.search(r'^POOL_NAME="pool1"$', producer, re.M)
    assert not re.search(r"^POOL_NAME=", relay, re.M)
    assert re.search(r'^#POOL_NAME=""$', relay, re.M)
    assert (run / "env").read_text() == relay  # nobody forges before the decider says so


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_password_hash_check_agrees_with_mosquitto_passwd(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "alice", "s3cret"], check=True)
    hashed = passwd.read_text().strip().split(":", 1)[1]
    assert check_password("s3cret", hashed)
    assert not check_password("wrong", hashed)
    theirs = passwd.read_text().strip()
    ours = f"alice:{hash_password('s3cret')}"
    shape = r"alice:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}=="
    assert re.fullmatch(shape, theirs) and re.fullmatch(shape, ours), (theirs, ours)


# --- the command line ----------------------------------------------------------------------------


def init(root: Path, *extra: str) -> int:
    return main(["init", str(root), "--pool", "pool1", "--nodes", "bp1,bp2", *extra])


def test_init_refuses_to_overwrite_a_bundle_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "b"
    assert init(root) == 0
    out = capsys.readouterr().out
    assert str(root) in out and "mosquitto -c" in out
    before = (root / "broker" / "passwd").read_text()

    assert init(root) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err
    assert (root / "broker" / "passwd").read_text() == before

    assert init(root, "--force") == 0
    assert (root / "broker" / "passwd").read_text() != before
    assert mode(root / "broker" / "passwd") == 0o600


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--pool", "Pool1", "--nodes", "bp1,bp2"], "invalid pool id 'Pool1'"),
        (["--pool", "pool/1", "--nodes", "bp1,bp2"], "invalid pool id"),
        (["--pool", "pool1", "--nodes", "bp1,b+p2"], "invalid node name 'b+p2'"),
        (["--pool", "pool1", "--nodes", "bp1," + "x" * 33], "invalid node name"),
        (["--pool", "pool1", "--nodes", "bp1,bp2,bp1"], "bp1 more than once"),
        (["--pool", "pool1", "--nodes", ","], "--nodes is empty"),
        (["--pool", "pool1", "--nodes", "bp1,decider"], "reserved"),
        (["--pool", "pool1", "--nodes", "bp1", "--prefix", "a/#"], "invalid topic prefix"),
        (["--pool", "pool1", "--nodes", "bp1", "--broker-port", "70000"], "--broker-port 70000"),
        (["--pool", "pool1", "--nodes", "bp1", "--broker-host", "bad host"], "--broker-host"),
    ],
)
def test_init_rejects_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], complaint: str
) -> None:
    root = tmp_path / "b"
    assert main(["init", str(root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("bpfailover: error: ") and complaint in err
    assert not root.exists()


# --- against the real broker ---------------------------------------------------------------------


def client_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian/Ubuntu: apt-get install mosquitto-clients)")
    return path


def sub(
    broker: BrokerHandle, user: str, *topics: str, password: str | None = None, tls: bool = True,
    count: int = 1, wait: int = 1,
) -> subprocess.CompletedProcess[str]:
    """mosquitto_sub as ``user``: print up to ``count`` messages as "topic payload", for ``wait`` s."""
    username, secret = broker.credentials(user)
    args = [client_tool("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port), "-V", "5",
            "-u", username, "-P", secret if password is None else password,
            "-v", "-C", str(count), "-W", str(wait)]
    if tls and broker.ca_file:
        args += ["--cafile", str(broker.ca_file)]
    for topic in topics:
        args += ["-t", topic]
    return subprocess.run(args, capture_output=True, text=True, timeout=wait + 10)


def pub(broker: BrokerHandle, user: str, topic: str, payload: str) -> subprocess.CompletedProcess[str]:
    username, secret = broker.credentials(user)
    args = [client_tool("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-V", "5",
            "-u", username, "-P", secret, "-q", "1", "-r", "-t", topic, "-m", payload]
    if broker.ca_file:
        args += ["--cafile", str(broker.ca_file)]
    return subprocess.run(args, capture_output=True, text=True, timeout=10)


@pytest.fixture
def pool_topics(broker: BrokerHandle) -> Iterator[str]:
    """The pool's topic root; retained messages the test leaves there are cleared after it."""
    yield f"{broker.prefix}/{broker.pool}"
    broker.clear_retained()


@pytest.mark.broker
def test_node_credentials_connect_over_tls(broker: BrokerHandle, pool_topics: str) -> None:
    token = uuid.uuid4().hex
    broker.publish(f"{pool_topics}/role/bp1", token, retain=True)
    result = sub(broker, "bp1-actuator", f"{pool_topics}/role/bp1", wait=5)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{pool_topics}/role/bp1", token]


@pytest.mark.broker
def test_wrong_password_is_refused(broker: BrokerHandle) -> None:
    broker.require_own_broker("the bundle's password file")
    role = f"{broker.prefix}/{broker.pool}/role/bp1"
    result = sub(broker, "bp1-actuator", role, password="not-the-password")
    assert result.returncode != 0
    assert "not authori" in (result.stderr + result.stdout).lower()  # MQTT 5 says "authorized"


@pytest.mark.broker
def test_plaintext_connection_to_the_tls_port_is_refused(broker: BrokerHandle, pool_topics: str) -> None:
    broker.publish(f"{pool_topics}/role/bp1", "retained", retain=True)
    result = sub(broker, "bp1-actuator", f"{pool_topics}/role/bp1", tls=False)
    assert result.returncode != 0
    assert result.stdout == ""


@pytest.mark.broker
def test_acl_stops_bp1_reading_bp2_role(broker: BrokerHandle, pool_topics: str) -> None:
    broker.require_own_broker("the bundle's ACL")
    mine, theirs = f"{pool_topics}/role/bp1", f"{pool_topics}/role/bp2"
    broker.publish(mine, "for-bp1", retain=True)
    broker.publish(theirs, "for-bp2", retain=True)
    result = sub(broker, "bp1-actuator", mine, theirs, count=2, wait=1)
    assert result.stdout.splitlines() == [f"{mine} for-bp1"]
    assert sub(broker, "bp2-actuator", theirs, wait=5).stdout.splitlines() == [f"{theirs} for-bp2"]


@pytest.mark.broker
def test_acl_stops_bp1_publishing_to_bp2_tip(broker: BrokerHandle, pool_topics: str) -> None:
    broker.require_own_broker("the bundle's ACL")
    pub(broker, "bp1-publisher", f"{pool_topics}/tip/bp2", "forged")
    assert pub(broker, "bp1-publisher", f"{pool_topics}/tip/bp1", "genuine").returncode == 0
    assert broker.retained(f"{pool_topics}/tip/+") == {f"{pool_topics}/tip/bp1": b"genuine"}


# Who may write what, tried against the real broker: (user, topics it may write, topics it may not).
WRITES = {
    "bp1-publisher": (["tip/bp1"], ["state/bp1", "role/bp1", "tip/bp2", "state/bp2", "control"]),
    "bp1-actuator": (["state/bp1"], ["tip/bp1", "role/bp1", "state/bp2", "tip/bp2", "control"]),
    "monitor": ([], ["control", "role/bp1", "state/bp1", "tip/bp1", "decider", "events"]),
    "operator": (["control"], ["role/bp1", "state/bp1", "tip/bp1"]),
}


@pytest.mark.broker
@pytest.mark.parametrize("user", sorted(WRITES))
def test_each_user_writes_only_the_topics_of_its_duty(
    broker: BrokerHandle, pool_topics: str, user: str
) -> None:
    broker.require_own_broker("the bundle's ACL")
    allowed, denied = WRITES[user]
    for topic in denied + allowed:
        pub(broker, user, f"{pool_topics}/{topic}", f"from-{user}")
    # mosquitto_pub waits for each PUBACK (QoS 1), so the broker has handled every publish by now.
    assert broker.retained(f"{pool_topics}/#") == {
        f"{pool_topics}/{topic}": f"from-{user}".encode() for topic in allowed
    }


@pytest.mark.broker
def test_the_publisher_cannot_read_its_nodes_role_but_the_actuator_can(
    broker: BrokerHandle, pool_topics: str
) -> None:
    broker.require_own_broker("the bundle's ACL")
    role = f"{pool_topics}/role/bp1"
    broker.publish(role, "relay@7", retain=True)
    assert sub(broker, "bp1-publisher", role, wait=1).stdout == ""
    assert sub(broker, "bp1-actuator", role, wait=5).stdout.splitlines() == [f"{role} relay@7"]


@pytest.mark.broker
def test_monitor_and_operator_read_the_whole_pool(broker: BrokerHandle, pool_topics: str) -> None:
    broker.require_own_broker("the bundle's ACL")
    topics = [f"{pool_topics}/{t}" for t in ("role/bp1", "state/bp2", "tip/bp3", "decider")]
    for topic in topics:
        broker.publish(topic, "x", retain=True)
    for user in ("monitor", "operator"):
        result = sub(broker, user, f"{pool_topics}/#", count=len(topics), wait=5)
        assert sorted(result.stdout.splitlines()) == sorted(f"{t} x" for t in topics), user


@pytest.mark.broker
@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_server_certificate_verifies_with_python_ssl(broker: BrokerHandle, name: str) -> None:
    broker.require_own_broker("the bundle's certificate")
    with broker.handshake(server_hostname=name) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    strict = ssl.create_default_context(cafile=str(broker.ca_file))
    strict.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection((broker.host, broker.port), timeout=5) as raw, \
            strict.wrap_socket(raw, server_hostname=name):
        pass


@pytest.mark.broker
def test_server_certificate_is_refused_for_another_name(broker: BrokerHandle) -> None:
    broker.require_own_broker("the bundle's certificate")
    with pytest.raises(ssl.SSLCertVerificationError):
        broker.handshake(server_hostname="mqtt.example.org").close()


def publish_as(broker: BrokerHandle, user: str, topic: str, payload: bytes, protocol: str) -> str:
    """Publish retained at QoS 1 with ``user``'s credentials: "acknowledged", "disconnected"
    (the broker dropped the connection) or "refused" (the client itself would not send it)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"test-{user}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
        reconnect_on_failure=False,
    )
    if broker.tls:
        client.tls_set(ca_certs=str(broker.ca_file) if broker.ca_file else None)
    client.username_pw_set(*broker.credentials(user))
    connected, gone = threading.Event(), threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.on_disconnect = lambda *_a: gone.set()
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        assert connected.wait(10), f"{user} could not connect"
        info = client.publish(topic, payload, qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return "refused"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if info.is_published():
                return "acknowledged"
            if gone.is_set():
                return "disconnected"
            time.sleep(0.01)
        raise AssertionError("neither acknowledged nor disconnected within 10s")
    finally:
        client.disconnect()
        client.loop_stop()


def test_mosquitto_conf_limits_packets_to_the_payload_contract_with_room_for_headers(bundle: Path) -> None:
    conf = (bundle / "broker" / "mosquitto.conf").read_text()
    assert f"\nmax_packet_size {MAX_PACKET_SIZE}\n" in conf
    assert MAX_PAYLOAD + 1024 <= MAX_PACKET_SIZE <= 64 * 1024


@pytest.mark.broker
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_node_cannot_make_the_broker_keep_an_oversized_message(
    broker: BrokerHandle, pool_topics: str, protocol: str
) -> None:
    broker.require_own_broker("the bundle's max_packet_size")
    tip = f"{pool_topics}/tip/bp1"
    # MQTT 3.1.1 has no way to tell the client the limit: the broker drops the connection.
    # Under MQTT 5 the CONNACK announces it, and paho may refuse to send before the broker has to.
    outcome = publish_as(broker, "bp1-publisher", tip, b"x" * (64 * 1024), protocol)
    assert outcome in (("disconnected",) if protocol == "3.1.1" else ("disconnected", "refused"))
    assert broker.retained(tip) == {}
    payload = b"{" + b"y" * (MAX_PAYLOAD - 2) + b"}"  # the largest message the contract allows
    assert publish_as(broker, "bp1-publisher", tip, payload, protocol) == "acknowledged"
    assert broker.retained(tip) == {tip: payload}


# --- the test broker itself ------------------------------------------------------------------------


@pytest.mark.broker
def test_retained_messages_survive_a_restart(broker_factory: object) -> None:
    other = broker_factory(pool="p2", nodes=["a", "b"])  # type: ignore[operator]
    other.require_own_broker("restarting the broker")
    topic = f"{other.prefix}/p2/role/a"
    other.publish(topic, "kept", retain=True)
    port = other.port
    other.restart()
    assert other.running and other.port == port
    assert other.retained(f"{other.prefix}/p2/#") == {topic: b"kept"}
    other.stop()
    assert not other.running


def test_handle_maps_bundle_users_to_settings(broker: BrokerHandle) -> None:
    assert broker.config_path("bp2-publisher") == broker.bundle / "nodes" / "bp2.publisher.toml"
    assert broker.config_path("bp2-actuator") == broker.node_config("bp2", "actuator")
    assert broker.config_path("decider") == broker.bundle / "decider.toml"
    assert broker.config_path("monitor") == broker.bundle / "monitor.toml"
    for user in ["bp1-publisher", "bp1-actuator", "decider", "operator", "monitor", "admin"]:
        settings = broker.mqtt_settings(user)
        username, password = broker.credentials(user)
        assert (settings.host, settings.port, settings.prefix) == (broker.host, broker.port, broker.prefix)
        assert (settings.username, settings.secret()) == (username, password)
        if user != "admin":
            assert load_config(broker.config_path(user)).mqtt == settings
    with pytest.raises(KeyError):
        broker.config_path("nobody")
    with pytest.raises(KeyError, match="one user per service"):
        broker.config_path("bp1")


def test_wait_for_returns_the_value_or_fails_with_the_message() -> None:
    assert wait_for(lambda: 42, timeout=0.1, message="the answer") == 42
    with pytest.raises(pytest.fail.Exception, match="waiting for the impossible"):
        wait_for(lambda: None, timeout=0.05, message="the impossible")
