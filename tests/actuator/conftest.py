"""Fixtures for the actuator tests (helpers live in tests/actuator/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.actuator.helpers import NodeFiles, make_node_files


@pytest.fixture
def node_files(tmp_path: Path) -> NodeFiles:
    """env, env.producer, env.relay (env starts as relay), a state folder, restart/stop recorders."""
    return make_node_files(tmp_path)
