"""Run every benchmark in one go and print the numbers: ``python -m bench.run_all``.

One bench bundle and broker (10,000 pools x 2 nodes by default, ``--pools``) serve all
four measurements, in this order:

1. steady state on the broker (signed role commands, NodeStates, tips retained for
   every pool), a decider started on it, and its RSS once every pool is recovered;
2. (a) throughput: the decider and ``bench.counter`` (a bare paho subscriber that only
   counts: the ceiling) are frozen with SIGSTOP while two ``bench.loadgen burst`` processes
   publish ``--count`` TipReports and a marker (a ``resume`` ControlRequest); the broker
   queues them. Both consumers are thawed at the same instant and drain the same backlog
   side by side; each rate is count / (time it reached the marker - thaw time). The
   decider handles its inbox in order, so its answer to the marker means every tip before
   it was handled. Also their CPU seconds;
3. (d) recovery: the decider is stopped (SIGTERM) and started again with
   ``--grace`` seconds of startup_grace over everything retained; the time from the
   process start until every pool has published its recovered status, and how many
   pools recovered correctly (their retained producer at epoch 1);
4. (b) decision latency, with that decider (stale_after ``--stale-after``, tick 1 s)
   under a steady load (every node every 10 s): node ``a`` of ``--fail`` pools stops
   reporting; latency = receipt of the first role command of the failover (relay for
   ``a``, on the wire) - (its last tip_time + stale_after);
5. (c) memory: the decider's RSS at each stage, and a real publisher and actuator of pool
   bench00000 (simulated tip, env-swap) after ``--node-seconds`` seconds of running.

Results go to ``<work folder>/run_all.json``; bench/RESULTS.md is written from them by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    DECIDER_ID,
    PREFIX,
    BenchBundle,
    Broker,
    Results,
    client,
    cpu_seconds,
    machine,
    make_bundle,
    percentile,
    pool_id,
    publish_steady_state,
    rss_mb,
    start_component,
    stop,
    subscribe,
    wait_until,
)
from bpfailover.protocol.wire import ControlRequest

STEADY = "a is producer at epoch 1"
DECIDERS: list[subprocess.Popen[bytes]] = []  # every decider started, all stopped at the end


@dataclass
class Watcher:
    """A ``loadgen`` subscriber recording statuses, events and live role commands."""

    bundle: BenchBundle
    statuses: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    roles: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def start(self) -> None:
        self._lock = threading.Lock()
        self.client = client(self.bundle, "watcher")

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if msg.retain:
                return
            at = time.time()
            kind = msg.topic.split("/")[2]
            target = {"decider": self.statuses, "events": self.events, "role": self.roles}.get(kind)
            if target is not None:
                target.append((at, msg.topic, json.loads(msg.payload)))

        self.client.on_message = on_message
        subscribe(self.client, [f"{PREFIX}/+/decider", f"{PREFIX}/+/events", f"{PREFIX}/+/role/+"])

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def recovered_pools(self, since: float) -> dict[str, tuple[float, str]]:
        """pool -> (time, reason) of its first "recovered" event after ``since``."""
        found: dict[str, tuple[float, str]] = {}
        for at, _topic, event in list(self.events):
            if at >= since and event.get("kind") == "recovered" and event["pool"] not in found:
                found[event["pool"]] = (at, event.get("reason", ""))
        return found

    def answered(self, request_id: str) -> float | None:
        for at, _topic, event in list(self.events):
            if event.get("request_id") == request_id:
                return at
        return None


def busy_until_idle(pid: int, started: float, timeout: float = 600.0) -> float:
    """Wall time at which ``pid`` went idle (under 5 % of a core for a whole second) after
    having been busy: how long its start-up work (reading what the broker retained) took."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    busy = False
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        used, last = now - last, now
        if used > 0.2:
            busy = True
        elif busy and used < 0.05:
            return time.time() - 1.0
    raise TimeoutError(f"process {pid} did not go idle within {timeout:g}s")


def decider_env(**values: Any) -> dict[str, str]:
    # Its default log level, as operators run it: a line per recovered pool and per decision.
    env = {"BPF_DECIDER__ID": DECIDER_ID, "BPF_LOG_LEVEL": "info"}
    # Experiments on the decider without editing it (e.g. a sitecustomize that patches the
    # link): BENCH_DECIDER_PYTHONPATH is put in front of its PYTHONPATH. See RESULTS.md.
    extra_path = os.environ.get("BENCH_DECIDER_PYTHONPATH")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, os.environ.get("PYTHONPATH")]))
    keepalive = values.pop("mqtt_keepalive", None)
    if keepalive is not None:
        env["BPF_MQTT__KEEPALIVE"] = str(keepalive)
    env.update({f"BPF_DECIDER__{k.upper()}": str(v) for k, v in values.items()})
    return env


READ_LINE = re.compile(r"read (\d+) retained messages in ([0-9.]+)s")


@dataclass
class Start:
    process: subprocess.Popen[bytes]
    started: float  # wall time of the process start
    idle: float  # wall time it went idle: retained state read (or the end of the grace)
    recovered: float  # wall time the last pool published its "recovered" event
    correct: int  # pools recovered as steady with their retained producer (a at epoch 1)
    outcomes: dict[str, tuple[float, str]]
    read: tuple[int, float] | None  # the decider's own "read N retained messages in X s"


def start_decider(
    bundle: BenchBundle, work: Path, watcher: Watcher, grace: float, label: str, **settings: Any
) -> Start:
    """Start a decider and follow its start-up until every pool has recovered."""
    started = time.time()
    process = start_component(
        "decider",
        bundle.decider_toml,
        work / f"decider-{label}.log",
        decider_env(startup_grace=grace, **settings),
    )
    DECIDERS.append(process)
    idle = busy_until_idle(process.pid, started, 600 + grace)
    # Until every pool has recovered, or no pool did for 30 s (an event lost on the way).
    deadline = time.monotonic() + 600 + grace
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(watcher.recovered_pools(started))
        if count >= bundle.pools:
            break
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif time.time() > started + grace + 30 and time.monotonic() - quiet_since > 30:
            print(f"  ({label}: only {count} pools reported recovered)", flush=True)
            break
        time.sleep(0.1)
    outcomes = watcher.recovered_pools(started)
    done = max((at for at, _ in outcomes.values()), default=float("nan"))
    correct = sum(1 for _, reason in outcomes.values() if reason == STEADY)
    found = READ_LINE.search((work / f"decider-{label}.log").read_text(errors="replace"))
    read = (int(found[1]), float(found[2])) if found else None
    return Start(process, started, idle, done, correct, outcomes, read)


def report_start(
    out: Results,
    key: str,
    start: Start,
    grace: float,
    pools: int,
    touched: set[str] | frozenset[str] = frozenset(),
) -> None:
    """``touched``: pools the benchmarks changed on purpose (failovers), left out of the check."""
    out.add(f"{key}_startup_grace_s", grace)
    out.add(f"{key}_busy_reading_retained_s", round(start.idle - start.started, 2))
    if start.read is not None:
        out.add(f"{key}_retained_read_messages", start.read[0])
        out.add(f"{key}_retained_read_s", start.read[1])
    out.add(f"{key}_all_pools_recovered_s", round(start.recovered - start.started, 2))
    out.add(f"{key}_recovery_after_grace_s", round(start.recovered - start.started - grace, 2))
    kept = {p: o for p, o in start.outcomes.items() if p not in touched}
    correct = sum(1 for _, reason in kept.values() if reason == STEADY)
    out.add(f"{key}_pools_reported_recovered", f"{len(start.outcomes)}/{pools}")
    out.add(f"{key}_pools_recovered_correctly", f"{correct}/{pools - len(touched)}")
    wrong = [f"{pool}: {reason}" for pool, (_, reason) in sorted(kept.items()) if reason != STEADY]
    if wrong:
        out.add(f"{key}_other_outcomes_examples", wrong[:3])


def profiler(pid: int, out: Path, *, rate: int, seconds: float | None = None) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid``'s threads into ``out`` (raw stacks), for ``seconds`` or until SIGINT."""
    command = ["py-spy", "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "--threads", "-o", str(out)]
    if seconds is not None:
        command += ["-d", str(int(seconds))]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bench_command(module: str, bundle: BenchBundle, *args: str) -> list[str]:
    """The command line of one of the bench's helper processes (as user ``loadgen``)."""
    return [
        sys.executable,
        "-m",
        f"bench.{module}",
        *args,
        "--bundle",
        str(bundle.root),
        "--password",
        bundle.loadgen_password,
        "--port",
        str(bundle.port),
    ]


def run_counter(bundle: BenchBundle) -> subprocess.Popen[str]:
    process = subprocess.Popen(bench_command("counter", bundle), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    json.loads(process.stdout.readline())  # ready
    return process


def loadgen(bundle: BenchBundle, mode: str, *args: str) -> subprocess.Popen[str]:
    command = bench_command("loadgen", bundle, mode, "--pools", str(bundle.pools), *args)
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def throughput(
    bundle: BenchBundle,
    watcher: Watcher,
    decider: subprocess.Popen[bytes],
    count: int,
    out: Results,
    profile: Path | None = None,
) -> None:
    """Both consumers are frozen (SIGSTOP) while the backlog is loaded, then thawed together:
    each one's rate is how fast it drains the same backlog."""
    print(f"(a) throughput: {count} TipReports over {2 * bundle.pools} nodes", flush=True)
    counter = run_counter(bundle)
    for process in (decider, counter):
        os.kill(process.pid, signal.SIGSTOP)
    try:
        shards = 2
        gens = [
            loadgen(
                bundle, "burst", "--count", str(count // shards), "--shard", str(k), "--shards", str(shards)
            )
            for k in range(shards)
        ]
        sent = [json.loads(g.communicate(timeout=3600)[0].splitlines()[-1]) for g in gens]
        total = sum(int(s["count"]) for s in sent)
        publish_rate = total / (max(s["published"] for s in sent) - min(s["first"] for s in sent))
        marker = ControlRequest(
            request_id=f"bench-{uuid.uuid4().hex[:8]}", pool=pool_id(0), action="resume", requested_by="bench"
        )
        watcher.client.publish(f"{PREFIX}/{pool_id(0)}/control", marker.to_json(), qos=1).wait_for_publish(60)
        cpu_decider0 = cpu_seconds(decider.pid)
    finally:
        resumed = time.time()
        for process in (decider, counter):
            os.kill(process.pid, signal.SIGCONT)
    spy = profiler(decider.pid, profile, rate=50) if isinstance(profile, Path) else None
    assert counter.stdout is not None
    counted = json.loads(counter.stdout.readline())
    counter.wait(60)
    answered = wait_until(
        lambda: watcher.answered(marker.request_id), 3600, "the decider's answer to the marker"
    )
    cpu_decider = cpu_seconds(decider.pid) - cpu_decider0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    decider_rate = total / (answered - resumed)
    ceiling = counted["count"] / (counted["marker"] - resumed)
    out.add("a_tips", total)
    out.add("a_load_publish_rate_per_s", round(publish_rate))
    out.add("a_ceiling_bare_subscriber_per_s", round(ceiling))
    out.add("a_ceiling_counted", counted["count"])
    out.add("a_decider_per_s", round(decider_rate))
    out.add("a_ratio_decider_to_ceiling", round(decider_rate / ceiling, 3))
    out.add("a_decider_cpu_s", round(cpu_decider, 1))
    out.add("a_decider_per_cpu_s", round(total / cpu_decider) if cpu_decider else None)
    out.add("a_counter_cpu_s", round(counted["cpu"], 1))
    out.add("a_counter_per_cpu_s", round(counted["count"] / counted["cpu"]) if counted["cpu"] else None)


def recovery(
    bundle: BenchBundle,
    work: Path,
    watcher: Watcher,
    old: subprocess.Popen[bytes],
    grace: float,
    label: str,
    out: Results,
    touched: set[str] | frozenset[str] = frozenset(),
    **settings: Any,
) -> subprocess.Popen[bytes]:
    print(f"(d) recovery: restart with {bundle.pools} pools retained, startup_grace {grace:g}s", flush=True)
    stop(old, signal.SIGTERM)
    if label == "restart":
        # The ceiling of the read: a bare paho client subscribing to what the decider does.
        bare = subprocess.run(
            bench_command("counter", bundle, "--retained", str(bundle.pools)),
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(bare.stdout.strip().splitlines()[-1])
        out.add("d_bare_subscriber_retained_messages", result["count"])
        out.add("d_bare_subscriber_retained_read_s", result["seconds"])
    start = start_decider(bundle, work, watcher, grace, label, **settings)
    report_start(out, f"d_{label}", start, grace, bundle.pools, touched)
    return start.process


def latency(
    bundle: BenchBundle,
    watcher: Watcher,
    stale_after: float,
    fail: int,
    out: Results,
    decider: subprocess.Popen[bytes] | None = None,
    profile: Path | None = None,
) -> set[str]:
    print(f"(b) decision latency: {fail} producers stop reporting under a steady load", flush=True)
    fail_after, spread = stale_after + 5, 20.0
    duration = fail_after + spread + stale_after + 5
    since = time.time()
    gen = loadgen(
        bundle,
        "steady",
        "--interval",
        "10",
        "--duration",
        str(duration),
        "--fail",
        str(fail),
        "--fail-after",
        str(fail_after),
        "--fail-spread",
        str(spread),
        "--seq-base",
        "100000",
    )
    spy = None
    if profile is not None and decider is not None:
        spy = profiler(decider.pid, profile, rate=40, seconds=duration)
    result = json.loads(gen.communicate(timeout=duration + 600)[0].splitlines()[-1])
    if spy is not None:
        spy.wait(120)
    last_tip: dict[str, float] = result["last_tip_time"]

    issued: dict[str, float] = {}

    def first_commands() -> dict[str, float]:
        found: dict[str, float] = {}
        for at, topic, cmd in list(watcher.roles):
            pool = topic.split("/")[1]
            if at >= since and pool in last_tip and cmd.get("epoch", 0) >= 2 and pool not in found:
                found[pool] = at
                issued[pool] = float(cmd["issued_at"])
        return found

    wait_until(
        lambda: len(first_commands()) >= len(last_tip), 120, "a failover command for every stopped node"
    )
    found = first_commands()
    samples = [found[p] - (last_tip[p] + stale_after) for p in last_tip]
    out.add("b_samples", len(samples))
    out.add("b_tick_s", 1.0)
    out.add("b_latency_p50_s", round(percentile(samples, 50), 3))
    out.add("b_latency_p99_s", round(percentile(samples, 99), 3))
    out.add("b_latency_max_s", round(max(samples), 3))
    out.add("b_latency_min_s", round(min(samples), 3))
    # Where the time goes: until the decider decided (the command's issued_at, its own clock
    # on this machine), and from there until the command was on the wire.
    decide = [issued[p] - (last_tip[p] + stale_after) for p in last_tip]
    deliver = [found[p] - issued[p] for p in last_tip]
    out.add("b_decide_p50_s", round(percentile(decide, 50), 3))
    out.add("b_decide_p99_s", round(percentile(decide, 99), 3))
    out.add("b_deliver_p50_s", round(percentile(deliver, 50), 3))
    out.add("b_deliver_p99_s", round(percentile(deliver, 99), 3))
    out.add("b_steady_load_tips_per_s", round(result["sent"] / duration))
    return set(last_tip)


def node_processes(bundle: BenchBundle, work: Path, seconds: float, out: Results) -> None:
    print(f"(c) memory: a publisher and an actuator for {seconds:g}s", flush=True)
    env = {"BPF_PUBLISHER__INTERVAL": "1", "BPF_LOG_LEVEL": "warning"}
    publisher = start_component("publisher", bundle.node_toml("a"), work / "publisher.log", env)
    actuator = start_component("actuator", bundle.node_toml("a"), work / "actuator.log", env)
    try:
        time.sleep(seconds)  # a benchmark's measuring period, not a synchronisation
        for name, process in (("publisher", publisher), ("actuator", actuator)):
            rss, hwm = rss_mb(process.pid)
            out.add(f"c_{name}_rss_mb", round(rss, 1))
            out.add(f"c_{name}_peak_rss_mb", round(hwm, 1))
    finally:
        stop(publisher)
        stop(actuator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=10_000)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--fail", type=int, default=200)
    parser.add_argument("--stale-after", type=float, default=20.0)
    parser.add_argument(
        "--grace",
        type=float,
        default=2.0,
        help="startup_grace (the decider also waits until the retained read is complete)",
    )
    parser.add_argument(
        "--short-grace",
        type=float,
        default=0.0,
        help="a last restart with this grace; 0 (the default) skips it",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the decider during (a)")
    parser.add_argument("--node-seconds", type=float, default=20.0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bpf-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Results("run_all")
    print(f"machine: {machine()}", flush=True)
    print(f"work folder: {work}", flush=True)
    bundle = make_bundle(work / "bundle", args.pools)
    broker = Broker(bundle)
    broker.start()
    watcher = Watcher(bundle)
    decider = None
    try:
        watcher.start()
        t = time.time()
        publish_steady_state(bundle, bundle.pool_ids())
        out.add("setup_retained_messages", 6 * bundle.pools)
        out.add("setup_publish_s", round(time.time() - t, 1))
        # Frozen while (a) loads its backlog: a keepalive of 60 s (mosquitto waits 90 s), and
        # no clock-skew check (a backlogged report's received - sent_at is its queueing time).
        first = start_decider(
            bundle, work, watcher, args.grace, "first", max_clock_skew=1e9, mqtt_keepalive=60
        )
        decider = first.process
        report_start(out, "first_start", first, args.grace, bundle.pools)
        rss, hwm = rss_mb(decider.pid)
        out.add("c_decider_rss_after_recovery_mb", round(rss, 1))
        profile = work / "profile-throughput.txt" if args.profile else None
        throughput(bundle, watcher, decider, args.count, out, profile)
        rss, hwm = rss_mb(decider.pid)
        out.add("c_decider_rss_after_throughput_mb", round(rss, 1))
        out.add("c_decider_peak_rss_mb", round(hwm, 1))
        decider = recovery(
            bundle, work, watcher, decider, args.grace, "restart", out, stale_after=args.stale_after, tick=1
        )
        rss, _ = rss_mb(decider.pid)
        out.add("c_decider_rss_after_restart_mb", round(rss, 1))
        lat_profile = work / "profile-latency.txt" if args.profile else None
        touched = latency(bundle, watcher, args.stale_after, args.fail, out, decider, lat_profile)
        touched |= {pool_id(0)}
        rss, hwm = rss_mb(decider.pid)
        out.add("c_decider_rss_after_latency_mb", round(rss, 1))
        out.add("c_decider_peak_rss_restarted_mb", round(hwm, 1))
        node_processes(bundle, work, args.node_seconds, out)
        out.add("broker_rss_mb", round(rss_mb(broker.pid)[0], 1))
        if args.short_grace:
            # Last, because it may leave pools re-commanded: a grace shorter than the read.
            decider = recovery(bundle, work, watcher, decider, args.short_grace, "short_grace", out, touched)
    finally:
        for process in [decider, *DECIDERS]:
            stop(process)
        watcher.stop()
        broker.stop()
    path = out.save(work)
    print(f"saved {path}", flush=True)
    print(json.dumps(out.values, indent=2))


if __name__ == "__main__":
    main()
