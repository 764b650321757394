"""compose.yaml and the Dockerfile, checked without a Docker engine.

Every ``bpfailover`` command in compose.yaml must parse with the real CLI parser,
every ``-c`` file must be one the ``init`` service's bundle contains, and every
service's BPF_* environment must load against that bundle.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from bpfailover.broker.bundle import write_bundle
from bpfailover.cli import build_parser
from bpfailover.settings import load_config
from tests.brokers import DOCKER_BASE, DOCKER_BASE_ENV, DOCKER_CONTEXT, DOCKER_IMAGE

ROOT = Path(__file__).resolve().parents[2]
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
BUNDLE_MOUNT = "/deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def bpfailover_commands(command: list[str] | str) -> list[list[str]]:
    """The argument lists of every ``bpfailover`` invocation in a service's command."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2])
    found: list[list[str]] = []
    for i, token in enumerate(argv):
        if token == "bpfailover":
            args: list[str] = []
            for arg in argv[i + 1 :]:
                if arg in SHELL_OPERATORS:
                    break
                args.append(arg)
            found.append(args)
    return found


def init_args(compose: dict[str, Any]) -> Any:
    (args,) = bpfailover_commands(compose["services"]["init"]["command"])
    return build_parser().parse_args(args)


def test_services_are_broker_decider_and_two_nodes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {
        "init",
        "mosquitto",
        "decider",
        "bp1-publisher",
        "bp1-actuator",
        "bp2-publisher",
        "bp2-actuator",
    } <= set(services)
    assert services["mosquitto"]["image"] == DOCKER_IMAGE  # the image of BPF_TEST_BROKER=docker too
    init = init_args(compose)
    assert init.command == "init" and init.dir == BUNDLE_MOUNT
    assert init.nodes.split(",") == ["bp1", "bp2"]
    assert init.broker_host == "mosquitto"  # the server certificate names the compose service
    # the broker runs the configuration the init service generates
    assert services["mosquitto"]["command"] == ["mosquitto", "-c", f"{BUNDLE_MOUNT}/broker/mosquitto.conf"]
    for name, service in services.items():
        if name == "init":
            continue
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully", name


def test_every_service_mounts_the_declared_bundle_volume(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        mounts = [v.split(":") for v in service["volumes"]]
        assert [target for source, target in mounts if source in declared] == [BUNDLE_MOUNT], name
        for source, _target in mounts:
            assert source in declared, f"{name}: volume {source} is not declared"


def test_every_command_is_a_real_cli_subcommand(compose: dict[str, Any]) -> None:
    parser = build_parser()
    seen = set()
    for name, service in compose["services"].items():
        if name == "mosquitto":
            continue
        commands = bpfailover_commands(service["command"])
        assert commands, f"{name} runs no bpfailover command"
        for args in commands:
            parsed = parser.parse_args(args)  # exits (SystemExit) on an unknown subcommand or flag
            seen.add(parsed.command)
            if name != "init":
                assert parsed.config and parsed.config.startswith(BUNDLE_MOUNT + "/"), name
    assert {"init", "decider", "publisher", "actuator", "status"} <= seen


def test_each_service_config_and_environment_load_against_a_real_bundle(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = init_args(compose)
    write_bundle(
        tmp_path,
        pool=init.pool,
        nodes=init.nodes.split(","),
        broker_host=init.broker_host,
        broker_port=init.broker_port,
    )
    parser = build_parser()
    for name, service in compose["services"].items():
        if name in ("init", "mosquitto"):
            continue
        (args,) = bpfailover_commands(service["command"])
        parsed = parser.parse_args(args)
        local = tmp_path / PurePosixPath(parsed.config).relative_to(BUNDLE_MOUNT)
        assert local.is_file(), f"{name}: {parsed.config} is not in the bundle init writes"
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            config = load_config(local)  # unknown keys or bad values raise ConfigError
        assert config.mqtt.host == "mosquitto"
        if parsed.command in ("publisher", "actuator"):
            assert config.node.name == name.split("-")[0]
            # Each service with its own file and broker user: the publisher's cannot forge the state.
            assert parsed.config == f"{BUNDLE_MOUNT}/nodes/{config.node.name}.{parsed.command}.toml"
            assert config.mqtt.username == f"{config.node.name}-{parsed.command}"
            assert config.publisher.network == "custom" and config.publisher.slot_length < 0.1


def test_timings_satisfy_the_decider_invariants(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bpfailover.decider.invariants import check_invariants

    write_bundle(tmp_path, pool="pool1", nodes=["bp1", "bp2"], broker_host="mosquitto")
    services = compose["services"]
    for key, value in services["decider"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    config = load_config(tmp_path / "decider.toml")
    node = services["bp1-actuator"]["environment"]
    assert node["BPF_MQTT__KEEPALIVE"] == services["decider"]["environment"]["BPF_MQTT__KEEPALIVE"]
    from bpfailover.protocol.fence import advertised_for

    for key, value in node.items():
        monkeypatch.setenv(key, str(value))
    actuator = load_config(tmp_path / "nodes" / "bp1.actuator.toml")  # what bp1's actuator will advertise
    check_invariants(
        config.decider, config.mqtt.keepalive, advertised_for(actuator.actuator, actuator.mqtt.keepalive)
    )


def test_dockerfile_installs_every_component_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# bpfailover")
    for package in ("bpfailover", "broker", "publisher", "decider", "actuator"):
        assert f"COPY {package} ./{package}" in text
    assert re.search(r"/pip install \$offline \.\s", text)


def instructions(dockerfile: Path) -> list[list[str]]:
    """The words of each line that is not a comment (enough for ARG, FROM and COPY)."""
    return [line.split() for line in dockerfile.read_text().splitlines() if line and not line.startswith("#")]


def default_base(dockerfile: Path) -> str:
    """The default of ``ARG BASE_IMAGE``, which must be what the only FROM uses."""
    lines = instructions(dockerfile)
    (arg,) = [words[1] for words in lines if words[0] == "ARG" and words[1].startswith("BASE_IMAGE=")]
    assert [words[1] for words in lines if words[0] == "FROM"] == ["${BASE_IMAGE}"], dockerfile
    return arg.split("=", 1)[1]


def test_images_build_on_a_replaceable_base_defaulting_to_the_public_images(compose: dict[str, Any]) -> None:
    assert default_base(ROOT / "Dockerfile") == "python:3.11-slim"
    assert default_base(DOCKER_CONTEXT / "Dockerfile") == DOCKER_BASE == "eclipse-mosquitto:2"
    services = compose["services"]
    broker_build = services["mosquitto"]["build"]
    assert (ROOT / broker_build["context"]).resolve() == DOCKER_CONTEXT
    assert broker_build["args"] == {"BASE_IMAGE": f"${{{DOCKER_BASE_ENV}:-{DOCKER_BASE}}}"}
    for name, service in services.items():
        if name != "mosquitto":
            assert service["build"] == {
                "context": ".", "args": {"BASE_IMAGE": "${BPF_BASE_IMAGE:-python:3.11-slim}"}
            }, name


def test_compose_file_has_nothing_docker_compose_1_29_rejects(compose: dict[str, Any]) -> None:
    # 1.29 (Debian's docker-compose) validates against a schema without the top-level name.
    assert "name" not in compose


def test_dockerignore_lets_every_copied_path_into_the_build_context() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = [words[1:-1] for words in instructions(ROOT / "Dockerfile") if words[0] == "COPY"]
    assert {source.rstrip("/") for sources in copied for source in sources} == allowed
