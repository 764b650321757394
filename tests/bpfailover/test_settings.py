from __future__ import annotations

from pathlib import Path

import pytest

from bpfailover.cli import main
from bpfailover.durations import parse_duration
from bpfailover.settings import ConfigError, load_config


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("45", 45.0),
        (" 2m ", 120.0),
    ],
)
def test_durations(given: object, seconds: float) -> None:
    assert parse_duration(given) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "m5", "", "-3", True, None, "5x"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_toml_is_loaded_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[mqtt]\nca_file = "broker/ca.crt"\n[decider]\nstale_after = "5m"\n'
        '[[pools]]\nid = "pool1"\nnodes = [{ name = "bp1", priority = 10 }, "bp2"]\n',
    )
    config = load_config(path)
    assert config.mqtt.ca_file == tmp_path / "broker" / "ca.crt"
    assert config.decider.stale_after == 300.0
    assert [n.name for n in config.pools[0].nodes] == ["bp1", "bp2"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[decider]\nstale_after = "5m"\n[publisher]\nsource = "cardano-cli"\n')
    monkeypatch.setenv("BPF_DECIDER__STALE_AFTER", "5")
    monkeypatch.setenv("BPF_PUBLISHER__SOURCE", "simulate")
    monkeypatch.setenv("BPF_ACTUATOR__ENV_FILE", "/opt/cardano/cnode/scripts/env")
    config = load_config(path)
    assert config.decider.stale_after == 5.0
    assert config.publisher.source == "simulate"
    assert str(config.actuator.env_file) == "/opt/cardano/cnode/scripts/env"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[decider]\nstale_after = "soon"\n', "decider.stale_after"),
        ("[decider]\nstale_aftr = 3\n", "decider.stale_aftr"),
        ("[mqtt]\nport = 99999\n", "mqtt.port"),
        ('[node]\nname = "BP1"\n', "node.name"),
        ('[publisher]\nsource = "carrier-pigeon"\n', "publisher.source"),
        ('[[pools]]\nid = "p"\nnodes = ["a", "a"]\n', "pools.0"),
    ],
)
def test_errors_name_the_key_in_one_line(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert key in message
    assert "\n" not in message


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[mqtt\nhost="))
    assert "not valid TOML" in str(err.value)


def test_config_check_masks_secrets_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[mqtt]\nusername = "bp1"\npassword = "hunter2hunter2"\n[node]\nname = "bp1"\n')
    assert main(["config", "check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2hunter2" not in out
    assert 'username = "bp1"' in out


def test_config_check_fails_on_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[decider]\nrise = 0\n")
    assert main(["config", "check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "decider.rise" in err
    assert len(err.strip().splitlines()) == 1
