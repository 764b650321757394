"""Operator mistakes on the command line are one-line errors, before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfailover.cli import main


@pytest.fixture
def operator_toml(tmp_path: Path) -> Path:
    from bpfailover.broker.bundle import write_bundle

    write_bundle(tmp_path / "b", pool="pool1", nodes=["bp1", "bp2"], broker_port=18883)
    return tmp_path / "b" / "operator.toml"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["switchover", "--to", "BAD/x"], "--to: invalid node name 'BAD/x'"),
        (["maintenance", "Bp1", "on"], "NODE: invalid node name 'Bp1'"),
        (["pause", "--until", "soon"], "--until: invalid duration"),
        (["status", "--pool", "nope"], "--pool nope: not in this configuration"),
        (["resume", "--pool", "nope"], "--pool nope: not in this configuration"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    operator_toml: Path, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv[:1], "-c", str(operator_toml), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1


def test_log_level_is_accepted_after_the_subcommand(operator_toml: Path) -> None:
    from bpfailover.cli import build_parser

    args = build_parser().parse_args(["status", "-c", str(operator_toml), "--log-level", "debug"])
    assert args.log_level == "debug"
