"""``bpfailover demo``: a whole pool on this machine, a stalled producer, and the failover.

It writes a bundle into a temporary folder, starts mosquitto from it on a free
port, then the decider and two simulated block producers (bp1, bp2: publisher
``simulate`` and actuator ``env-swap`` into the bundle's ``run/`` files), each as
its own process with compressed timings. It watches the pool as the operator
would, stalls bp1's chain tip once bp1 is producer, shows the decider's failover
(epoch and reason), checks the env files on disk, and stops every process it
started on every path out (including Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bpfailover.broker.mosquitto import find_mosquitto
from bpfailover.cli.status import PoolCollector, describe_event, fmt_age
from bpfailover.link import Incoming, MqttLink, make_client_id
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import DecisionEvent, PayloadRejected, decode
from bpfailover.settings import load_config

POOL = "demo"
NODES = ("bp1", "bp2")

# Compressed timings. The decider refuses a configuration where stale_after is not above
# the actuators' advertised fence time + keepalive + fence_margin; the actuators advertise
# max(fence_after, 2 x keepalive) + 2 x apply_timeout + 1 s = 10 + 2 + 1 = 13 s here,
# so 13 + 5 + 1 = 19 s < stale_after.
KEEPALIVE = 5  # the MQTT minimum the settings accept
FENCE_AFTER = 10
FENCE_MARGIN = 1
STALE_AFTER = 20
TIMINGS = {
    "BPF_MQTT__KEEPALIVE": str(KEEPALIVE),
    "BPF_MQTT__CONNECT_TIMEOUT": "5",
    # A fast simulated chain (0.02 s slots: a block every ~0.4 s), so natural block gaps
    # stay far below stale_after and only the deliberate stall triggers a failover.
    "BPF_PUBLISHER__NETWORK": "custom",
    "BPF_PUBLISHER__SLOT_LENGTH": "0.02",
    "BPF_PUBLISHER__INTERVAL": "0.5",
    "BPF_ACTUATOR__FENCE_AFTER": str(FENCE_AFTER),
    "BPF_ACTUATOR__APPLY_TIMEOUT": "1",
    "BPF_ACTUATOR__APPLY_RETRIES": "2",
    "BPF_DECIDER__STALE_AFTER": str(STALE_AFTER),
    "BPF_DECIDER__FENCE_MARGIN": str(FENCE_MARGIN),
    "BPF_DECIDER__TICK": "0.25",
    "BPF_DECIDER__RISE": "2",
    "BPF_DECIDER__STARTUP_GRACE": "2",
    "BPF_DECIDER__MIN_SWITCH_INTERVAL": "5",
    "BPF_DECIDER__APPLY_TIMEOUT": "5",
}
BOOTSTRAP_TIMEOUT = 30.0
FAILOVER_TIMEOUT = STALE_AFTER + 25.0
STOP_TIMEOUT = 5.0

MOSQUITTO_MISSING = (
    "bpfailover demo needs the mosquitto broker, which is not installed (looked in PATH and /usr/sbin).\n"
    "Install it with:  sudo apt-get install mosquitto     (Debian, Ubuntu)\n"
    "             or:  brew install mosquitto             (macOS)\n"
    "The demo starts its own broker on a free port; the system service need not run."
)


class DemoFailed(Exception):
    """The demo did not reach a stage in time; the message says which, ``log`` where to look."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class Children:
    """The processes the demo started; ``stop_all`` ends them, newest first."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str]) -> Child:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def bpfailover(self, name: str, *args: str) -> Child:
        return self.start(name, [sys.executable, "-m", "bpfailover.cli", *args])

    def check_alive(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise DemoFailed(f"{child.name} exited with code {code}", child.log)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                child.process.wait()
        self.children.clear()


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def wait_for_port(port: int, timeout: float, children: Children) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise DemoFailed(f"mosquitto did not listen on port {port} within {timeout:g}s")


class Watcher:
    """The operator's view of the demo pool, with a line of progress per second."""

    def __init__(self, monitor_toml: Path, out: Callable[[str], None]) -> None:
        config = load_config(monitor_toml)
        self.topics = Topics(config.mqtt.prefix)
        self.collector = PoolCollector(self.topics, POOL)
        self.events: list[DecisionEvent] = []
        self.out = out
        self.started = time.monotonic()
        self._last_line = 0.0
        self.link = MqttLink(
            config.mqtt,
            make_client_id("demo", POOL, unique=True),
            subscriptions=[f"{config.mqtt.prefix}/{POOL}/#"],
        )

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:5.1f}s] {text}")

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            item = self.link.get(timeout=min(left, 0.2))
            if isinstance(item, Incoming):
                self._take(item)
            if time.monotonic() - self._last_line >= 1.0:
                self._last_line = time.monotonic()
                self.say(self.progress())

    def _take(self, item: Incoming) -> None:
        if item.topic == self.topics.events(POOL):
            try:
                event = decode(DecisionEvent, item.payload, pool=POOL)
            except PayloadRejected:
                return
            self.events.append(event)
            self.say(f"event: {event.kind} {describe_event(event)}".rstrip())
            return
        self.collector.feed(item.topic, item.payload, retain=item.retain, received_at=item.received_at)

    def progress(self) -> str:
        view = self.collector.view
        now = time.time()
        epoch = view.decider.epoch if view.decider else "-"
        parts = [f"epoch {epoch}"]
        for name in NODES:
            node = view.nodes.get(name)
            tip = node.tip if node else None
            state = node.state if node else None
            age = fmt_age(now - tip.tip_time) if tip and tip.ok and tip.tip_time else "-"
            role = f"{state.role}@{state.epoch}" if state else "no state"
            online = "" if state is None or state.online else " OFFLINE"
            parts.append(f"{name}: {role} tip {age}{online}")
        return " | ".join(parts)

    def applied(self, node: str) -> tuple[str, int] | None:
        n = self.collector.view.nodes.get(node)
        if n is None or n.state is None or not n.state.online or n.state.pending:
            return None
        return n.state.role, n.state.epoch

    def wait(self, what: str, done: Callable[[], object], timeout: float, children: Children) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                raise DemoFailed(f"timed out after {timeout:g}s waiting for {what}")
            children.check_alive()
            self.pump(0.2)


def run(args: argparse.Namespace, *, out: Callable[[str], None] = print) -> int:
    binary = find_mosquitto()
    if binary is None:
        print(MOSQUITTO_MISSING, file=sys.stderr)
        return 2
    keep = bool(getattr(args, "keep", False))
    folder = Path(tempfile.mkdtemp(prefix="bpfailover-demo-"))
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    logging.getLogger("bpfailover.link").setLevel(logging.ERROR)
    children: Children | None = None
    ok = False
    interrupted = False
    try:
        children = _start(binary, folder, out)
        ok = _play(folder, children, out)
        return 0 if ok else 1
    except DemoFailed as exc:
        out(f"demo FAILED: {exc}")
        log = exc.log or (folder / "logs" / "decider.log")
        out(f"  end of {log}:\n{tail(log)}")
        return 1
    except KeyboardInterrupt:
        interrupted = True
        out("interrupted: stopping everything the demo started")
        return 130
    finally:
        if children is not None:
            children.stop_all()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if keep:
            out(f"bundle and logs kept in {folder}")
        elif not ok and not interrupted:
            # Keep the logs to look at, not the keys and passwords of the bundle.
            shutil.rmtree(folder / "bundle", ignore_errors=True)
            out(f"logs kept in {folder / 'logs'} (the bundle was removed; --keep keeps it)")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _start(binary: str, folder: Path, out: Callable[[str], None]) -> Children:
    from bpfailover.broker.bundle import node_config, write_bundle

    bundle = folder / "bundle"
    logs = folder / "logs"
    logs.mkdir()
    port = free_port()
    write_bundle(bundle, pool=POOL, nodes=list(NODES), broker_host="127.0.0.1", broker_port=port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPF_")}
    env.update(TIMINGS)
    env["BPF_PUBLISHER__SLOT_OFFSET"] = str(int(time.time()) - 100_000)
    env["BPF_LOG_LEVEL"] = "info"
    env["PYTHONUNBUFFERED"] = "1"
    children = Children(logs, env)
    out(f"demo pool {POOL!r} in {folder}: mosquitto on 127.0.0.1:{port} (TLS), logs in {logs.name}/")
    out(
        f"timings: stale_after {STALE_AFTER}s, fence_after {FENCE_AFTER}s, keepalive {KEEPALIVE}s, "
        "publisher every 0.5s (a real pool: 5m, 2m, 30s, 10s)"
    )
    children.start("mosquitto", [binary, "-c", str(bundle / "broker" / "mosquitto.conf")])
    wait_for_port(port, 10.0, children)
    children.bpfailover("decider", "decider", "-c", str(bundle / "decider.toml"))
    for node in NODES:
        # Each service with its own file and broker user, as on a real node.
        for duty in ("actuator", "publisher"):
            children.bpfailover(f"{node}-{duty}", duty, "-c", str(node_config(bundle, node, duty)))
    out("started: mosquitto, decider, bp1 (publisher + actuator), bp2 (publisher + actuator)")
    return children


def _play(folder: Path, children: Children, out: Callable[[str], None]) -> bool:
    bundle = folder / "bundle"
    watcher = Watcher(bundle / "monitor.toml", out)  # the read-only user: the demo only watches
    watcher.link.start(attempts=5)
    try:
        watcher.say("waiting for the decider to make bp1 producer ...")
        watcher.wait(
            "bp1 to become producer and bp2 relay",
            lambda: (
                (a := watcher.applied("bp1"))
                and a[0] == "producer"
                and (b := watcher.applied("bp2"))
                and b[0] == "relay"
                and b[1] == a[1]
            ),
            BOOTSTRAP_TIMEOUT,
            children,
        )
        first_epoch = watcher.applied("bp1")[1]  # type: ignore[index]
        watcher.pump(1.5)  # a couple of healthy progress lines
        stall = bundle / "run" / "bp1" / "stall"
        stall.touch()
        watcher.say(f"STALLING bp1: created {stall}; its chain tip stops advancing")

        def failed_over() -> bool:
            a, b = watcher.applied("bp1"), watcher.applied("bp2")
            return bool(a and b and b[0] == "producer" and a[0] == "relay" and b[1] > first_epoch)

        watcher.wait("the failover to bp2", failed_over, FAILOVER_TIMEOUT, children)
        watcher.pump(0.5)
    finally:
        with contextlib.suppress(Exception):
            watcher.link.stop()
    epoch = watcher.applied("bp2")[1]  # type: ignore[index]
    change = next((e for e in watcher.events if e.kind == "failover" and e.to == "bp2"), None)
    run = bundle / "run"
    checks = {
        "bp2's env file is the producer variant": (run / "bp2" / "env").read_bytes()
        == (run / "bp2" / "env.producer").read_bytes(),
        "bp1's env file is the relay variant": (run / "bp1" / "env").read_bytes()
        == (run / "bp1" / "env.relay").read_bytes(),
    }
    out("")
    out(f"failover: epoch {first_epoch} -> {epoch}, producer bp1 -> bp2")
    if change is not None:
        out(f"decider's reason: {change.reason}")
    for what, good in checks.items():
        out(f"check: {what}: {'yes' if good else 'NO'}")
    if all(checks.values()):
        out("demo passed: bp1 stalled, bp1 demoted, bp2 promoted, one producer at every moment")
        return True
    out("demo FAILED: the env files do not match the roles")
    return False
