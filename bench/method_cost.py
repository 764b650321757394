"""What a role change costs with each method, measured against the test fakes.

    python -m bench.method_cost [--rounds 10]

- sighup: the stand-in cardano-node of the tests (``tests.actuator.fakenode``, which answers
  SIGHUP as the real node does and serves the real metric names): from the start of
  ``apply`` (keys moved, SIGHUP sent) until the node is *seen* forging / not forging on its
  metrics endpoint, which is when the actuator reports the role applied.
- env-swap: from the start of ``apply`` until ``restart_command`` has returned, with a restart
  command that returns at once. That is only the actuator's share: the node then replays its
  ledger, which takes minutes on mainnet (not measurable here; see docs/install.md), and it
  forges nothing until the replay ends.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bpfailover.actuator.methods import build_method
from bpfailover.settings import ActuatorSettings

ROOT = Path(__file__).parents[1]


def timed(step: Callable[[], None]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def wait_for(check: Callable[[], bool], seconds: float) -> None:
    until = time.monotonic() + seconds
    while not check():
        if time.monotonic() > until:
            raise SystemExit("the fake node did not start")
        time.sleep(0.02)


def sighup_rounds(work: Path, rounds: int) -> dict[str, list[float]]:
    node, keys_dir, store = work / "node", work / "keys", work / "key-store"
    for folder in (node, keys_dir, store):
        folder.mkdir()
    keys = [keys_dir / "kes.skey", keys_dir / "vrf.skey", keys_dir / "node.opcert"]
    for key in keys:
        key.write_text("k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.actuator.fakenode", str(node), *map(str, keys), "--keys-at-start"],
        cwd=ROOT,
    )
    try:
        wait_for(lambda: (node / "port").exists() and (node / "node.pid").exists(), 10)
        settings = ActuatorSettings(
            method="sighup",
            kes_key=keys[0],
            vrf_key=keys[1],
            opcert=keys[2],
            key_store=store,
            pid_file=node / "node.pid",
            metrics_url=f"http://127.0.0.1:{(node / 'port').read_text()}/metrics",
            state_dir=work / "state",
            apply_timeout=10.0,
        )
        method = build_method(settings)
        times: dict[str, list[float]] = {"relay": [], "producer": []}
        for _ in range(rounds):
            times["relay"].append(timed(lambda: method.apply("relay")))
            times["producer"].append(timed(lambda: method.apply("producer")))
        return times
    finally:
        proc.kill()
        proc.wait()


def env_swap_rounds(work: Path, rounds: int) -> dict[str, list[float]]:
    env, producer, relay = work / "env", work / "env.producer", work / "env.relay"
    producer.write_text('POOL_NAME="pool1"\n')
    relay.write_text('#POOL_NAME=""\n')
    env.write_text(relay.read_text())
    settings = ActuatorSettings(
        method="env-swap",
        env_file=env,
        producer_env=producer,
        relay_env=relay,
        restart_command="true",
        state_dir=work / "state",
    )
    method = build_method(settings)
    times: dict[str, list[float]] = {"relay": [], "producer": []}
    for _ in range(rounds):
        times["producer"].append(timed(lambda: method.apply("producer")))
        times["relay"].append(timed(lambda: method.apply("relay")))
    return times


def line(what: str, values: list[float]) -> str:
    return (
        f"{what:<34} median {statistics.median(values) * 1000:7.1f} ms   "
        f"max {max(values) * 1000:7.1f} ms   ({len(values)} rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "s").mkdir()
        (work / "e").mkdir()
        sighup = sighup_rounds(work / "s", args.rounds)
        env = env_swap_rounds(work / "e", args.rounds)
    print(line("sighup: command -> seen relay", sighup["relay"]))
    print(line("sighup: command -> seen producer", sighup["producer"]))
    print(line("env-swap: command -> restart issued", env["producer"] + env["relay"]))
    print("env-swap: + the node's restart and ledger replay (minutes on mainnet), forging nothing")


if __name__ == "__main__":
    main()
