"""The systemd units in deploy/systemd: real CLI commands, restart policy, a watchdog the actuator feeds."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfailover.actuator.service import TICK
from bpfailover.actuator.watchdog import UNIT_RESTART_SEC, UNIT_TIMEOUT_ABORT_SEC, watchdog_restart_bound
from bpfailover.cli import build_parser
from bpfailover.durations import parse_duration
from bpfailover.protocol.fence import effective_fence_after
from bpfailover.settings import ActuatorSettings, MqttSettings

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
BINARY = "/opt/bpfailover/venv/bin/bpfailover"
BINDSTO_DROP_IN = "cnode-bindsto-actuator.conf"
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
    if name.endswith("@.service"):  # one instance per node, each service its own file and broker user
        assert args.config == f"/etc/bpfailover/nodes/%i.{EXPECTED[name]}.toml"
    else:
        assert args.config == "/var/lib/bpfailover/pool/decider.toml"
    assert u["Service"]["Restart"] == "always"
    if name != "bpfailover-publisher@.service":  # the safety services never stop restarting
        assert u["Unit"]["StartLimitIntervalSec"] == "0"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_actuator_restarts_fast() -> None:
    service = unit("bpfailover-actuator@.service")["Service"]
    assert parse_duration(service["RestartSec"]) == UNIT_RESTART_SEC <= 2
    assert service["StateDirectory"] == "bpfailover"


def test_actuator_unit_has_a_watchdog_well_inside_the_default_fence_wait() -> None:
    service = unit("bpfailover-actuator@.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    watchdog = parse_duration(service["WatchdogSec"])
    abort = parse_duration(service["TimeoutAbortSec"])
    assert abort == UNIT_TIMEOUT_ABORT_SEC
    fence_wait = effective_fence_after(
        ActuatorSettings().fence_after, MqttSettings.model_fields["keepalive"].default
    )
    # A hung actuator is replaced within half the default fence wait (120 s): the advertised
    # fence time grows by this bound, and stays far from 2x what it was.
    restart_bound = watchdog_restart_bound(watchdog, parse_duration(service["RestartSec"]), abort)
    assert restart_bound <= fence_wait / 2
    # A healthy loop pings every watchdog/2 and checks its fence every TICK: at least 5 s of slack
    # for a late iteration (a slow state-file fsync, a starved CPU) before systemd kills it.
    assert watchdog / 2 - TICK >= 5


def test_bindsto_drop_in_binds_cnode_to_one_actuator_instance_and_starts_after_it() -> None:
    drop_in = unit(BINDSTO_DROP_IN)
    assert set(drop_in.sections()) == {"Unit"}
    bound = drop_in["Unit"]["BindsTo"]
    assert bound.startswith("bpfailover-actuator@") and bound.endswith(".service")
    assert "%i" not in bound  # cnode.service is not a template: the node must be named
    assert drop_in["Unit"]["After"] == bound


def verify(paths: list[Path]) -> list[str]:
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    return [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]


def installable_copy(name: str, folder: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here: /opt/bpfailover is not installed,
    and systemd-analyze would report only that; every other complaint still shows."""
    true = shutil.which("true")
    assert true is not None
    copy = folder / name
    copy.write_text((UNITS / name).read_text().replace(BINARY, true))
    return copy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_systemd_analyze_verify_finds_nothing(name: str, tmp_path: Path) -> None:
    assert verify([installable_copy(name, tmp_path)]) == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_bindsto_drop_in(tmp_path: Path) -> None:
    installable_copy("bpfailover-actuator@.service", tmp_path)
    cnode = tmp_path / "cnode.service"
    cnode.write_text(
        f"[Unit]\nDescription=stand-in for cardano-node\n[Service]\nExecStart={shutil.which('true')}\n"
    )
    (tmp_path / "cnode.service.d").mkdir()
    shutil.copy(UNITS / BINDSTO_DROP_IN, tmp_path / "cnode.service.d" / "bindsto-actuator.conf")
    # The drop-in's BindsTo= must name a unit systemd-analyze can load from the same folder.
    assert verify([cnode]) == []
