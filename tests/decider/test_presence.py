"""The presence Will: rebuilt whenever the status it carries changes, except its timestamp.

The Will's connection is replaced by a fake link that records the Will it was made with.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from bpfailover.decider import service
from bpfailover.protocol.wire import DeciderStatus, Transition
from tests.brokers import wait_for


class FakeLink:
    made: list[DeciderStatus] = []

    def __init__(
        self, _settings: object, _client_id: str, *, will: tuple[str, bytes], suffix: str = ""
    ) -> None:
        FakeLink.made.append(DeciderStatus.model_validate_json(will[1]))

    def start(self, **_kw: Any) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture
def presence(monkeypatch: pytest.MonkeyPatch) -> Iterator[service.Presence]:
    FakeLink.made = []
    monkeypatch.setattr(service, "MqttLink", FakeLink)
    made = service.Presence(SimpleNamespace(mqtt=None), "will-client", "bpfailover/pool1/decider")  # type: ignore[arg-type]
    yield made
    made.stop()


def status(at: float, **fields: Any) -> DeciderStatus:
    base: dict[str, Any] = {"pool": "pool1", "decider": "d1", "online": False, "epoch": 3, "producer": "bp1"}
    return DeciderStatus(**{**base, **fields, "updated_at": at})


def test_the_will_follows_every_change_but_the_timestamp(presence: service.Presence) -> None:
    moving = Transition(to="bp1", epoch=3, kind="resync", started_at=100.0, phase="demote")
    steps = [
        status(100.0, transition=moving),
        status(101.0, transition=moving),  # only updated_at: no new Will
        status(102.0, transition=moving.model_copy(update={"phase": "promote"})),
        status(103.0),  # the transition is over; epoch and producer are unchanged
    ]
    for step, wills in zip(steps, [1, 1, 2, 3], strict=True):
        presence.update(step)
        wait_for(lambda n=wills: len(FakeLink.made) == n, 5, f"{wills} Will(s)")
    assert [(s.updated_at, s.transition and s.transition.phase) for s in FakeLink.made] == [
        (100.0, "demote"),
        (102.0, "promote"),
        (103.0, None),
    ]
