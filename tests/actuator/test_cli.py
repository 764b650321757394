"""`bpfailover actuator` refuses an incomplete configuration with one actionable line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfailover.cli import main

NODE = """
[mqtt]
tls = false
[pool]
id = "pool1"
[node]
name = "bp1"
[actuator]
method = "sighup"
state_dir = "state"
"""


def test_missing_method_keys_are_named_and_exit_with_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bp1.toml"
    config.write_text(NODE)
    assert main(["actuator", "-c", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bpfailover: error: actuator method 'sighup' needs actuator.kes_key")
    assert "\n" not in err  # one line, no traceback


def test_bad_verify_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bp1.toml"
    config.write_text(NODE.replace('"sighup"', '"command"') + 'verify_key = "not-a-key"\n')
    assert main(["actuator", "-c", str(config)]) == 2
    assert "actuator.verify_key" in capsys.readouterr().err
