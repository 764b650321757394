"""``bpfailover publisher`` as a real process against a real mosquitto (TLS, ACL, passwords)."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfailover.link import Incoming, MqttLink, make_client_id
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import TipReport, decode
from bpfailover.publisher.chain import MAINNET, PREVIEW
from bpfailover.publisher.service import Publisher
from bpfailover.publisher.sources import SourceError
from bpfailover.settings import load_config
from tests.brokers import BrokerHandle, wait_for

FIXTURES = Path(__file__).parent / "fixtures"
INTERVAL = "0.5"


class PublisherRun:
    """``python -m bpfailover.cli publisher -c CONFIG`` with debug logs in a file."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        environ = {**os.environ, "BPF_PUBLISHER__INTERVAL": INTERVAL, "BPF_LOG_LEVEL": "debug", **env}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bpfailover.cli", "publisher", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def unsent(self) -> list[int]:
        """Seqs of reports built while the broker was unreachable (debug log)."""
        return [int(s) for s in re.findall(r"broker not connected: report seq (\d+) not sent", self.log())]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def start_publisher(tmp_path: Path) -> Iterator[Callable[..., PublisherRun]]:
    runs: list[PublisherRun] = []

    def start(handle: BrokerHandle, node: str, **env: str) -> PublisherRun:
        config = handle.node_config(node, "publisher")
        run = PublisherRun(config, tmp_path / f"publisher-{node}-{len(runs)}.log", env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.alive:
            run.proc.kill()
            run.proc.wait()


class Watcher:
    """A subscriber (the test admin) to one node's tip topic, keeping every report it sees."""

    def __init__(self, handle: BrokerHandle, node: str) -> None:
        self.pool, self.node = handle.pool, node
        self.topic = Topics(handle.prefix).tip(handle.pool, node)
        self.link = MqttLink(
            handle.mqtt_settings("admin"),
            make_client_id("test-watch", unique=True),
            subscriptions=[self.topic],
        )
        self.link.start()
        self.seen: list[tuple[TipReport, Incoming]] = []

    def reports(self) -> list[tuple[TipReport, Incoming]]:
        while (item := self.link.get(timeout=0)) is not None:
            if isinstance(item, Incoming) and item.payload:
                self.seen.append((decode(TipReport, item.payload, pool=self.pool, node=self.node), item))
        return self.seen

    def live(self) -> list[TipReport]:
        """Reports delivered as they were published (not the retained copy sent on subscribe)."""
        return [r for r, msg in self.reports() if not msg.retain]

    def wait(self, predicate: Callable[[list[TipReport]], object], message: str, timeout: float = 10) -> None:
        wait_for(lambda: predicate([r for r, _ in self.reports()]), timeout, message)

    def close(self) -> None:
        self.link.stop()


@pytest.fixture
def watch() -> Iterator[Callable[[BrokerHandle, str], Watcher]]:
    watchers: list[Watcher] = []

    def make(handle: BrokerHandle, node: str) -> Watcher:
        watcher = Watcher(handle, node)
        watchers.append(watcher)
        return watcher

    yield make
    for watcher in watchers:
        watcher.close()


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def clean_disconnect_logged(handle: BrokerHandle, pool: str, node: str) -> bool:
    return f"Client {make_client_id('publisher', pool, node)} disconnected" in handle.log_tail(400)


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.broker
def test_subscriber_sees_retained_reports_with_increasing_seq_then_sigterm_disconnects(
    broker, start_publisher, watch
):
    node = "bp1"
    topic = Topics(broker.prefix).tip(broker.pool, node)
    broker.clear_retained(topic)
    watcher = watch(broker, node)
    run = start_publisher(broker, node)
    watcher.wait(lambda rs: len(rs) >= 4, "4 tip reports")

    reports = watcher.live()
    assert strictly_increasing([r.seq for r in reports])
    assert len({r.boot for r in reports}) == 1
    for r in reports:
        assert r.ok and r.source == "simulate" and r.network == "mainnet"
        assert r.slot is not None and r.tip_time == MAINNET.time_of(r.slot)
        assert 0 <= r.sent_at - r.tip_time < 600

    retained = decode(TipReport, broker.retained(topic)[topic], pool=broker.pool, node=node)
    assert retained.boot == reports[0].boot and retained.seq >= reports[-1].seq

    # The bundle's stall file freezes the simulated tip: reports keep coming, the tip does not move.
    stall = broker.bundle / "run" / node / "stall"
    stall.touch()
    try:
        seen = len(watcher.reports())
        watcher.wait(lambda rs: len(rs) >= seen + 5, "5 reports while stalled")
        stalled = [r for r, _ in watcher.reports()[seen + 1 :]]
        assert len({(r.slot, r.block, r.hash, r.tip_time) for r in stalled}) == 1
        assert strictly_increasing([r.seq for r in stalled])
    finally:
        stall.unlink()

    assert run.terminate() == 0
    assert "publisher stopped:" in run.log()
    wait_for(
        lambda: clean_disconnect_logged(broker, broker.pool, node), 5, "a clean DISCONNECT in the broker log"
    )


@pytest.mark.broker
def test_broker_restart_mid_run_is_survived_without_a_backlog(broker_factory, start_publisher, watch):
    handle = broker_factory()
    node = "bp1"
    watcher = watch(handle, node)
    run = start_publisher(handle, node)
    watcher.wait(lambda rs: len(rs) >= 3, "3 reports before the restart")

    handle.stop()
    wait_for(lambda: not watcher.link.connected.is_set(), 5, "the watcher to see the broker go")
    before = [r for r, _ in watcher.reports()]  # everything delivered before the broker went away
    wait_for(lambda: len(run.unsent()) >= 3, 10, "3 reports built while the broker is down")
    handle.start()

    def after_restart() -> list[TipReport]:
        return [r for r, msg in watcher.reports()[len(before) :] if not msg.retain]

    wait_for(lambda: len(after_restart()) >= 3, 15, "3 live reports after the restart")
    after = after_restart()
    unsent = set(run.unsent())

    assert run.alive
    assert {r.boot for r in before + after} == {before[0].boot}  # the same process, never restarted
    assert strictly_increasing([r.seq for r in before + after])
    # Reports built while the broker was down were not queued and replayed afterwards.
    assert len(unsent & {r.seq for r in after}) <= 1  # at most one in flight when the broker went away
    assert "broker connected: sent the latest tip report" in run.log()

    assert run.terminate() == 0
    wait_for(
        lambda: clean_disconnect_logged(handle, handle.pool, node), 5, "a clean DISCONNECT in the broker log"
    )


@pytest.mark.broker
def test_broker_down_at_start_keeps_sampling_and_sends_only_the_latest(
    broker_factory, start_publisher, watch
):
    handle = broker_factory(start=False)
    node = "bp2"
    run = start_publisher(handle, node)
    wait_for(lambda: len(run.unsent()) >= 4, 10, "4 reports sampled with no broker")
    assert run.alive
    handle.start()
    watcher = watch(handle, node)
    sampled_while_down = max(run.unsent())
    watcher.wait(lambda rs: len(rs) >= 3, "3 reports once the broker is up", timeout=15)

    seqs = [r.seq for r, _ in watcher.reports()]
    assert seqs[0] > sampled_while_down  # the first report anyone sees is fresh, not report 1
    assert not set(run.unsent()) & set(seqs)  # nothing built while disconnected was sent later
    assert strictly_increasing(seqs)
    assert "broker connected: sent the latest tip report" in run.log()
    assert run.terminate() == 0


@pytest.mark.broker
def test_garbage_and_failing_sources_give_ok_false_and_the_process_stays_up(
    broker, start_publisher, watch, tmp_path
):
    node = "bp2"
    broker.clear_retained(Topics(broker.prefix).tip(broker.pool, node))
    mode = tmp_path / "mode"
    mode.write_text("garbage")
    script = tmp_path / "tip.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$(cat {shlex.quote(str(mode))})" in\n'
        "  garbage) echo 'Traceback (most recent call last):' ;;\n"
        "  fail) echo 'cardano-cli: Network.Socket.connect: <socket: 11>: does not exist' >&2; exit 1 ;;\n"
        "  hang) sleep 30 ;;\n"
        f"  *) cat {shlex.quote(str(FIXTURES / 'tip_preview_conway.json'))} ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    watcher = watch(broker, node)
    run = start_publisher(
        broker,
        node,
        BPF_PUBLISHER__SOURCE="command",
        BPF_PUBLISHER__COMMAND=str(script),
        BPF_PUBLISHER__TIMEOUT="0.3",
        BPF_PUBLISHER__NETWORK="preview",
    )

    def latest_error(rs: list[TipReport]) -> str | None:
        return rs[-1].error if rs and not rs[-1].ok else None

    watcher.wait(lambda rs: "is not JSON: 'Traceback" in (latest_error(rs) or ""), "ok=false for garbage")
    mode.write_text("fail")
    watcher.wait(lambda rs: "failed (exit 1): cardano-cli" in (latest_error(rs) or ""), "ok=false for exit 1")
    mode.write_text("hang")
    watcher.wait(lambda rs: "did not answer within 0.3s" in (latest_error(rs) or ""), "ok=false for a hang")
    assert run.alive
    mode.write_text("ok")
    watcher.wait(lambda rs: rs and rs[-1].ok, "an ok report after recovery")

    reports = [r for r, _ in watcher.reports()]
    good = reports[-1]
    assert (good.slot, good.block, good.network) == (90_754_380, 3_590_825, "preview")
    assert good.tip_time == PREVIEW.time_of(90_754_380)
    assert all(r.slot is None and r.tip_time is None for r in reports if not r.ok)
    assert len({r.boot for r in reports}) == 1 and strictly_increasing([r.seq for r in reports])
    assert run.alive
    log = run.log()
    assert log.count("tip source command failing") == 1  # logged when it starts, not per report
    assert log.count("tip source command recovered") == 1
    assert run.terminate() == 0


@pytest.mark.broker
def test_cardano_cli_source_end_to_end(broker, start_publisher, watch, tmp_path):
    node = "bp3"
    broker.clear_retained(Topics(broker.prefix).tip(broker.pool, node))
    cli = tmp_path / "cardano-cli"
    cli.write_text(f"#!/bin/sh\ncat {shlex.quote(str(FIXTURES / 'tip_preprod_conway.json'))}\n")
    cli.chmod(0o755)
    node_socket = tmp_path / "node.socket"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(node_socket))
    try:
        watcher = watch(broker, node)
        run = start_publisher(
            broker,
            node,
            BPF_PUBLISHER__SOURCE="cardano-cli",
            BPF_PUBLISHER__CARDANO_CLI=str(cli),
            BPF_PUBLISHER__SOCKET_PATH=str(node_socket),
            BPF_PUBLISHER__NETWORK="preprod",
        )
        watcher.wait(lambda rs: len(rs) >= 2, "2 reports")
        for r in watcher.live():
            assert r.ok and r.source == "cardano-cli" and r.network == "preprod"
            assert (r.slot, r.block, r.epoch) == (84_316_455, 3_206_582, 198)
            assert r.tip_time == 1_655_683_200 + 84_316_455
        assert run.terminate() == 0
    finally:
        listener.close()


@pytest.mark.broker
def test_refused_credentials_exit_1_with_one_line(broker, start_publisher):
    run = start_publisher(broker, "bp1", BPF_MQTT__PASSWORD="wrong-password")
    assert run.proc.wait(15) == 1
    errors = [line for line in run.log().splitlines() if " ERROR " in line]
    assert errors and "refused connection" in errors[-1]
    assert "Traceback" not in run.log()


# --- in process, no broker needed -------------------------------------------------------------


def test_a_source_that_raises_unexpectedly_gives_ok_false_not_a_crash(tmp_path):
    config_file = tmp_path / "node.toml"
    config_file.write_text(
        '[mqtt]\nhost = "127.0.0.1"\nport = 1\ntls = false\n'
        '[pool]\nid = "pool1"\n[node]\nname = "bp1"\n[publisher]\nsource = "simulate"\n'
    )
    publisher = Publisher(load_config(config_file))  # the link is never started: nothing is sent

    class Broken:
        name = "simulate"

        def sample(self) -> object:
            raise KeyError("slot")

    publisher.source = Broken()  # type: ignore[assignment]
    report = publisher.tick()
    assert report.ok is False and report.error == "internal error reading the tip: KeyError('slot')"
    assert isinstance(publisher.latest, SourceError)
    assert publisher.published == 0
