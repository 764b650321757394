"""Real MQTT brokers for the tests, made from a bundle written by ``bpfailover init``.

``BPF_TEST_BROKER`` chooses the kind (docs/bundle.md lists every variable):

- ``local`` (default): the mosquitto binary, on a free loopback port;
- ``docker``: testcontainers runs compose.yaml's broker image (``bpfailover-mosquitto:local``,
  built from deploy/docker/mosquitto when the engine lacks it) with the bundle mounted;
- ``external``: a broker you run, reached through ``BPF_TEST_BROKER_HOST`` etc.
  It cannot be restarted and its ACLs are its own, so tests that need either skip.

Whatever the kind, the handle offers the same API: where the bundle is, the
settings to connect as any bundle user, stop/start/restart, and admin helpers to
inspect and clear retained messages. Never a mock.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bpfailover.broker.bundle import node_config, write_bundle
from bpfailover.broker.mosquitto import NODE_DUTIES, node_user
from bpfailover.broker.mosquitto import find_mosquitto as broker_binary
from bpfailover.broker.passwd import new_password, passwd_line
from bpfailover.protocol.signing import load_signing_key, sign
from bpfailover.protocol.wire import ControlRequest
from bpfailover.settings import MqttSettings, read_toml

T = TypeVar("T")

KIND_ENV = "BPF_TEST_BROKER"
KINDS = ("local", "docker", "external")
# The docker kind runs the broker image of compose.yaml, built the way compose builds it.
DOCKER_IMAGE_ENV = "BPF_TEST_BROKER_IMAGE"
DOCKER_IMAGE = "bpfailover-mosquitto:local"
DOCKER_BASE_ENV = "BPF_BROKER_BASE_IMAGE"
DOCKER_BASE = "eclipse-mosquitto:2"
DOCKER_CONTEXT = Path(__file__).resolve().parents[1] / "deploy" / "docker" / "mosquitto"
DOCKER_BUILD_TIMEOUT = 600
# Set by CI's Docker part (.ci/docker): no engine is then an error, not a skip.
DOCKER_REQUIRED_ENV = "BPF_TEST_DOCKER"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# TEST ONLY: a superuser added to every test bundle so tests can inspect and clear
# retained messages. `bpfailover init` never writes such a user.
ADMIN_USER = "admin"
_ADMIN_ACL = f"""
# TEST ONLY: added by tests/brokers.py, never by `bpfailover init`.
user {ADMIN_USER}
topic readwrite #
"""


class BrokerStartError(RuntimeError):
    """The test broker did not come up; the message carries the end of its log."""


def wait_for(
    predicate: Callable[[], T], timeout: float = 5.0, message: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str | None:
    """``BPF_TEST_MOSQUITTO`` if set, else the product's own lookup."""
    return os.environ.get("BPF_TEST_MOSQUITTO") or broker_binary()


def broker_kind() -> str:
    kind = os.environ.get(KIND_ENV, "local").strip().lower() or "local"
    if kind not in KINDS:
        raise pytest.UsageError(f"{KIND_ENV}={kind!r}: use one of {', '.join(KINDS)}")
    return kind


def add_test_admin(bundle: Path, password: str) -> None:
    """TEST ONLY: give the bundle's broker a user that may read and write every topic."""
    broker_dir = bundle / "broker"
    with open(broker_dir / "passwd", "a") as handle:
        handle.write(passwd_line(ADMIN_USER, password))
    with open(broker_dir / "acl", "a") as handle:
        handle.write(_ADMIN_ACL)


def rewrite_mqtt(path: Path, values: dict[str, Any]) -> None:
    """Set or drop (value None) keys of the ``[mqtt]`` table in a bundle TOML file."""
    lines = path.read_text().splitlines()
    start = lines.index("[mqtt]")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines)
    )
    body = [
        line for line in lines[start + 1:end]
        if line.split("=", 1)[0].strip() not in values
    ]
    while body and not body[-1].strip():
        body.pop()
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = str(value)
        else:
            rendered = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        body.append(f"{key} = {rendered}")
    lines[start + 1:end] = [*body, ""]
    path.write_text("\n".join(lines) + "\n")


class BrokerHandle:
    """One running test broker and the bundle it was made from."""

    kind = "abstract"

    def __init__(self, bundle: Path, *, host: str, port: int, pool: str, prefix: str,
                 nodes: list[str], admin_password: str) -> None:
        self.bundle = bundle
        self.host = host
        self.port = port
        self.pool = pool
        self.prefix = prefix
        self.nodes = list(nodes)
        self.log_path: Path | None = None
        self._admin_password = admin_password

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pool={self.pool} bundle={self.bundle}>"

    # --- the bundle -------------------------------------------------------------------

    @property
    def ca_file(self) -> Path | None:
        return self.bundle / "broker" / "ca.crt"

    @property
    def tls(self) -> bool:
        return True

    @property
    def protocol(self) -> str:
        return "5"

    SERVICE_USERS = ("decider", "decider-2", "operator", "monitor")

    @property
    def users(self) -> list[str]:
        """Every broker user of the bundle: ``bp1-publisher``, ``bp1-actuator``, ..., ``monitor``."""
        return [*(node_user(n, d) for n in self.nodes for d in NODE_DUTIES), *self.SERVICE_USERS]

    def node_config(self, node: str, duty: str) -> Path:
        """``nodes/<node>.publisher.toml`` or ``nodes/<node>.actuator.toml``."""
        if node not in self.nodes:
            raise KeyError(f"no node {node!r}: use one of {', '.join(self.nodes)}")
        return node_config(self.bundle, node, duty)

    def config_path(self, user: str) -> Path:
        """The file of a bundle user: ``nodes/bp1.publisher.toml`` for ``bp1-publisher``,
        ``nodes/bp1.actuator.toml`` for ``bp1-actuator``, else ``<user>.toml``."""
        for node in self.nodes:
            for duty in NODE_DUTIES:
                if user == node_user(node, duty):
                    return node_config(self.bundle, node, duty)
        if user in self.SERVICE_USERS:
            return self.bundle / f"{user}.toml"
        hint = " (a node has one user per service: bp1-publisher, bp1-actuator)" if user in self.nodes else ""
        raise KeyError(f"no config for {user!r}{hint}: use one of {', '.join(self.users)}")

    def credentials(self, user: str) -> tuple[str, str]:
        """(username, password) for a bundle user or ``admin``."""
        if user == ADMIN_USER:
            return ADMIN_USER, self._admin_password
        mqtt = read_toml(self.config_path(user))["mqtt"]
        return str(mqtt["username"]), str(mqtt["password"])

    def mqtt_settings(self, user: str, **overrides: Any) -> MqttSettings:
        """Settings to connect as ``user`` ("bp1-publisher", "bp1-actuator", "decider", "operator",
        "monitor" or "admin")."""
        username, password = self.credentials(user)
        values: dict[str, Any] = {
            "host": self.host, "port": self.port, "tls": self.tls, "ca_file": self.ca_file,
            "username": username, "password": password, "protocol": self.protocol,
            "keepalive": 30, "prefix": self.prefix,
        }
        values.update(overrides)
        return MqttSettings(**values)

    # --- lifecycle (overridden by each kind) ---------------------------------------------

    @property
    def running(self) -> bool:
        raise NotImplementedError

    @property
    def controllable(self) -> bool:
        """True when the tests own the broker: they may restart it and rely on its ACL."""
        return True

    def require_own_broker(self, why: str) -> None:
        """Skip the calling test unless the tests run this broker themselves."""
        if not self.controllable:
            pytest.skip(f"{why}: not possible with {KIND_ENV}={self.kind}")

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """Stop and start again on the same port; retained messages survive (persistence)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until a verified TLS handshake succeeds on the broker's port."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.handshake()
                return
            except (OSError, ssl.SSLError) as exc:
                last = exc
                time.sleep(0.02)
        raise BrokerStartError(
            f"broker {self.host}:{self.port} not accepting TLS after {timeout:g}s ({last})\n{self.log_tail()}"
        )

    def _check_alive(self) -> None:
        """Raise BrokerStartError if the broker process is known to have died."""

    def handshake(self, server_hostname: str | None = None, timeout: float = 2.0) -> ssl.SSLSocket:
        """One verified TLS handshake (hostname checked); the caller closes the socket."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            return context.wrap_socket(sock, server_hostname=server_hostname or self.host)
        except BaseException:
            sock.close()
            raise

    # --- admin helpers (TEST ONLY user) ----------------------------------------------------

    def _admin_client(self) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"bpf-test-admin-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5 if self.protocol == "5" else mqtt.MQTTv311,
        )
        if self.tls:
            client.tls_set(ca_certs=str(self.ca_file) if self.ca_file else None)
        client.username_pw_set(*self.credentials(ADMIN_USER))
        return client

    @contextlib.contextmanager
    def _admin(self, on_message: Callable[[Any], None] | None = None) -> Any:
        client = self._admin_client()
        connected = threading.Event()
        result: dict[str, Any] = {}

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
            result["reason"] = reason
            connected.set()

        client.on_connect = on_connect
        if on_message is not None:
            client.on_message = lambda _c, _u, msg: on_message(msg)
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        try:
            if not connected.wait(10) or result["reason"].is_failure:
                raise RuntimeError(f"admin cannot connect to {self.host}:{self.port}: {result.get('reason')}")
            yield client
        finally:
            client.disconnect()
            client.loop_stop()

    def control(self, **fields: Any) -> ControlRequest:
        """A control request for this pool, signed with the bundle's operator key, sent now."""
        request = ControlRequest(pool=self.pool, sent_at=time.time(), **fields)
        return sign(request, load_signing_key(self.bundle / "keys" / "operator-signing.key"))

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 1) -> None:
        """Publish as the test admin and wait for the broker's acknowledgement."""
        with self._admin() as client:
            client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def retained(self, topic_filter: str, timeout: float = 5.0) -> dict[str, bytes]:
        """Every retained message under ``topic_filter``, read as the test admin.

        The broker sends retained messages right after the SUBACK, ahead of anything
        published later on the same connection, so a probe message published after
        subscribing marks the end of them: no guessing how long to wait.
        """
        probe = f"{self.prefix}/_probe/{uuid.uuid4().hex}"
        found: dict[str, bytes] = {}
        done = threading.Event()

        def on_message(msg: Any) -> None:
            if msg.topic == probe:
                done.set()
            elif msg.retain:
                found[msg.topic] = bytes(msg.payload)

        with self._admin(on_message) as client:
            subscribed = threading.Event()
            client.on_subscribe = lambda *_a: subscribed.set()
            client.subscribe([(topic_filter, 1), (probe, 1)])
            if not subscribed.wait(timeout):
                raise TimeoutError(f"no SUBACK for {topic_filter} within {timeout:g}s")
            client.publish(probe, b"", qos=1)
            if not done.wait(timeout):
                raise TimeoutError(f"retained messages of {topic_filter} not complete within {timeout:g}s")
        return found

    def clear_retained(self, topic_filter: str | None = None) -> list[str]:
        """Delete retained messages under ``topic_filter`` (default: this pool); return their topics."""
        topics = sorted(self.retained(topic_filter or f"{self.prefix}/{self.pool}/#"))
        if topics:
            with self._admin() as client:
                for topic in topics:
                    client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        return topics


class MosquittoProcess(BrokerHandle):
    """The local mosquitto binary, started from the bundle's own mosquitto.conf."""

    kind = "local"

    def __init__(self, binary: str, bundle: Path, **kwargs: Any) -> None:
        super().__init__(bundle, **kwargs)
        self.binary = binary
        self.log_path = bundle.parent / f"{bundle.name}-mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.bundle / "broker" / "mosquitto.conf"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def start(self) -> None:
        if self.running:
            return
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            log.write(f"--- bpfailover tests: starting {self.binary} -c {self.conf}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise BrokerStartError(
                f"mosquitto exited with code {self._process.returncode} on start\n{self.log_tail()}"
            )

    # --- persistence (faults: a broker crash, a rollback, amnesia) --------------------------

    @property
    def db_path(self) -> Path:
        """mosquitto's persistence file (``persistence_location`` in the bundle's conf)."""
        match = re.search(r"^persistence_location (.+)$", self.conf.read_text(), flags=re.M)
        assert match, f"no persistence_location in {self.conf}"
        return Path(match.group(1).strip()) / "mosquitto.db"

    def save_now(self, timeout: float = STOP_TIMEOUT) -> Path:
        """Make the running broker write its persistence file now (SIGUSR1); wait until it has."""
        assert self._process is not None and self.running, "broker not running"
        before = _file_id(self.db_path)
        self._process.send_signal(signal.SIGUSR1)
        # mosquitto writes ``mosquitto.db.new`` and renames it over the file: a new inode.
        wait_for(lambda: _file_id(self.db_path) not in (None, before), timeout,
                 f"mosquitto to save {self.db_path} on SIGUSR1")
        return self.db_path

    def snapshot(self, dest: Path) -> Path:
        """A copy of the persistence file as of now (retained messages, sessions), to restore later."""
        shutil.copy2(self.save_now(), dest)
        return dest

    def kill(self) -> None:
        """SIGKILL: a crash. Nothing is saved since the last save, and no client's Will is sent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def restore(self, snapshot: Path | None) -> None:
        """While stopped: put ``snapshot`` back as the persistence file (a rollback), or, with
        None, delete it (the broker comes back empty: amnesia)."""
        assert not self.running, "stop or kill the broker first"
        self.db_path.unlink(missing_ok=True)
        if snapshot is not None:
            shutil.copy2(snapshot, self.db_path)

    def configure(self, **options: object) -> None:
        """Set general options of mosquitto.conf (``max_keepalive=6``); restart to apply them."""
        text = self.conf.read_text()
        for key, value in options.items():
            text = re.sub(rf"^{key} .*\n", "", text, flags=re.M)
            text += f"# TEST ONLY: set by tests/brokers.py\n{key} {value}\n"
        self.conf.write_text(text)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), so mosquitto saves its retained messages."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class MosquittoContainer(BrokerHandle):
    """testcontainers: compose.yaml's broker image, with the bundle mounted at its own path."""

    kind = "docker"

    def __init__(self, bundle: Path, *, image: str, **kwargs: Any) -> None:
        super().__init__(bundle, **kwargs)
        self.image = image
        self.log_path = bundle.parent / f"{bundle.name}-mosquitto.log"
        self._container: Any = None
        self.conf = docker_conf(bundle)

    @property
    def running(self) -> bool:
        if self._container is None:
            return False
        try:
            wrapped = self._container.get_wrapped_container()
            wrapped.reload()
            return bool(wrapped.status == "running")
        except Exception:
            return False

    def start(self) -> None:
        if self.running:
            return
        from testcontainers.core.container import DockerContainer

        container = (
            DockerContainer(self.image, user=f"{os.getuid()}:{os.getgid()}")
            .with_volume_mapping(str(self.bundle), str(self.bundle), "rw")
            .with_bind_ports(self.port, self.port)
            .with_command(shlex.join(["mosquitto", "-c", str(self.conf)]))
        )
        container.start()
        self._container = container
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def inspect(self) -> dict[str, Any]:
        """The engine's view of the running container (``docker inspect``)."""
        assert self._container is not None, "broker not started"
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return dict(wrapped.attrs)

    def _check_alive(self) -> None:
        if self._container is not None and not self.running:
            self._save_logs(self._container)
            raise BrokerStartError(f"mosquitto container exited on start\n{self.log_tail()}")

    def _save_logs(self, container: Any) -> None:
        if self.log_path is None:
            return
        with contextlib.suppress(Exception):
            out, err = container.get_logs()
            with open(self.log_path, "ab") as log:
                log.write(out + err)

    def restart(self) -> None:
        """Stop (SIGTERM: mosquitto saves) and start the same container, on the same port.

        Not a new container, as the base class would make: creating one takes seconds on
        some storage drivers (vfs copies the whole image), longer than the tests' fence_after.
        """
        if self._container is None:
            self.start()
            return
        wrapped = self._container.get_wrapped_container()
        wrapped.stop(timeout=int(STOP_TIMEOUT))
        wrapped.start()
        self.wait_until_ready()

    def stop(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        with contextlib.suppress(Exception):
            # SIGTERM first: a forced removal would kill mosquitto before it saves.
            container.get_wrapped_container().stop(timeout=int(STOP_TIMEOUT))
        self._save_logs(container)
        container.stop()


class ExternalBroker(BrokerHandle):
    """A broker the tests do not run; credentials come from the environment."""

    kind = "external"

    def __init__(self, bundle: Path, *, env: ExternalEnv, **kwargs: Any) -> None:
        super().__init__(bundle, **kwargs)
        self.env = env

    @property
    def ca_file(self) -> Path | None:
        return self.env.ca_file

    @property
    def tls(self) -> bool:
        return self.env.tls

    @property
    def protocol(self) -> str:
        return self.env.protocol

    @property
    def controllable(self) -> bool:
        return False

    @property
    def running(self) -> bool:
        return True

    def credentials(self, user: str) -> tuple[str, str]:
        return self.env.credentials(user)

    def start(self) -> None:
        pytest.skip(f"cannot start a broker with {KIND_ENV}=external")

    def stop(self) -> None:
        pytest.skip(f"cannot stop a broker with {KIND_ENV}=external")

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        if self.tls:
            super().wait_until_ready(timeout)


class ExternalEnv:
    """``BPF_TEST_BROKER_*`` variables describing an external broker."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self.host = env.get("BPF_TEST_BROKER_HOST", "")
        if not self.host:
            raise pytest.UsageError(f"{KIND_ENV}=external needs BPF_TEST_BROKER_HOST (see docs/bundle.md)")
        self.port = int(env.get("BPF_TEST_BROKER_PORT", "8883"))
        ca = env.get("BPF_TEST_BROKER_CA_FILE")
        self.ca_file = Path(ca).expanduser().absolute() if ca else None
        self.tls = env.get("BPF_TEST_BROKER_TLS", "1").lower() not in ("0", "false", "no")
        self.protocol = env.get("BPF_TEST_BROKER_PROTOCOL", "5")
        self.prefix = env.get("BPF_TEST_BROKER_PREFIX") or f"bpftest-{secrets.token_hex(4)}"
        self._shared = (env.get("BPF_TEST_BROKER_USERNAME", ""), env.get("BPF_TEST_BROKER_PASSWORD", ""))
        self._per_user = {
            key.removeprefix("BPF_TEST_BROKER_CREDENTIALS_").lower(): value
            for key, value in env.items()
            if key.startswith("BPF_TEST_BROKER_CREDENTIALS_")
        }

    def credentials(self, user: str) -> tuple[str, str]:
        # Shell variable names cannot hold "-": BPF_TEST_BROKER_CREDENTIALS_BP1_PUBLISHER.
        key = user.replace("-", "_")
        if key in self._per_user:
            username, _, password = self._per_user[key].partition(":")
            return username, password
        if not self._shared[0]:
            raise pytest.UsageError(
                f"no credentials for {user!r}: set BPF_TEST_BROKER_USERNAME/_PASSWORD "
                f"or BPF_TEST_BROKER_CREDENTIALS_{user.upper().replace('-', '_')}=user:password"
            )
        return self._shared


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def docker_conf(bundle: Path) -> Path:
    """A copy of mosquitto.conf for a container: listen on all of its interfaces."""
    conf = bundle / "broker" / "mosquitto.conf"
    text = re.sub(r"^listener (\d+) \S+$", r"listener \1", conf.read_text(), flags=re.M)
    target = bundle / "broker" / "mosquitto.docker.conf"
    target.write_text(text)
    return target


def docker_host() -> str:
    """The address of a reachable Docker engine's published ports, or skip.

    Also readies that engine for the tests: the broker image is there, and Ryuk, the
    reaper testcontainers starts by default, only where its image is.
    """
    try:
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient()
        client.client.ping()
        host = client.host()
    except Exception as exc:  # any failure means: no usable engine
        why = f"{KIND_ENV}=docker but no Docker engine is reachable ({type(exc).__name__}: {exc})"
        if os.environ.get(DOCKER_REQUIRED_ENV) == "1":
            raise BrokerStartError(f"{why}; {DOCKER_REQUIRED_ENV}=1 requires one") from exc
        pytest.skip(why)
    ensure_docker_image(client.client)
    reap_only_with_local_ryuk(client.client)
    return "127.0.0.1" if host in ("localhost", "::1", "") else host


def docker_image() -> str:
    return os.environ.get(DOCKER_IMAGE_ENV) or DOCKER_IMAGE


def ensure_docker_image(client: Any) -> str:
    """The broker image, built from deploy/docker/mosquitto (as compose.yaml does) if missing.

    The base is ``BPF_BROKER_BASE_IMAGE``, the variable compose.yaml reads, by default
    eclipse-mosquitto:2; without Docker Hub, scripts/compose-check's bpfailover-base:bookworm.
    """
    import docker.errors

    image = docker_image()
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(image)
        return image
    base = os.environ.get(DOCKER_BASE_ENV) or DOCKER_BASE
    try:
        client.images.build(
            path=str(DOCKER_CONTEXT), tag=image, buildargs={"BASE_IMAGE": base}, rm=True,
            timeout=DOCKER_BUILD_TIMEOUT,
        )
    except docker.errors.DockerException as exc:
        raise BrokerStartError(
            f"cannot build the broker image {image} from {DOCKER_CONTEXT} on {base}: {exc}. Without "
            f"Docker Hub, run scripts/compose-check once and set {DOCKER_BASE_ENV}=bpfailover-base:bookworm"
        ) from exc
    return image


def reap_only_with_local_ryuk(client: Any) -> None:
    """Ryuk removes a killed run's containers, but its image comes from Docker Hub. Where it
    is not on the engine already (and TESTCONTAINERS_RYUK_DISABLED is not set), run without
    it: every broker is still stopped by its fixture or at exit."""
    import docker.errors
    from testcontainers.core.config import testcontainers_config

    if os.environ.get("TESTCONTAINERS_RYUK_DISABLED") is not None:
        return
    try:
        client.images.get(testcontainers_config.ryuk_image)
    except docker.errors.ImageNotFound:
        testcontainers_config.ryuk_disabled = True


def make_broker(
    workdir: Path,
    *,
    pool: str = "pool1",
    nodes: Iterable[str] = ("bp1", "bp2", "bp3"),
    prefix: str = "bpfailover",
    kind: str | None = None,
    start: bool = True,
) -> BrokerHandle:
    """Write a fresh bundle under ``workdir`` and return its broker, started by default."""
    kind = kind or broker_kind()
    nodes = list(nodes)
    bundle = workdir / "bundle"
    admin_password = new_password()
    common: dict[str, Any] = {
        "pool": pool, "prefix": prefix, "nodes": nodes, "admin_password": admin_password,
    }

    if kind == "external":
        env = ExternalEnv()
        prefix = env.prefix if prefix == "bpfailover" else prefix
        common["prefix"] = prefix
        write_bundle(bundle, pool=pool, nodes=nodes, broker_host=env.host, broker_port=env.port,
                     prefix=prefix, deciders=2)
        handle: BrokerHandle = ExternalBroker(bundle, env=env, host=env.host, port=env.port, **common)
        _point_configs_at(handle)
    elif kind == "docker":
        host = docker_host()
        port = free_port()
        write_bundle(bundle, pool=pool, nodes=nodes, broker_host=host, broker_port=port, prefix=prefix,
                     deciders=2)
        add_test_admin(bundle, admin_password)
        handle = MosquittoContainer(bundle, image=docker_image(), host=host, port=port, **common)
    else:
        binary = find_mosquitto()
        if binary is None:
            pytest.skip(
                "mosquitto not found: install it (apt-get install mosquitto) or set "
                f"BPF_TEST_MOSQUITTO, or {KIND_ENV}=docker|external"
            )
        port = free_port()
        # Two deciders: the standby's user and config too (tests/decider/test_two_deciders.py).
        write_bundle(bundle, pool=pool, nodes=nodes, broker_host="127.0.0.1", broker_port=port, prefix=prefix,
                     deciders=2)
        add_test_admin(bundle, admin_password)
        handle = MosquittoProcess(binary, bundle, host="127.0.0.1", port=port, **common)

    if start:
        if handle.controllable:
            handle.start()
        else:
            handle.wait_until_ready()
    atexit.register(_stop_quietly, handle)
    return handle


def _point_configs_at(handle: BrokerHandle) -> None:
    """Make the bundle's TOML files use the external broker's address and credentials."""
    for name in handle.users:
        username, password = handle.credentials(name)
        rewrite_mqtt(handle.config_path(name), {
            "tls": handle.tls,
            "ca_file": str(handle.ca_file) if handle.ca_file else None,
            "username": username,
            "password": password,
            "protocol": handle.protocol,
        })


def _stop_quietly(handle: BrokerHandle) -> None:
    if handle.controllable:
        with contextlib.suppress(BaseException):
            handle.stop()
