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


def test_config_check_masks_secrets_and_exits_zero(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = bundle / "nodes" / "bp1.actuator.toml"
    password = load_config(path).mqtt.secret()
    assert password
    assert main(["config", "check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert password not in out
    assert 'username = "bp1-actuator"' in out


def test_config_check_fails_on_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[decider]\nrise = 0\n")
    assert main(["config", "check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "decider.rise" in err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    from bpfailover.broker.bundle import write_bundle

    write_bundle(tmp_path / "b", pool="pool1", nodes=["bp1", "bp2"], broker_port=18883)
    return tmp_path / "b"


@pytest.mark.parametrize(
    "name",
    ["decider.toml", "operator.toml", "monitor.toml", "nodes/bp1.publisher.toml", "nodes/bp1.actuator.toml"],
)
def test_config_check_accepts_every_bundle_file(bundle: Path, name: str) -> None:
    assert main(["config", "check", "-c", str(bundle / name)]) == 0


def test_config_check_of_a_split_node_file_checks_its_own_service_only(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", "-c", str(bundle / "nodes" / "bp1.publisher.toml")]) == 0
    out = capsys.readouterr()
    assert "publisher.source is 'simulate'" in out.err + out.out
    assert "verify_key" not in out.err + out.out
    assert main(["config", "check", "-c", str(bundle / "nodes" / "bp1.actuator.toml")]) == 0
    out = capsys.readouterr()
    assert "simulate" not in out.err + out.out


def test_a_combined_node_file_still_loads_for_both_services(bundle: Path) -> None:
    # The layout before the split: one file, both sections, as existing installations have it.
    publisher = (bundle / "nodes" / "bp1.publisher.toml").read_text()
    actuator = (bundle / "nodes" / "bp1.actuator.toml").read_text()
    combined = bundle / "nodes" / "bp1.toml"
    combined.write_text(publisher + "\n" + actuator[actuator.index("[actuator]"):])
    config = load_config(combined)
    assert config.publisher.stall_file == bundle / "run" / "bp1" / "stall"
    assert config.actuator.env_file == bundle / "run" / "bp1" / "env"
    assert main(["config", "check", "-c", str(combined)]) == 0


@pytest.mark.parametrize(
    ("name", "env", "expected"),
    [
        ("nodes/bp1.actuator.toml", {"BPF_ACTUATOR__VERIFY_KEY": "garbage"}, "actuator.verify_key"),
        ("nodes/bp1.actuator.toml", {"BPF_ACTUATOR__PRODUCER_ENV": "/nonexistent"}, "actuator.producer_env"),
        ("nodes/bp1.publisher.toml", {"BPF_PUBLISHER__NETWORK": "custom"}, "publisher"),
        ("decider.toml", {"BPF_DECIDER__SIGNING_KEY": "/nonexistent"}, "decider.signing_key"),
        ("decider.toml", {"BPF_DECIDER__STALE_AFTER": "1"}, "decider.stale_after"),
        ("operator.toml", {"BPF_MQTT__CA_FILE": "/nonexistent"}, "mqtt.ca_file"),
    ],
)
def test_config_check_runs_the_services_start_up_checks(
    bundle: Path,
    name: str,
    env: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["config", "check", "-c", str(bundle / name)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert all(line.startswith("bpfailover: error: ") for line in err.strip().splitlines())


def test_errors_from_the_environment_name_the_variable(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPF_DECIDER__STALE_AFTER", "soon")
    with pytest.raises(ConfigError) as err:
        load_config(bundle / "decider.toml")
    assert "BPF_DECIDER__STALE_AFTER" in str(err.value)


# --- secrets are never echoed --------------------------------------------------------------------

HOOK = "https://hooks.slack.com/services/T000/B000/s3cr3tT0k3n"


def test_config_check_masks_the_webhook_url_to_scheme_and_host(
    bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BPF_DECIDER__WEBHOOK_URL", HOOK)
    for extra in ([], ["--json"]):
        assert main(["config", "check", "-c", str(bundle / "decider.toml"), *extra]) == 0
        out = capsys.readouterr().out
        assert "s3cr3tT0k3n" not in out and "/services/" not in out
        assert "https://hooks.slack.com/..." in out


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.org/s3cr3tT0k3n",
        "hooks.example.org/s3cr3tT0k3n",
        "https:///s3cr3tT0k3n",
        "https://hooks.example.org:99999/s3cr3tT0k3n",
        "https://[hooks/s3cr3tT0k3n",
        "https://hooks.example.org/s3cr3tT0k3n\n",
    ],
)
def test_an_invalid_webhook_url_is_a_one_line_config_error_that_does_not_quote_it(
    bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("BPF_DECIDER__WEBHOOK_URL", url)
    assert main(["config", "check", "-c", str(bundle / "decider.toml")]) == 2
    captured = capsys.readouterr()
    assert "s3cr3tT0k3n" not in captured.out + captured.err
    [line] = captured.err.splitlines()
    assert line.startswith("bpfailover: error: ") and "decider.webhook_url" in line


def test_the_decider_refuses_an_invalid_webhook_url_without_quoting_it(bundle: Path) -> None:
    from bpfailover.decider.service import DeciderService

    config = load_config(bundle / "decider.toml")
    # model_copy skips validation: the decider's own check is the last line of defence
    settings = config.decider.model_copy(update={"webhook_url": "gopher://hooks.example.org/s3cr3tT0k3n"})
    with pytest.raises(ConfigError) as err:
        DeciderService(config.model_copy(update={"decider": settings}))
    assert "decider.webhook_url" in str(err.value) and "s3cr3tT0k3n" not in str(err.value)


@pytest.mark.parametrize("value", ["12345", "123.45", "true", '["s3cr3t", "pw"]', '{ s3cr3t = 1 }'])
def test_a_password_that_is_not_a_string_is_refused_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    path = write(tmp_path, f'[mqtt]\nusername = "bp1"\npassword = {value}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "mqtt.password" in message
    for part in ("12345", "123.45", "True", "s3cr3t"):
        assert part not in message
    assert main(["config", "check", "-c", str(path)]) == 2
    assert "12345" not in capsys.readouterr().err
