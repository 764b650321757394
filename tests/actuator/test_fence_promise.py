"""NodeState.fence_after against the real fence time: the service on a fake monotonic clock.

The decider counts a cut-off producer as certainly fenced from the fence_after its
actuator advertises; the actuator must therefore never take longer than that from its
last broker contact to a demoted node. No broker is needed: the link is never started,
its state is set by hand to the worst case (a connection that still looks up but hears
nothing), and the restart and stop commands hang until they are killed.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from bpfailover.actuator.service import ActuatorService
from bpfailover.actuator.state import StoredState
from bpfailover.protocol.fence import FENCE_SLACK
from bpfailover.settings import BpfConfig, load_config
from tests.actuator.helpers import PRODUCER_ENV, RELAY_ENV, NodeFiles

APPLY_TIMEOUT = 0.4


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def node_config(files: NodeFiles, *, keepalive: float, fence_after: float, **actuator: object) -> BpfConfig:
    """bp1's configuration pointing at the test's files; the broker address is never used."""
    values: dict[str, object] = {
        "env_file": files.env_file,
        "producer_env": files.producer_env,
        "relay_env": files.relay_env,
        "restart_command": files.restart.script,
        "stop_command": files.stop.script,
        "state_dir": files.state_dir,
        "fence_after": fence_after,
        "apply_timeout": APPLY_TIMEOUT,
        "apply_retries": 3,
        "apply_retry_wait": 0.05,
        **actuator,
    }
    path = files.root / "bp1.toml"
    path.write_text(
        f'[mqtt]\ntls = false\nhost = "127.0.0.1"\nport = 9\nkeepalive = {keepalive}\n'
        '[pool]\nid = "pool1"\n[node]\nname = "bp1"\n[actuator]\n'
        + "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())
    )
    return load_config(path)


def producer_service(
    files: NodeFiles, clock: Clock, *, keepalive: float, fence_after: float, **actuator: object
) -> ActuatorService:
    """An actuator whose node is producer at epoch 3, started but never connected."""
    files.store().save(StoredState(pool="pool1", node="bp1", epoch=3, role="producer"))
    files.env_file.write_bytes(PRODUCER_ENV)
    config = node_config(files, keepalive=keepalive, fence_after=fence_after, **actuator)
    service = ActuatorService(config, clock=clock)
    service.controller.start()
    assert service.controller.might_forge()
    return service


@pytest.mark.parametrize(
    ("keepalive", "fence_after", "timer"),
    [(60, 10, 120), (30, 120, 120)],
    ids=["keepalive60-fence10", "keepalive30-fence120"],
)
def test_advertised_fence_after_equals_the_real_fence_time(
    node_files: NodeFiles, keepalive: float, fence_after: float, timer: float
) -> None:
    clock = Clock()
    service = producer_service(node_files, clock, keepalive=keepalive, fence_after=fence_after)
    advertised = service.node_state(online=True).fence_after
    assert advertised == timer + 2 * APPLY_TIMEOUT + FENCE_SLACK
    assert service.core.will_state("c1").fence_after == advertised

    # The worst case: the connection still looks up, the last report was acknowledged at
    # `contact`, and both the restart and the last-resort stop_command hang until killed.
    service.core.on_connected("c1", keepalive)
    contact = clock.now
    service.core.on_contact(contact)
    node_files.restart.hang(37.41)
    node_files.stop.hang(37.41)

    clock.now = contact + timer - 0.01
    service.core.check_fence()
    assert node_files.restart.calls() == []  # not yet due
    clock.now = contact + timer
    started = time.monotonic()
    service.core.check_fence()
    demotion = time.monotonic() - started

    assert node_files.restart.calls() == ['#POOL_NAME=""'] and node_files.stop.calls() == ['#POOL_NAME=""']
    real = timer + demotion  # last contact -> the fence gave up on both commands
    assert real <= advertised <= real + FENCE_SLACK, (real, advertised)
    assert node_files.env_file.read_bytes() == RELAY_ENV


def test_fence_demotes_within_the_advertised_time_when_the_restart_hangs(node_files: NodeFiles) -> None:
    clock = Clock()
    service = producer_service(node_files, clock, keepalive=30, fence_after=120)
    node_files.restart.hang(37.42)  # stop_command works: the node is stopped, no longer forging
    clock.now += 120  # silent since start, link never up
    started = time.monotonic()
    service.core.check_fence()
    real = 120 + time.monotonic() - started
    status = service.controller.status()
    assert (status.role, status.fenced) == ("relay", True)
    assert status.error is not None and "node stopped with stop_command" in status.error
    assert real <= service.node_state(online=True).fence_after


def test_start_up_warns_when_keepalive_stretches_the_fence(
    node_files: NodeFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bpfailover.actuator"):
        producer_service(node_files, Clock(), keepalive=60, fence_after=10)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "keepalive" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "actuator.fence_after 10s" in warnings[0] and "mqtt.keepalive (60s)" in warnings[0]
    assert "after 120s" in warnings[0] and "advertising fence_after 121.8s" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bpfailover.actuator"):
        producer_service(node_files, Clock(), keepalive=30, fence_after=120)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "keepalive" in r.getMessage()]


def test_dry_run_advertises_no_fence(node_files: NodeFiles) -> None:
    service = producer_service(node_files, Clock(), keepalive=30, fence_after=120, dry_run=True)
    assert service.node_state(online=True).fence_after == 0
    assert service.core.will_state("c1").fence_after == 0
