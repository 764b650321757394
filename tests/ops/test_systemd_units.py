"""The systemd units in deploy/systemd: real CLI commands, restart policy, no fake watchdog."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfailover.cli import build_parser

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
EXPECTED = {
    "bpfailover-publisher@.service": "publisher",
    "bpfailover-actuator@.service": "actuator",
    "bpfailover-decider.service": "decider",
}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_unit_runs_a_real_subcommand_and_always_restarts(name: str) -> None:
    u = unit(name)
    argv = shlex.split(u["Service"]["ExecStart"])
    assert Path(argv[0]).name == "bpfailover"
    args = build_parser().parse_args(argv[1:])
    assert args.command == EXPECTED[name]
    if name.endswith("@.service"):  # one instance per node: the bundle's nodes/<node>.toml
        assert args.config == "/etc/bpfailover/nodes/%i.toml"
    else:
        assert args.config == "/var/lib/bpfailover/pool/decider.toml"
    assert u["Service"]["Restart"] == "always"
    if name != "bpfailover-publisher@.service":  # the safety services never stop restarting
        assert u["Unit"]["StartLimitIntervalSec"] == "0"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_actuator_restarts_fast_and_has_no_watchdog_it_cannot_feed() -> None:
    service = unit("bpfailover-actuator@.service")["Service"]
    assert float(service["RestartSec"]) <= 2
    # WatchdogSec needs sd_notify(WATCHDOG=1) from the process; the actuator sends none.
    assert "WatchdogSec" not in service
    assert service["StateDirectory"] == "bpfailover"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_systemd_analyze_finds_nothing_but_the_missing_binary(name: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(UNITS / name)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stderr + result.stdout).splitlines()
        if line.strip()
        and "is not executable" not in line
        and "/opt/bpfailover/venv/bin/bpfailover" not in line
    ]
    assert problems == []
