"""Every decider test checks the settled shortcut against the full rule (``PoolMachine.check_settled``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bpfailover.decider.pool import PoolMachine


@pytest.fixture(autouse=True)
def _settled_means_nothing_to_do() -> Iterator[None]:
    PoolMachine.check_settled = True
    yield
    PoolMachine.check_settled = False
