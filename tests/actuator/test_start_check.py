"""``bpfailover config check`` warns where it can tell that SIGHUP could never promote the node,
or that a sighup change cannot be confirmed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfailover.actuator.start_check import script_warnings
from bpfailover.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
OWN_SCRIPT = """#!/bin/sh
exec cardano-node run --config config.json --topology topology.json --database-path db \\
  --shelley-kes-key /keys/kes.skey --shelley-vrf-key /keys/vrf.skey \\
  --shelley-operational-certificate /keys/node.cert --start-as-non-producing-node
"""


def node_file(tmp_path: Path, extra: str = "") -> Path:
    keys = tmp_path / "keys"
    store = tmp_path / "key-store"
    keys.mkdir(exist_ok=True)
    store.mkdir(exist_ok=True)
    config = tmp_path / "bp1.actuator.toml"
    config.write_text(
        f"""
[mqtt]
tls = false
[pool]
id = "pool1"
[node]
name = "bp1"
[actuator]
method = "sighup"
state_dir = "state"
kes_key = "{keys}/kes.skey"
vrf_key = "{keys}/vrf.skey"
opcert = "{keys}/node.cert"
key_store = "{store}"
sighup_command = "true"
{extra}
"""
    )
    return config


def warnings_of(config: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["config", "check", "-c", str(config)]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]


def test_a_sighup_node_without_an_observation_source_cannot_be_confirmed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keys").mkdir()
    for name in ("kes.skey", "vrf.skey", "node.cert"):
        (tmp_path / "keys" / name).write_text("k")
    found = warnings_of(node_file(tmp_path), capsys)
    assert any("cannot be confirmed" in w and "forging: null" in w for w in found)
    found = warnings_of(node_file(tmp_path, 'metrics_url = "http://127.0.0.1:12798/metrics"'), capsys)
    assert not any("cannot be confirmed" in w for w in found)


def test_keys_missing_from_both_places_mean_no_promotion_ever(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = warnings_of(node_file(tmp_path, 'node_log = "node.log"'), capsys)
    assert any("none of the key files" in w and "can never be promoted" in w for w in found)


def test_guilds_cnode_sh_is_named_as_the_reason_sighup_could_never_promote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = FIXTURES / "guild_cnode_2025.sh"
    assert script.read_text().startswith("# fixture source: ")
    found = warnings_of(node_file(tmp_path, f'start_script = "{script}"'), capsys)
    assert any("guild's cnode.sh" in w and "all three key files" in w for w in found)
    assert any("--start-as-non-producing-node (node 10.5+) nor --non-producing-node" in w for w in found)


def test_guilds_env_with_pool_name_unset_starts_the_node_without_key_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = FIXTURES / "guild_env_2025-11.sh"
    found = warnings_of(node_file(tmp_path, f'env_file = "{env}"'), capsys)
    assert any("leaves POOL_NAME unset" in w for w in found)


def test_a_start_script_with_key_paths_and_the_flag_passes_and_one_without_does_not() -> None:
    assert script_warnings(OWN_SCRIPT, "s") == []
    old = OWN_SCRIPT.replace("--start-as-non-producing-node", "--non-producing-node")
    assert script_warnings(old, "s") == []  # the spelling of nodes up to 10.4.x
    bare = OWN_SCRIPT.replace("--shelley-kes-key /keys/kes.skey ", "")
    assert any("passes no --shelley-kes-key" in w for w in script_warnings(bare, "s"))
