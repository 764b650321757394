"""A pool run for real: broker, one proxy per node, publisher/actuator/decider processes.

``Cluster`` starts, from a bundle written by ``bpfailover init`` (through the
``broker_factory`` fixture), every node's actuator and publisher connected through
its own ``FaultProxy`` (``BPF_MQTT__PORT`` per node) and the decider connected
directly, each as a ``python -m bpfailover.cli`` subprocess in its own session with
compressed timings passed as ``BPF_*`` variables. It starts the split-brain checker,
offers the faults a scenario needs (kill a process or a whole node, stall a tip,
cut/delay/blackhole a node's network, restart or stop the broker, restart the
decider), and in ``close`` kills everything it started. Process logs are files under
the scenario's folder; ``log_tails`` gives their ends for a failure report.

The timings and the theoretical failover times are in ``Timings``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bpfailover.protocol.signing import load_signing_key, sign_command
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import NodeState, RoleCommand, TipReport
from bpfailover.settings import load_config
from tests.brokers import BrokerHandle, MosquittoProcess
from tests.faults.checker import NodeFiles, SplitBrainChecker
from tests.faults.inject import Injector
from tests.faults.proxy import FaultProxy

T = TypeVar("T")

SKEW_DIR = Path(__file__).parent / "skewclock"
REPO_ROOT = Path(__file__).resolve().parents[2]
SLOT_OFFSET = 1_700_000_000  # custom network: slot 0 at this unix time
SLOT_LENGTH = 0.02  # 50 slots/s: a simulated block every 0.4 s on average
STOP_GRACE = 3.0
MOSQUITTO_KEEPALIVE_SWEEP = 6.0  # mosquitto 2.0 checks its clients' keepalives every 6 s


@dataclass(frozen=True)
class Timings:
    """Compressed timings, all seconds.

    The decider's start-up checks hold (``flap_window > max_failovers *
    min_switch_interval``, ``apply_timeout >= tick``, ``tick < stale_after``) except one,
    deliberately not checked: ``stale_after`` > the actuators' fence time + keepalive +
    fence_margin. The actuators' fence time is at least 2 x keepalive + their demotion
    time (``advertised_fence_after``: 13 s here, keepalive cannot go below 5 s), so that
    inequality needs stale_after >= 18.5 s, and every scenario would take ~13 s longer
    (the suite ~6 min instead of ~3.5). It is not needed for safety: the decider still
    waits for the advertised fence before promoting, so where a fence is awaited that
    wait (18.4 s), not stale_after (6 s), sets the failover time, and the theory says
    so. Set ``decider_knows_actuators`` (and stale_after 19) to run under the check.
    """

    interval: float = 0.5
    stale_after: float = 6.0
    fence_after: float = 0.5
    keepalive: float = 5.0
    fence_margin: float = 0.4
    tick: float = 0.2
    rise: int = 2
    startup_grace: float = 1.5
    min_switch_interval: float = 2.0
    max_failovers: int = 3
    flap_window: float = 60.0
    decider_apply_timeout: float = 3.0
    status_interval: float = 5.0
    max_clock_skew: float = 10.0
    actuator_apply_timeout: float = 1.0  # the commands are `true`/`false`: instant
    start_timeout: float = 0.5  # how long a node restarted for a role change may take to come up
    apply_retries: int = 2
    apply_retry_wait: float = 0.1
    # False: the decider is not given the actuators' settings, so it does not check
    # stale_after against their fence time at start (see the class docstring).
    decider_knows_actuators: bool = False

    @property
    def advertised_fence_after(self) -> float:
        """What the actuators advertise in NodeState.fence_after with these timings: the
        longest time from their last broker contact until their node is demoted,
        ``max(fence_after, 2 x keepalive) + 2 x apply_timeout (stop_command) + 1 s``
        (actuator/fence.py). The scenarios read the real value from the NodeStates."""
        return max(self.fence_after, 2 * self.keepalive) + 2 * self.actuator_apply_timeout + 1.0

    def fence_wait(self, advertised: float | None = None) -> float:
        """After an actuator's Last Will, until its node is certainly fenced (DESIGN §7):
        its advertised fence_after + the decider's keepalive + fence_margin."""
        fence = self.advertised_fence_after if advertised is None else advertised
        return fence + self.keepalive + self.fence_margin

    @property
    def broker_detects_silence(self) -> float:
        """The Last Will's latest delay after a client falls silent: mosquitto drops it after
        1.5 x keepalive, on its whole-second clock (up to 1 s later), but it looks only every
        6 s (mosquitto 2.0's ``keepalive__check`` runs when ``last_keepalive_check + 5 < now``):
        up to 6 s more. Seen here: Wills 11.8 and 12.6 s after a 5 s keepalive client fell silent."""
        return 1.5 * self.keepalive + 1.0 + MOSQUITTO_KEEPALIVE_SWEEP

    def theoretical_failover(self, will_delay: float | None, advertised: float | None = None) -> float:
        """The earliest a standby can be producer after the producer's failure.

        Both conditions must hold: the producer's tip is stale (stale_after, at most,
        after the failure) and it acknowledged relay or is certainly fenced. With its
        actuator still connected (``will_delay`` None) the acknowledgement takes a round
        trip; otherwise its Last Will comes ``will_delay`` after the failure, and it is
        certainly fenced ``fence_wait`` later, from the fence_after it ``advertised``. The
        issue's "stale_after + fence wait" is this, with the fence wait counted only where it
        exceeds the staleness wait.
        """
        if will_delay is None:
            return self.stale_after
        return max(self.stale_after, will_delay + self.fence_wait(advertised))

    def node_env(self) -> dict[str, str]:
        return {
            "BPF_MQTT__KEEPALIVE": f"{self.keepalive:g}",
            "BPF_PUBLISHER__INTERVAL": f"{self.interval:g}",
            "BPF_PUBLISHER__NETWORK": "custom",
            "BPF_PUBLISHER__SLOT_OFFSET": str(SLOT_OFFSET),
            "BPF_PUBLISHER__SLOT_LENGTH": f"{SLOT_LENGTH:g}",
            "BPF_PUBLISHER__TIMEOUT": f"{self.interval:g}",
            "BPF_ACTUATOR__FENCE_AFTER": f"{self.fence_after:g}",
            "BPF_ACTUATOR__APPLY_TIMEOUT": f"{self.actuator_apply_timeout:g}",
            "BPF_ACTUATOR__APPLY_RETRIES": str(self.apply_retries),
            "BPF_ACTUATOR__APPLY_RETRY_WAIT": f"{self.apply_retry_wait:g}",
            # The restart command is `true`: the node is "up" at once, no ledger to replay.
            "BPF_ACTUATOR__START_TIMEOUT": f"{self.start_timeout:g}",
        }

    def decider_env(self) -> dict[str, str]:
        env = {
            "BPF_MQTT__KEEPALIVE": f"{self.keepalive:g}",
            "BPF_DECIDER__STALE_AFTER": f"{self.stale_after:g}",
            "BPF_DECIDER__TICK": f"{self.tick:g}",
            "BPF_DECIDER__RISE": str(self.rise),
            "BPF_DECIDER__STARTUP_GRACE": f"{self.startup_grace:g}",
            "BPF_DECIDER__MIN_SWITCH_INTERVAL": f"{self.min_switch_interval:g}",
            "BPF_DECIDER__MAX_FAILOVERS": str(self.max_failovers),
            "BPF_DECIDER__FLAP_WINDOW": f"{self.flap_window:g}",
            "BPF_DECIDER__APPLY_TIMEOUT": f"{self.decider_apply_timeout:g}",
            "BPF_DECIDER__FENCE_MARGIN": f"{self.fence_margin:g}",
            "BPF_DECIDER__STATUS_INTERVAL": f"{self.status_interval:g}",
            "BPF_DECIDER__MAX_CLOCK_SKEW": f"{self.max_clock_skew:g}",
        }
        if self.decider_knows_actuators:
            # The actuators' settings, so the decider checks stale_after against their fence time.
            env.update({k: v for k, v in self.node_env().items() if k.startswith("BPF_ACTUATOR__")})
        return env


class Process:
    """One ``bpfailover <component>`` subprocess with its log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.started = time.monotonic()
        with open(log_path, "ab") as log:
            log.write(f"--- fault harness: start {name} at mono {self.started:.3f}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process and everything it started (its own session)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)

    def pause(self, on: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the process and everything it started: a paused host or VM."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGSTOP if on else signal.SIGCONT)

    def terminate(self) -> None:
        if not self.alive:
            return
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)

    def tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class NodeSetup:
    name: str
    publisher_config: Path
    actuator_config: Path
    proxy: FaultProxy
    files: NodeFiles
    stall_file: Path
    env: dict[str, str] = field(default_factory=dict)
    publisher: Process | None = None
    actuator: Process | None = None


class Cluster:
    """One pool under test; see the module docstring."""

    def __init__(
        self,
        broker: BrokerHandle,
        workdir: Path,
        *,
        timings: Timings | None = None,
        node_env: dict[str, dict[str, str]] | None = None,
        clock_offset: dict[str, float] | None = None,
        injector: dict[str, Any] | None = None,
        direct_publishers: tuple[str, ...] = (),
        front_port: int | None = None,
        service_env: dict[str, str] | None = None,
    ) -> None:
        """``direct_publishers``: nodes whose publisher connects straight to the broker, not through
        the node's proxy, so that a network fault of the node reaches its actuator alone.
        ``front_port``: a port in front of the broker (``tests/retainless.py``) that every service
        reaches it through, the nodes' proxies included (the checker stays direct).
        ``service_env``: ``BPF_*`` variables for every service, e.g. ``BPF_MQTT__RETAINED_WILDCARDS``."""
        self.broker = broker
        self.broker_port = front_port or broker.port
        self._service_env = service_env or {}
        self.workdir = workdir
        self.timings = timings or Timings()
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.nodes: dict[str, NodeSetup] = {}
        self.decider: Process | None = None
        self.decider_runs = 0
        self.retired: list[Process] = []
        self._node_env = node_env or {}
        self._clock_offset = clock_offset or {}
        self._injector_options = injector
        self._direct_publishers = direct_publishers
        self.injector: Injector | None = None
        self.checker: SplitBrainChecker | None = None
        self.events: list[tuple[float, str]] = []  # what the scenario did, for the report
        for name in broker.nodes:
            publisher, actuator = broker.node_config(name, "publisher"), broker.node_config(name, "actuator")
            a = load_config(actuator).actuator
            stall_file = load_config(publisher).publisher.stall_file
            assert a.env_file and a.producer_env and a.relay_env and stall_file
            files = NodeFiles(name, a.env_file, a.producer_env.read_bytes(), a.relay_env.read_bytes())
            proxy = FaultProxy(broker.host, self.broker_port, name=name)
            self.nodes[name] = NodeSetup(name, publisher, actuator, proxy, files, stall_file)

    def set_node_env(self, name: str, **env: str) -> None:
        """Extra ``BPF_*`` variables for ``name``'s processes; call before ``start``."""
        self._node_env.setdefault(name, {}).update(env)

    # --- start / stop ---------------------------------------------------------------------------

    def note(self, what: str) -> float:
        at = time.monotonic()
        self.events.append((at, what))
        return at

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPF_")}
        # The code under test is this checkout's, whatever another (editable) install of bpfailover says.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["BPF_LOG_LEVEL"] = os.environ.get("BPF_FAULTS_LOG_LEVEL", "info")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, component: str, config: Path, extra: dict[str, str],
               clock_offset: float = 0.0) -> Process:
        env = self._base_env()
        env.update(extra)
        if clock_offset:
            # TEST ONLY: the whole host's clock is off (time.time() and time.time_ns()).
            env["BPF_TEST_CLOCK_OFFSET"] = f"{clock_offset:g}"
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SKEW_DIR), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "bpfailover.cli", component, "-c", str(config)]
        return Process(name, argv, env, self.logs / f"{name}.log", self.workdir)

    def start(self, *, decider: bool = True) -> None:
        """Proxies, checker, every actuator and publisher, then the decider (unless told not to)."""
        b = self.broker
        for node in self.nodes.values():
            node.proxy.start()
            node.env = {
                **self.timings.node_env(),
                **self._service_env,
                "BPF_MQTT__PORT": str(node.proxy.port),
                **self._node_env.get(node.name, {}),
            }
        self.checker = SplitBrainChecker(
            b.pool, [n.files for n in self.nodes.values()], host=b.host, port=b.port,
            credentials=b.credentials("admin"), ca_file=b.ca_file, prefix=b.prefix,
        )
        self.checker.start()
        for node in self.nodes.values():
            self.start_actuator(node.name)
            self.start_publisher(node.name, direct=node.name in self._direct_publishers)
        if decider:
            self.start_decider()
        if self._injector_options is not None:
            self.injector = Injector(
                pool=b.pool, nodes=list(self.nodes), host=b.host, port=b.port,
                credentials=b.credentials("admin"), ca_file=b.ca_file, prefix=b.prefix,
                genuine=self.genuine_messages, **self._injector_options,
            )
            self.injector.start()

    def start_actuator(self, name: str) -> Process:
        node = self.nodes[name]
        node.actuator = self._spawn(f"{name}-actuator", "actuator", node.actuator_config, node.env,
                                    self._clock_offset.get(name, 0.0))
        return node.actuator

    def start_publisher(self, name: str, *, direct: bool = False) -> Process:
        """Start ``name``'s publisher behind its node's proxy, or (``direct``) connected straight to
        the broker, so that a fault of the proxy reaches the actuator alone."""
        node = self.nodes[name]
        env = {**node.env, "BPF_MQTT__PORT": str(self.broker_port)} if direct else node.env
        node.publisher = self._spawn(f"{name}-publisher", "publisher", node.publisher_config, env,
                                     self._clock_offset.get(name, 0.0))
        return node.publisher

    def start_decider(self) -> Process:
        self.decider_runs += 1
        if self.decider is not None:
            self.retired.append(self.decider)
        config = self.broker.config_path("decider")
        name = f"decider-{self.decider_runs}"
        env = {**self.timings.decider_env(), **self._service_env, "BPF_MQTT__PORT": str(self.broker_port)}
        self.decider = self._spawn(name, "decider", config, env)
        return self.decider

    def processes(self) -> list[Process]:
        found = list(self.retired)
        for node in self.nodes.values():
            found += [p for p in (node.publisher, node.actuator) if p is not None]
        if self.decider is not None:
            found.append(self.decider)
        return found

    def close(self) -> None:
        """Stop everything this cluster started: injector, processes, proxies, checker."""
        if self.injector is not None:
            self.injector.stop()
        # SIGKILL at once: the scenario is over, and a graceful stop of each in turn is slow.
        for process in self.processes():
            with contextlib.suppress(Exception):
                process.kill(signal.SIGKILL)
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.proxy.stop()
        if self.checker is not None:
            self.checker.stop()

    def log_tails(self, lines: int = 40) -> list[tuple[str, str]]:
        return [(f"{p.name} ({p.log_path})", p.tail(lines)) for p in self.processes()]

    # --- observing ------------------------------------------------------------------------------

    @property
    def check(self) -> SplitBrainChecker:
        assert self.checker is not None, "cluster not started"
        return self.checker

    def wait(self, predicate: Callable[[], T], timeout: float, message: str) -> T:
        """Poll until ``predicate()`` is truthy; fail with ``message`` after ``timeout``.

        Also fails at once if a process that should run has died, with its log.
        """
        def guarded() -> T:
            self._check_alive()
            return predicate()

        return self.check.wait(guarded, timeout, message)

    def _check_alive(self) -> None:
        for process in self.processes():
            if process in self.retired or process.alive or process.popen.returncode in (-9, -15):
                continue
            raise RuntimeError(
                f"{process.name} exited with code {process.popen.returncode}:\n{process.tail(20)}"
            )

    def state(self, node: str) -> NodeState | None:
        return self.check.latest_state(node)

    def state_is(self, node: str, **expected: object) -> NodeState | None:
        state = self.state(node)
        if state is not None and all(getattr(state, k) == v for k, v in expected.items()):
            return state
        return None

    def tips_since(self, node: str, after: float) -> int:
        """New tip reports from ``node`` received after ``after`` (replays of older ones excluded)."""
        wall_after = after + (time.time() - time.monotonic()) - 0.1
        offset = self._clock_offset.get(node, 0.0)
        seen = {
            (t.boot, t.seq)
            for _, t in self.check.messages("tip", node, after=after, model=TipReport)
            if t.sent_at - offset >= wall_after
        }
        return len(seen)

    def last_tip(self, node: str, before: float | None = None) -> tuple[float, TipReport] | None:
        tips = [(at, t) for at, t in self.check.messages("tip", node, model=TipReport)
                if (before is None or at <= before) and t.boot != "injected"]
        return tips[-1] if tips else None

    def genuine_messages(self) -> tuple[list[RoleCommand], list[TipReport]]:
        commands = [c for _, c in self.check.role_commands()]
        tips = [t for _, t in self.check.messages("tip", model=TipReport)][-50:]
        return commands, tips

    def wait_bootstrapped(self, producer: str = "bp1", timeout: float = 30.0) -> float:
        """Until ``producer`` runs as producer at epoch 1, every other node acknowledged relay
        at epoch 1, and every node has sent ``rise + 1`` tips: the pool is steady and ready."""
        t = self.timings

        def steady() -> bool:
            if self.check.env_role(producer) != "producer":
                return False
            if not self.state_is(producer, online=True, role="producer", epoch=1, pending=None):
                return False
            return all(
                self.state_is(n, online=True, role="relay", epoch=1, pending=None)
                for n in self.nodes if n != producer
            )

        self.wait(steady, timeout, f"bootstrap: {producer} producer at epoch 1, others relay")
        self.wait(
            lambda: all(self.tips_since(n, self.check.started) >= t.rise + 1 for n in self.nodes),
            timeout, f"{t.rise + 1} fresh tips from every node",
        )
        return time.monotonic()

    def command(self, node: str, role: str, epoch: int, *, retain: bool = True) -> RoleCommand:
        """Publish a role command signed with the bundle's decider key, as the test admin
        (a stand-in decider for the harness's own tests, or a deliberate replay)."""
        cmd = RoleCommand(
            pool=self.broker.pool, node=node, role=role, epoch=epoch,  # type: ignore[arg-type]
            issued_at=time.time(), decider="fault-harness", reason="test",
        )
        cmd = sign_command(cmd, load_signing_key(self.broker.bundle / "keys" / "command-signing.key"))
        self.broker.publish(Topics(self.broker.prefix).role(self.broker.pool, node), cmd.to_json(),
                            retain=retain)
        return cmd

    # --- faults ---------------------------------------------------------------------------------

    def kill_node(self, name: str) -> float:
        """The whole machine dies: SIGKILL its publisher and actuator; its env file stops counting."""
        node = self.nodes[name]
        at = self.note(f"kill node {name}")
        for process in (node.actuator, node.publisher):
            if process is not None:
                process.kill(signal.SIGKILL)
        self.check.mark_down(name)
        return at

    def kill_publisher(self, name: str) -> float:
        node = self.nodes[name]
        at = self.note(f"kill publisher {name}")
        assert node.publisher is not None
        node.publisher.kill(signal.SIGKILL)
        return at

    def kill_actuator(self, name: str) -> float:
        """SIGKILL one node's actuator only (a crash: its Last Will fires, the node keeps its role)."""
        node = self.nodes[name]
        at = self.note(f"kill actuator {name}")
        assert node.actuator is not None
        node.actuator.kill(signal.SIGKILL)
        return at

    def stop_actuator(self, name: str) -> float:
        """SIGTERM one node's actuator only and wait for it to exit: a clean stop (``systemctl stop``),
        the node left running whatever it ran."""
        node = self.nodes[name]
        at = self.note(f"stop actuator {name} (SIGTERM)")
        assert node.actuator is not None
        node.actuator.terminate()
        self.retired.append(node.actuator)  # its exit code 0 is expected
        node.actuator = None
        return at

    def operator(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``bpfailover <args> -c operator.toml`` (the bundle's operator) and return its result."""
        self.note(f"operator: bpfailover {' '.join(args)}")
        argv = [sys.executable, "-m", "bpfailover.cli", *args, "-c", str(self.broker.config_path("operator"))]
        return subprocess.run(argv, env=self._base_env(), cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def pause_decider(self, on: bool = True) -> float:
        """Freeze (SIGSTOP) or thaw (SIGCONT) the decider: it neither hears nor says anything meanwhile."""
        at = self.note("pause decider (SIGSTOP)" if on else "resume decider (SIGCONT)")
        assert self.decider is not None
        self.decider.pause(on)
        return at

    def kill_decider(self) -> float:
        at = self.note("kill decider (SIGKILL)")
        assert self.decider is not None
        self.decider.kill(signal.SIGKILL)
        return at

    def stall(self, name: str, on: bool = True) -> float:
        """Freeze (or release) a node's simulated tip through its stall file."""
        path = self.nodes[name].stall_file
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)
        return self.note(f"{'stall' if on else 'unstall'} {name}")

    def network(self, name: str, fault: str, seconds: float = 0.0) -> float:
        """``cut``, ``blackhole``, ``delay`` (``seconds``), ``lossy`` or ``heal`` one node's link to
        the broker (``FaultProxy``)."""
        proxy = self.nodes[name].proxy
        at = self.note(f"network {name} {fault}{f' {seconds:g}s' if seconds else ''}")
        if fault == "cut":
            proxy.cut()
        elif fault == "blackhole":
            proxy.blackhole()
        elif fault == "delay":
            proxy.delay(seconds)
        elif fault == "lossy":
            proxy.lossy(self._client_app_records())
        elif fault == "heal":
            proxy.heal()
        else:
            raise ValueError(fault)
        return at

    def _client_app_records(self) -> int:
        """TLS application-data records a client sends up to its MQTT CONNECT: 2 in TLS 1.3 (its
        Finished is encrypted), 1 in TLS 1.2. The nodes' Python negotiates as this handshake does."""
        with self.broker.handshake() as sock:
            return 2 if sock.version() == "TLSv1.3" else 1

    def broker_stop(self) -> float:
        at = self.note("broker stop")
        self.broker.stop()
        return at

    def broker_start(self) -> float:
        self.broker.start()
        return self.note("broker started")

    def broker_kill(self) -> float:
        """SIGKILL the broker: nothing saved since its last save, no Will sent."""
        broker = self.broker
        assert isinstance(broker, MosquittoProcess), "needs the local mosquitto (BPF_TEST_BROKER=local)"
        at = self.note("broker killed (SIGKILL)")
        broker.kill()
        return at

    def broker_snapshot(self) -> Path:
        """mosquitto's persistence file as of now, saved aside (for a rollback)."""
        broker = self.broker
        assert isinstance(broker, MosquittoProcess), "needs the local mosquitto (BPF_TEST_BROKER=local)"
        path = broker.snapshot(self.workdir / f"mosquitto-snapshot-{len(self.events)}.db")
        self.note(f"broker snapshot {path.name}")
        return path

    def broker_restore(self, snapshot: Path | None) -> float:
        """While the broker is down: restore ``snapshot`` (a rollback) or, None, lose everything."""
        broker = self.broker
        assert isinstance(broker, MosquittoProcess), "needs the local mosquitto (BPF_TEST_BROKER=local)"
        broker.restore(snapshot)
        return self.note(f"broker persistence {'restored from ' + snapshot.name if snapshot else 'deleted'}")

    # --- results --------------------------------------------------------------------------------

    def result(self, scenario: str, t0: float, *, failover_s: float | None, theory_s: float | None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        check = self.check
        report = check.report(t0)
        details = report.pop("overlaps")
        result: dict[str, Any] = {
            "scenario": scenario,
            "overlaps": len(details),
            "overlap_details": details,
            "failover_s": None if failover_s is None else round(failover_s, 3),
            "theory_s": theory_s,
            "target_s": None if theory_s is None else theory_s + 2.0,
            "role_changes": [c for c in report["env_changes"] if not c.endswith(" down")],
            **report,
            "actions": [f"{at - t0:+.2f}s {what}" for at, what in self.events],
            "timings": asdict(self.timings),
        }
        if self.injector is not None:
            result["injected"] = self.injector.counts()
        if extra:
            result.update(extra)
        return result


def append_result(path: Path, result: dict[str, Any]) -> None:
    """Append one scenario's result to a JSON list file."""
    existing: list[Any] = []
    if path.exists():
        with contextlib.suppress(ValueError):
            existing = json.loads(path.read_text())
    existing.append(result)
    path.write_text(json.dumps(existing, indent=2, default=str) + "\n")


def summary_line(result: dict[str, Any]) -> str:
    fo = result.get("failover_s")
    theory = result.get("theory_s")
    timing = (
        f"failover {fo:.2f}s (theory {theory:.2f}s, target <= {theory + 2:.2f}s)"
        if fo is not None and theory is not None
        else f"failover {fo:.2f}s" if fo is not None else "no failover"
    )
    changes = ", ".join(result["role_changes"]) or "none"
    return f"[{result['scenario']}] overlaps {result['overlaps']}; {timing}; role changes: {changes}"


@contextlib.contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
