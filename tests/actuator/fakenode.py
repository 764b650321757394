"""A stand-in cardano-node for the sighup tests: it forges (in name), answers SIGHUP as the real
node does, logs its real lines and serves its real metric names.

    python -m tests.actuator.fakenode DIR KES VRF OPCERT [--keys-at-start] [--metric-bug]

In ``DIR`` it writes ``node.pid``, ``port`` (its /metrics port) and ``node.log``; it replays its
ledger while ``DIR/replaying`` exists. What it does is cardano-node's behaviour as its sources
say (``Cardano/Node/Tracing/Tracers/Startup.hs``, ``Run.hs``):

- a SIGHUP during the replay is ignored: "not effective until consensus has started", and the
  ``forging_enabled`` gauge reads 0; when the replay ends it forges from the keys it loaded at
  start (``--keys-at-start``);
- after the replay, a SIGHUP with all three key files present enables forging, with one of them
  missing disables it;
- ``--metric-bug``: the gauge reads 1 from the start until the first SIGHUP, whatever it does
  (cardano-node issues #6113 and #6576, a node started with the non-producing flag).

``DIR/forging`` holds what it really does ("1" forging, "0" not), for the tests to check.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STARTED = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
PREFIX = "Performing block forging reconfiguration: "
LINES = {
    "enabled": PREFIX + "Enabling block forging. To disable it please move/rename/remove the credentials "
    "files and then trigger reconfiguration via SIGHUP signal.",
    "disabled": PREFIX + "Disabling block forging, to enable it please make the credentials files "
    "available again and then re-trigger reconfiguration via SIGHUP signal.",
    "ignored": PREFIX + "Changing block forging is not effective until consensus has started. ",
}


class FakeNode:
    def __init__(self, folder: Path, keys: list[Path], keys_at_start: bool, metric_bug: bool) -> None:
        self.folder = folder
        self.keys = keys
        self.lock = threading.RLock()  # the SIGHUP handler runs on the main thread, maybe inside step()
        self.loaded_at_start = keys_at_start and all(k.exists() for k in keys)
        self.forging = False  # nothing forges during the replay
        self.gauge = 1 if metric_bug else int(self.loaded_at_start)
        self.replay_done = False
        self.slot = 100_000_000

    @property
    def replaying(self) -> bool:
        return (self.folder / "replaying").exists()

    def log(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-4]
        with open(self.folder / "node.log", "a") as handle:
            handle.write(f"[fakenode:cardano.node.startup:Info:5] [{stamp} UTC] {text}\n")

    def end_replay(self) -> None:
        """Consensus starts once the replay is over, with the keys read at start."""
        if not self.replay_done and not self.replaying:
            self.replay_done = True
            self.forging = self.loaded_at_start

    def on_hup(self, _signum: int, _frame: object) -> None:
        with self.lock:
            self.end_replay()  # (the real node handles forging SIGHUPs only after that)
            if self.replaying:
                self.gauge = 0  # NotEffective sets the gauge to 0; nothing changes
                self.log(LINES["ignored"])
            elif all(k.exists() for k in self.keys):
                self.forging, self.gauge = True, 1
                self.log(LINES["enabled"])
            else:
                self.forging, self.gauge = False, 0
                self.log(LINES["disabled"])
            self.save()

    def step(self) -> None:
        with self.lock:
            self.end_replay()
            self.slot += 1
            self.save()

    def save(self) -> None:
        (self.folder / "forging.tmp").write_text("1" if self.forging else "0")
        os.replace(self.folder / "forging.tmp", self.folder / "forging")

    def metrics(self) -> str:
        with self.lock:
            lines = [
                f'cardano_node_metrics_basicInfo{{nodeStartTime="{STARTED}"}} 1',
                f"cardano_node_metrics_forging_enabled {self.gauge}",
            ]
            if self.replaying:
                lines.append("cardano_node_metrics_blockReplayProgress_real 42.5")
            else:
                lines.append("cardano_node_metrics_blockReplayProgress_real 99.99842036696386")
                lines.append(f"cardano_node_metrics_slotNum_int {self.slot}")
        return "\n".join(lines) + "\n"


def serve(node: FakeNode) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = node.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("keys", type=Path, nargs=3)
    parser.add_argument("--keys-at-start", action="store_true")
    parser.add_argument("--metric-bug", action="store_true")
    args = parser.parse_args()
    node = FakeNode(args.folder, args.keys, args.keys_at_start, args.metric_bug)
    signal.signal(signal.SIGHUP, node.on_hup)
    server = serve(node)
    node.save()
    (args.folder / "port").write_text(str(server.server_address[1]))
    (args.folder / "node.pid.tmp").write_text(str(os.getpid()))
    os.replace(args.folder / "node.pid.tmp", args.folder / "node.pid")
    while True:
        node.step()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
