"""Seeing the node's forging state: real log lines and metric expositions (fixtures), the rule
that says when the metric counts, and a log file followed as it grows and rotates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bpfailover.actuator.observe import (
    LOG_TAIL,
    MAX_BODY,
    METRICS_TIMEOUT,
    ForgingObserver,
    LogProbe,
    MetricsProbe,
    Sight,
    read_log_line,
    read_log_lines,
    read_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_lines(name: str) -> list[str]:
    lines = (FIXTURES / name).read_text().splitlines()
    assert lines[0].startswith("# fixture source: "), "every fixture names its public source first"
    return lines[1:]


def test_a_node_started_without_keys_logs_that_it_does_not_forge() -> None:
    lines = fixture_lines("node_log_startup_disabling_9.1.log")
    assert read_log_lines(lines) == Sight(forging=False, up=True)


def test_enabling_is_forging_and_a_reconfiguration_error_changes_nothing() -> None:
    enabling, error = fixture_lines("node_log_enabling_8.7.log")
    assert read_log_line(enabling) == Sight(forging=True, up=True)
    assert read_log_line(error) is None  # "not reconfigured": forging stays as it was
    assert read_log_lines([enabling, error]) == Sight(forging=True, up=True)


def test_a_sighup_during_the_replay_is_ignored_in_both_log_formats() -> None:
    verdicts = [read_log_line(line) for line in fixture_lines("node_log_replay_sighup.log")]
    seen = [v for v in verdicts if v is not None]
    ignored = Sight(forging=None, up=False, ignored=True)
    assert seen == [
        ignored,  # text: "not effective until consensus has started"
        ignored,  # JSON: "enabled":"NotEffective"
        Sight(forging=False, up=True),  # JSON DisabledBlockForging
        Sight(forging=True, up=True),  # JSON EnabledBlockForging
    ]


def test_the_metric_of_a_node_started_non_producing_says_1_and_is_read_raw() -> None:
    sight = read_metrics("\n".join(fixture_lines("metrics_non_producing_start_11.0.1.prom")))
    assert (sight.forging, sight.up) == (True, True)
    assert sight.start == "2026-05-08 09:42:06.833856949 UTC"


def test_a_replaying_node_is_not_up_whatever_its_gauge_says() -> None:
    sight = read_metrics("\n".join(fixture_lines("metrics_replaying_new_tracing.prom")))
    assert (sight.forging, sight.up) == (False, False)


def test_every_publisher_exposition_is_read_with_its_forging_gauge() -> None:
    found = {}
    for path in sorted((Path(__file__).parents[1] / "publisher" / "fixtures").glob("*.prom")):
        found[path.name] = read_metrics(path.read_text()).forging
    assert found["metrics_legacy_producer.prom"] is True
    assert found["metrics_new_tracing_relay.prom"] is False
    assert found["metrics_tracer_nosuffix.prom"] is True


class Exposition:
    """A fake /metrics endpoint whose text the test sets."""

    def __init__(self) -> None:
        self.text = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.text.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, *, forging: int, slot: bool = True, start: str = "t1", replay: float = 100.0) -> None:
        lines = [
            f'cardano_node_metrics_basicInfo{{nodeStartTime="{start}"}} 1',
            f"cardano_node_metrics_forging_enabled_int {forging}",
            f"cardano_node_metrics_blockReplayProgress_real {replay}",
        ]
        if slot:
            lines.append("cardano_node_metrics_slotNum_int 90754380")
        self.text = "\n".join(lines) + "\n"


@pytest.fixture
def exposition() -> Iterator[Exposition]:
    served = Exposition()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_a_sighup_node_metric_counts_only_after_a_sighup_that_reached_it_while_up(
    exposition: Exposition,
) -> None:
    observer = ForgingObserver(MetricsProbe(exposition.url), None, needs_sighup=True)
    exposition.set(forging=1)  # the non-producing start: 1, although it does not forge
    seen = observer.look()
    assert (seen.forging, seen.untested, seen.up) == (None, True, True)
    observer.before_sighup()
    observer.after_sighup()
    exposition.set(forging=0)
    assert observer.look().forging is False
    exposition.set(forging=1, start="t2")  # the node restarted: untested again
    assert observer.look().forging is None


def test_a_sighup_sent_during_the_replay_does_not_make_the_metric_count(exposition: Exposition) -> None:
    observer = ForgingObserver(MetricsProbe(exposition.url), None, needs_sighup=True)
    exposition.set(forging=0, slot=False, replay=42.5)
    observer.before_sighup()
    exposition.set(forging=0)  # the replay ends between the signal and any look after it
    observer.after_sighup()
    exposition.set(forging=0, slot=False, replay=42.5)
    seen = observer.look()
    assert (seen.forging, seen.up) == (None, False)  # replaying: unknown, never "not forging"
    exposition.set(forging=0)  # replay over; the 0 is NotEffective's, not the truth
    assert observer.look().untested


def test_env_swap_trusts_the_metric_once_the_node_is_up(exposition: Exposition) -> None:
    observer = ForgingObserver(MetricsProbe(exposition.url), None, needs_sighup=False)
    exposition.set(forging=1, slot=False, replay=10.0)
    assert observer.look().forging is None
    exposition.set(forging=1)
    assert observer.look().forging is True


def test_an_unreachable_endpoint_is_unknown_with_the_reason() -> None:
    observer = ForgingObserver(MetricsProbe("http://127.0.0.1:9/metrics"), None, needs_sighup=False)
    seen = observer.look()
    assert seen.forging is None and seen.error is not None and "127.0.0.1:9" in seen.error


def test_the_log_is_followed_as_it_grows_and_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    disabled, enabled = (
        fixture_lines("node_log_startup_disabling_9.1.log")[0],
        fixture_lines("node_log_enabling_8.7.log")[0],
    )
    path.write_text(disabled + "\n")
    probe = LogProbe(path)
    assert probe.look().forging is False  # an existing log's latest verdict counts
    with open(path, "a") as handle:
        handle.write(enabled[:40])  # half a line: not read yet
    assert probe.look().forging is False
    with open(path, "a") as handle:
        handle.write(enabled[40:] + "\n")
    assert probe.look().forging is True
    path.rename(tmp_path / "node.log.1")
    path.write_text(disabled + "\n")
    assert probe.look().forging is False


def test_log_and_metrics_that_disagree_count_as_forging(exposition: Exposition, tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_text(fixture_lines("node_log_startup_disabling_9.1.log")[0] + "\n")
    exposition.set(forging=1)
    observer = ForgingObserver(MetricsProbe(exposition.url), LogProbe(path), needs_sighup=False)
    assert observer.look().forging is True


class Trickle:
    """A /metrics endpoint that announces a body and then sends it one byte at a time, slowly
    (a hung or hostile exporter): each read gets a byte before the socket timeout."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while not outer.stop.wait(0.1):
                    try:
                        self.wfile.write(b"#")
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def timed_look(probe: MetricsProbe, within: float) -> Sight:
    """``probe.look()``, asserted to return within ``within`` seconds (it runs the actuator's loop)."""
    seen: list[Sight] = []
    looking = threading.Thread(target=lambda: seen.append(probe.look()), daemon=True)
    looking.start()
    looking.join(within)
    assert seen, f"a look at the metrics held the actuator's loop for more than {within:g}s"
    return seen[0]


def test_an_endpoint_that_trickles_its_answer_is_given_up_on_in_bounded_time() -> None:
    trickle = Trickle()
    try:
        probe = MetricsProbe(trickle.url)
        seen = timed_look(probe, within=METRICS_TIMEOUT + 2.0)
        assert seen.forging is None and seen.error is not None and trickle.url in seen.error
        again = timed_look(probe, within=METRICS_TIMEOUT + 2.0)  # still unanswered: no second fetch piles up
        assert again.forging is None and again.error is not None
    finally:
        trickle.stop.set()
        trickle.server.shutdown()
        trickle.server.server_close()


def test_a_body_of_garbage_up_to_the_size_limit_is_read_in_bounded_time(exposition: Exposition) -> None:
    exposition.set(forging=1)
    garbage = "!!\n" * ((MAX_BODY - len(exposition.text)) // 3)
    exposition.text = garbage + exposition.text
    seen = timed_look(MetricsProbe(exposition.url), within=METRICS_TIMEOUT + 2.0)
    assert (seen.forging, seen.up, seen.error) == (True, True, None)


def test_wrong_types_and_nan_in_the_exposition_say_nothing() -> None:
    text = (
        "cardano_node_metrics_forging_enabled_int yes\n"
        "cardano_node_metrics_forging_enabled_int NaN\n"
        "cardano_node_metrics_slotNum_int NaN\n"
        'cardano_node_metrics_basicInfo{nodeStartTime="t1"} "x"\n'
    )
    assert read_metrics(text) == Sight(forging=None, up=False, start=None)


def test_a_log_without_line_ends_is_held_to_one_tail_and_read_on(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_text("")
    probe = LogProbe(path)
    probe.look()
    for _ in range(8):  # e.g. node_log pointed at a file that is not a text log
        with open(path, "ab") as handle:
            handle.write(b"\0" * LOG_TAIL)
        probe.look()
        assert len(probe._partial) <= LOG_TAIL, "what is held of an unfinished line grows without end"
    with open(path, "a") as handle:
        handle.write("\n" + fixture_lines("node_log_enabling_8.7.log")[0] + "\n")
    assert probe.look().forging is True


def test_a_node_restart_seen_in_the_metrics_ends_the_log_verdict_of_its_last_run(
    exposition: Exposition, tmp_path: Path
) -> None:
    path = tmp_path / "node.log"
    path.write_text(fixture_lines("node_log_enabling_8.7.log")[0] + "\n")
    observer = ForgingObserver(MetricsProbe(exposition.url), LogProbe(path), needs_sighup=True)
    exposition.set(forging=1, start="t1")
    observer.before_sighup()
    observer.after_sighup()
    path.write_text(path.read_text() + fixture_lines("node_log_enabling_8.7.log")[0] + "\n")
    assert observer.look().forging is True
    exposition.set(forging=1, start="t2")  # restarted (not by the actuator) non-producing: 1, untested
    seen = observer.look()
    assert seen.forging is None and seen.untested, "the last run's 'Enabling' line still counted"
