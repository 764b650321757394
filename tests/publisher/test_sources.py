"""Each tip source against realistic fixtures, and each way it can fail."""

from __future__ import annotations

import contextlib
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bpfailover.publisher.chain import MAINNET, PREPROD, PREVIEW, chain_for
from bpfailover.publisher.sources import SourceError, make_source
from bpfailover.publisher.sources.cardano_cli import SOCKET_ENV, CardanoCliSource
from bpfailover.publisher.sources.command import CommandSource
from bpfailover.publisher.sources.prometheus import PrometheusSource, canonical, parse_metrics
from bpfailover.publisher.sources.simulate import SimulatedChain
from bpfailover.settings import ConfigError, PublisherSettings

FIXTURES = Path(__file__).parent / "fixtures"


# --- cardano-cli --------------------------------------------------------------------------------


@pytest.fixture
def node_socket(tmp_path: Path) -> Iterator[Path]:
    """A real listening unix socket where cardano-node's would be."""
    path = tmp_path / "node.socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    yield path
    sock.close()


def fake_cli(tmp_path: Path, body: str) -> tuple[Path, Path]:
    """A ``cardano-cli`` stand-in that records its arguments and runs ``body``."""
    args_file = tmp_path / "cli-args"
    script = tmp_path / "cardano-cli"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {shlex.quote(str(args_file))}\n{body}\n")
    script.chmod(0o755)
    return script, args_file


def cat(fixture: str) -> str:
    return f"cat {shlex.quote(str(FIXTURES / fixture))}"


@pytest.mark.parametrize(
    ("chain", "fixture", "network_args", "slot", "block", "epoch"),
    [
        (PREVIEW, "tip_preview_conway.json", ["--testnet-magic", "2"], 90_754_380, 3_590_825, 1050),
        (PREPROD, "tip_preprod_conway.json", ["--testnet-magic", "1"], 84_316_455, 3_206_582, 198),
        (MAINNET, "tip_mainnet_mary.json", ["--mainnet"], 29_062_271, 5_698_710, 264),
    ],
)
def test_cardano_cli_runs_query_tip_for_the_network_and_parses_it(
    tmp_path, node_socket, chain, fixture, network_args, slot, block, epoch
):
    cli, args_file = fake_cli(tmp_path, cat(fixture))
    tip = CardanoCliSource(str(cli), chain, node_socket, timeout=5).sample()
    assert (tip.slot, tip.block, tip.epoch) == (slot, block, epoch)
    assert args_file.read_text().split() == ["query", "tip", *network_args, "--socket-path", str(node_socket)]


def test_cardano_cli_takes_the_socket_from_the_environment(tmp_path, node_socket, monkeypatch):
    cli, args_file = fake_cli(tmp_path, cat("tip_preview_conway.json"))
    monkeypatch.setenv(SOCKET_ENV, str(node_socket))
    tip = CardanoCliSource(str(cli), PREVIEW, None, timeout=5).sample()
    assert tip.slot == 90_754_380
    assert args_file.read_text().split()[-2:] == ["--socket-path", str(node_socket)]


def test_cardano_cli_without_any_socket_setting(tmp_path, monkeypatch):
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    cli, args_file = fake_cli(tmp_path, cat("tip_preview_conway.json"))
    with pytest.raises(SourceError, match=f"no node socket: set publisher.socket_path or {SOCKET_ENV}"):
        CardanoCliSource(str(cli), PREVIEW, None, timeout=5).sample()
    assert not args_file.exists()


def test_cardano_cli_missing_socket_is_reported_without_running_the_cli(tmp_path):
    cli, args_file = fake_cli(tmp_path, cat("tip_preview_conway.json"))
    missing = tmp_path / "gone.socket"
    with pytest.raises(
        SourceError, match=r"node socket .*gone.socket does not exist \(is cardano-node running\?\)"
    ):
        CardanoCliSource(str(cli), PREVIEW, missing, timeout=5).sample()
    assert not args_file.exists()


def test_cardano_cli_socket_path_that_is_a_plain_file(tmp_path):
    cli, _ = fake_cli(tmp_path, cat("tip_preview_conway.json"))
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(SourceError, match="is not a socket"):
        CardanoCliSource(str(cli), PREVIEW, plain, timeout=5).sample()


def test_cardano_cli_non_zero_exit_reports_its_first_stderr_line(tmp_path, node_socket):
    cli, _ = fake_cli(
        tmp_path,
        "echo 'cardano-cli: Network.Socket.connect: <socket: 11>: does not exist (Connection refused)' >&2\n"
        "echo 'second line' >&2\nexit 1",
    )
    with pytest.raises(SourceError) as caught:
        CardanoCliSource(str(cli), PREVIEW, node_socket, timeout=5).sample()
    assert str(caught.value) == (
        "cardano-cli query tip failed (exit 1): "
        "cardano-cli: Network.Socket.connect: <socket: 11>: does not exist (Connection refused)"
    )


def test_cardano_cli_garbage_output(tmp_path, node_socket):
    cli, _ = fake_cli(tmp_path, "echo 'Invalid option --mainet'\nexit 0")
    with pytest.raises(SourceError, match=r"^cardano-cli output is not JSON: 'Invalid option --mainet'$"):
        CardanoCliSource(str(cli), PREVIEW, node_socket, timeout=5).sample()


def test_cardano_cli_that_hangs_is_killed_at_the_timeout_with_its_children(tmp_path, node_socket):
    cli, _ = fake_cli(tmp_path, "sleep 30 &\nsleep 30")
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"^cardano-cli query tip did not answer within 0.3s$"):
        CardanoCliSource(str(cli), PREVIEW, node_socket, timeout=0.3).sample()
    assert time.monotonic() - started < 3


def test_cardano_cli_binary_not_found(node_socket):
    source = CardanoCliSource("/nonexistent/cardano-cli", PREVIEW, node_socket, timeout=5)
    with pytest.raises(SourceError, match="command not found: /nonexistent/cardano-cli"):
        source.sample()


def test_cardano_cli_custom_network_needs_a_magic():
    chain = chain_for(PublisherSettings(network="custom", slot_offset=0))
    with pytest.raises(ConfigError, match="testnet_magic"):
        CardanoCliSource("cardano-cli", chain, None, timeout=5)


# --- command ------------------------------------------------------------------------------------


def test_command_source_runs_a_shell_command_printing_tip_json(tmp_path):
    tip = CommandSource(f"{cat('tip_preprod_conway.json')} | cat", timeout=5).sample()
    assert (tip.slot, tip.block, tip.epoch) == (84_316_455, 3_206_582, 198)


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (
            "echo '<html>502 Bad Gateway</html>'",
            "tip command output is not JSON: '<html>502 Bad Gateway</html>'",
        ),
        ("exit 3", "tip command failed (exit 3): no message"),
        ("echo boom >&2; exit 2", "tip command failed (exit 2): boom"),
        ("kill -9 $$", "tip command failed (killed by signal 9): no message"),
        ("true", "tip command output is empty"),
        ("sleep 5", "tip command did not answer within 0.3s"),
    ],
)
def test_command_source_failures(command, reason):
    with pytest.raises(SourceError) as caught:
        CommandSource(command, timeout=0.3).sample()
    assert str(caught.value) == reason


# --- prometheus ---------------------------------------------------------------------------------


class MetricsServer:
    """A local HTTP endpoint serving whatever exposition the test sets."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.delay = 0.0
        self.trickle = 0.0  # seconds between the body's bytes, each sent on its own
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (timeout test)
                    if not outer.trickle:
                        self.wfile.write(outer.body)
                    for i in range(len(outer.body) if outer.trickle else 0):
                        self.wfile.write(outer.body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(outer.trickle)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def serve(self, fixture: str) -> None:
        self.body = (FIXTURES / fixture).read_bytes()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metrics() -> Iterator[MetricsServer]:
    server = MetricsServer()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "metrics_legacy_producer.prom",
            {"slot": 126_665_631, "block": 10_438_546, "epoch": 490, "forging": True, "kes": 45, "peers": 3},
        ),
        (
            "metrics_new_tracing_relay.prom",
            {
                "slot": 90_754_380,
                "block": 3_590_825,
                "epoch": 1050,
                "forging": False,
                "kes": None,
                "peers": 21,
            },
        ),
        (
            "metrics_tracer_nosuffix.prom",
            {"slot": 84_316_455, "block": 3_206_582, "epoch": 198, "forging": True, "kes": 58, "peers": 4},
        ),
    ],
)
def test_prometheus_reads_tip_forging_kes_and_peers_over_http(metrics, fixture, expected):
    metrics.serve(fixture)
    tip = PrometheusSource(metrics.url, timeout=5).sample()
    got = {
        "slot": tip.slot,
        "block": tip.block,
        "epoch": tip.epoch,
        "forging": tip.forging,
        "kes": tip.kes_periods_left,
        "peers": tip.peers,
    }
    assert got == expected
    assert tip.hash is None  # the metrics carry no block hash
    assert metrics.requests == ["/metrics"]


def test_prometheus_accepts_pre_1_25_names_and_counter_suffixes():
    tip = parse_metrics(
        "cardano_node_ChainDB_metrics_slotNum_int 16910651\n"
        "cardano_node_ChainDB_metrics_blockNum_int 5102089\n"
        "cardano_node_ChainDB_metrics_epoch_int 236\n"
        "cardano_node_Forge_metrics_remainingKESPeriods_int 61\n"
        "cardano_node_metrics_peerSelection_hot 7\n"
    )
    assert (tip.slot, tip.block, tip.epoch, tip.kes_periods_left, tip.peers) == (
        16_910_651,
        5_102_089,
        236,
        61,
        7,
    )
    assert canonical("cardano_node_metrics_txsProcessedNum_counter") == "txsprocessednum"
    assert canonical("cardano_node_metrics_density_real") == "density"
    assert canonical("slotNum_int") == canonical("slotNum") == "slotnum"


def test_prometheus_one_bad_line_does_not_hide_the_tip():
    tip = parse_metrics(
        "cardano_node_metrics_slotNum_int 90754380\n"
        "this line is { not prometheus\n"
        "cardano_node_metrics_blockNum_int 3\n"
    )
    assert (tip.slot, tip.block) == (90_754_380, 3)


def test_prometheus_node_without_slot_metric_yet(metrics):
    metrics.body = b"cardano_node_metrics_RTS_gcLiveBytes_int 1234\nrts_gc_num_gcs 3\n"
    with pytest.raises(SourceError, match="have no slotNum yet"):
        PrometheusSource(metrics.url, timeout=5).sample()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html><body>Not the metrics</body></html>", "hold no Prometheus samples"),
        (b"", "hold no Prometheus samples"),
        (b"cardano_node_metrics_slotNum_int -4\n", "slotNum is negative"),
        (b"cardano_node_metrics_slotNum_int 1.5\n", "slotNum is not a whole number"),
        (b"cardano_node_metrics_slotNum_int +Inf\n", "slotNum is not a whole number"),
    ],
)
def test_prometheus_garbage_bodies(metrics, body, reason):
    metrics.body = body
    with pytest.raises(SourceError, match=reason):
        PrometheusSource(metrics.url, timeout=5).sample()


def test_prometheus_http_error(metrics):
    metrics.status = 503
    metrics.body = b"unavailable"
    with pytest.raises(SourceError, match=r"metrics http://127.0.0.1:\d+/metrics: HTTP 503"):
        PrometheusSource(metrics.url, timeout=5).sample()


def test_prometheus_endpoint_down():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceError, match=r"unreachable: .*[Cc]onnection refused"):
        PrometheusSource(f"http://127.0.0.1:{port}/metrics", timeout=5).sample()


def test_prometheus_slow_endpoint_times_out(metrics):
    metrics.serve("metrics_legacy_producer.prom")
    metrics.delay = 2.0
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"did not answer within 0\.3s"):
        PrometheusSource(metrics.url, timeout=0.3).sample()
    assert time.monotonic() - started < 1.5


def test_prometheus_endpoint_that_trickles_its_answer_times_out(metrics):
    """Each byte comes well within the socket timeout, the whole answer never: the read is
    bounded as a whole, not per byte."""
    metrics.serve("metrics_legacy_producer.prom")
    metrics.trickle = 0.02
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"did not answer within 0\.3s"):
        PrometheusSource(metrics.url, timeout=0.3).sample()
    assert time.monotonic() - started < 1.5


# --- choosing a source --------------------------------------------------------------------------


def test_make_source_builds_the_configured_source(tmp_path):
    chain = chain_for(PublisherSettings())
    kinds = {
        "cardano-cli": CardanoCliSource,
        "prometheus": PrometheusSource,
        "simulate": SimulatedChain,
    }
    for name, kind in kinds.items():
        assert isinstance(make_source(PublisherSettings(source=name), chain, pool="p", node="n"), kind)
    command = make_source(PublisherSettings(source="command", command="true"), chain, pool="p", node="n")
    assert isinstance(command, CommandSource)
