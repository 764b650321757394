"""What every benchmark shares: a bench bundle with many pools, its broker, a load
generator, a counting subscriber, and process measurements.

The bench bundle is a normal ``bpfailover init`` bundle for pool ``bench00000``
(nodes ``a`` and ``b``) that is then widened for the benchmark only:

- ``decider.toml`` gets ``POOLS`` ``[[pools]]`` entries ``bench00000 .. bench09999``,
  each with nodes ``a`` (priority 100, initial producer) and ``b`` (90);
- the ACL gives the decider the same rights as ``init`` does, but on ``+`` instead of
  one pool id (a pattern over all pools), and adds a BENCH-ONLY user ``loadgen`` that
  may read and write everything (it plays 20,000 publishers and actuators);
- mosquitto gets ``max_queued_messages 0`` (no per-client queue limit) so that a slow
  subscriber makes the broker queue instead of dropping: what a consumer did not
  process is then still in its queue, which is what makes counting to the end exact.

Nothing here is used by the product or the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bpfailover.broker.bundle import write_bundle
from bpfailover.broker.mosquitto import render_acl
from bpfailover.broker.passwd import passwd_line
from bpfailover.protocol.signing import load_signing_key, sign_command
from bpfailover.protocol.wire import NodeState, RoleCommand

PREFIX = "bpfailover"
NODES = ("a", "b")
LOADGEN = "loadgen"
DECIDER_ID = "bench-decider"
SLOT_OFFSET = 1591566291  # mainnet: tip_time = offset + slot (1-second slots)


def pool_id(i: int) -> str:
    return f"bench{i:05d}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the bundle and its broker -------------------------------------------------------------------


@dataclass
class BenchBundle:
    root: Path
    pools: int
    port: int
    loadgen_password: str = ""

    @property
    def ca_file(self) -> Path:
        return self.root / "broker" / "ca.crt"

    @property
    def conf(self) -> Path:
        return self.root / "broker" / "mosquitto.conf"

    @property
    def decider_toml(self) -> Path:
        return self.root / "decider.toml"

    def node_toml(self, node: str) -> Path:
        return self.root / "nodes" / f"{node}.toml"

    def pool_ids(self) -> list[str]:
        return [pool_id(i) for i in range(self.pools)]


def make_bundle(root: Path, pools: int) -> BenchBundle:
    port = free_port()
    write_bundle(root, pool=pool_id(0), nodes=list(NODES), broker_port=port, force=True)
    bundle = BenchBundle(root, pools, port, secrets.token_urlsafe(18))
    broker = root / "broker"
    with open(broker / "passwd", "a") as handle:
        handle.write(passwd_line(LOADGEN, bundle.loadgen_password))
    secret = root / "loadgen.password"  # for re-running a step by hand against this bundle
    secret.touch(mode=0o600)
    secret.write_text(bundle.loadgen_password + "\n")
    node_rules = render_acl(pool=pool_id(0), nodes=list(NODES), prefix=PREFIX).split("user decider")[0]
    (broker / "acl").write_text(
        node_rules + "# BENCH ONLY: the decider's rights of `bpfailover init`, for every pool (+);\n"
        "# loadgen plays every publisher and actuator and reads everything.\n"
        "user decider\n"
        f"topic read {PREFIX}/+/tip/+\n"
        f"topic read {PREFIX}/+/state/+\n"
        f"topic read {PREFIX}/+/control\n"
        f"topic readwrite {PREFIX}/+/role/+\n"
        f"topic readwrite {PREFIX}/+/dryrun/+\n"
        f"topic readwrite {PREFIX}/+/decider\n"
        f"topic write {PREFIX}/+/events\n"
        "\n"
        f"user {LOADGEN}\n"
        f"topic readwrite {PREFIX}/#\n"
        "topic read $SYS/#\n"
    )
    with open(bundle.conf, "a") as handle:
        handle.write("\n# BENCH ONLY: queue without limit rather than drop (see bench/README.md)\n")
        handle.write("max_queued_messages 0\n")
        handle.write("# As docs/brokers.md advises for many pools: a wider window for QoS-1 publishes\n")
        handle.write("max_inflight_messages 200\n")
    text = bundle.decider_toml.read_text()
    text = text[: text.index("[[pools]]")]
    entries = [
        f'[[pools]]\nid = "{p}"\ninitial_producer = "a"\n'
        'nodes = [{ name = "a", priority = 100 }, { name = "b", priority = 90 }]\n'
        for p in bundle.pool_ids()
    ]
    bundle.decider_toml.write_text(text + "\n".join(entries))
    return bundle


class Broker:
    """mosquitto from the bench bundle, stopped with SIGTERM (it saves retained messages)."""

    def __init__(self, bundle: BenchBundle) -> None:
        self.bundle = bundle
        self.log = bundle.root / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["/usr/sbin/mosquitto", "-c", str(self.bundle.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        context = ssl.create_default_context(cafile=str(self.bundle.ca_file))
        deadline = time.monotonic() + 15
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.bundle.port), timeout=1) as sock,
                    context.wrap_socket(sock, server_hostname="127.0.0.1"),
                ):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto did not start; see {self.log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


# --- MQTT clients --------------------------------------------------------------------------------


def client(bundle: BenchBundle, name: str, *, inflight: int = 1000, keepalive: int = 900) -> paho.Client:
    """A connected, looping paho client as ``loadgen``."""
    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-{name}-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    c.tls_set(ca_certs=str(bundle.ca_file))
    c.username_pw_set(LOADGEN, bundle.loadgen_password)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect("127.0.0.1", bundle.port, keepalive=keepalive)
    c.loop_start()
    if not connected.wait(15):
        raise RuntimeError(f"bench client {name} could not connect")
    return c


def subscribe(c: paho.Client, topics: Iterable[str]) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *_a: done.set()
    c.subscribe([(t, 1) for t in topics])
    if not done.wait(15):
        raise RuntimeError("no SUBACK")


def tip_json(pool: str, node: str, seq: int, now: float, age: float = 0.0, boot: str = "bench") -> bytes:
    """A TipReport as the publisher sends it (hand-formatted: the load generator's hot path)."""
    slot = int(now - age - SLOT_OFFSET)
    return (
        f'{{"v":1,"pool":"{pool}","node":"{node}","boot":"{boot}","seq":{seq},"sent_at":{now:.3f},'
        f'"ok":true,"error":null,"slot":{slot},"block":{slot // 20},"epoch":{slot // 432000},'
        f'"hash":"{seq:064x}","tip_time":{SLOT_OFFSET + slot}.0,"network":"mainnet","source":"simulate",'
        '"forging":null,"kes_periods_left":null,"peers":null}'
    ).encode()


def steady_messages(
    pools: list[str], now: float, *, epoch: int = 1, key: Ed25519PrivateKey | None = None
) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) of what a running fleet leaves retained: per node of every pool, its
    role command (``a`` producer, ``b`` relay; signed with ``key`` if given), its NodeState
    (online, applied) and a fresh tip."""
    for pool in pools:
        for node, role in (("a", "producer"), ("b", "relay")):
            cmd = RoleCommand(
                pool=pool,
                node=node,
                role=role,
                epoch=epoch,
                issued_at=now,
                decider=DECIDER_ID,
                reason="bench steady state",
            )
            state = NodeState(
                pool=pool,
                node=node,
                boot="bench",
                online=True,
                role=role,
                epoch=epoch,
                fence_after=120.0,
                updated_at=now,
            )
            yield f"{PREFIX}/{pool}/role/{node}", (sign_command(cmd, key) if key else cmd).to_json()
            yield f"{PREFIX}/{pool}/state/{node}", state.to_json()
            yield f"{PREFIX}/{pool}/tip/{node}", tip_json(pool, node, 1, now)


def publish_steady_state(bundle: BenchBundle, pools: list[str], *, epoch: int = 1) -> None:
    """Every pool's steady state (``steady_messages``, signed), retained on the broker."""
    key = load_signing_key(bundle.root / "keys" / "command-signing.key")
    c = client(bundle, "steady")
    infos = [
        c.publish(topic, payload, qos=1, retain=True)
        for topic, payload in steady_messages(pools, time.time(), epoch=epoch, key=key)
    ]
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


# --- processes -----------------------------------------------------------------------------------


def start_component(
    component: str, config: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BPF_")}
    full.update(env or {})
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "bpfailover.cli", component, "-c", str(config)],
            env=full,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB (10^6 bytes)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024 / 1e6
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- reporting -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if match:
            cpu = match.group(1).strip()
    mem_kb = 0
    with contextlib.suppress(OSError):
        match = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
        if match:
            mem_kb = int(match.group(1))
    version = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True).stdout
    mosq = version.splitlines()[0] if version else "unknown"
    import paho.mqtt as paho_pkg

    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "mosquitto": mosq,
        "paho_mqtt": paho_pkg.__version__,
        "kernel": platform.release(),
    }


@dataclass
class Results:
    """Numbers a benchmark prints, and saves as JSON with the machine description."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.values[key] = value
        print(f"  {key}: {value}", flush=True)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.json"
        path.write_text(json.dumps({"machine": machine(), "results": self.values}, indent=2) + "\n")
        return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
