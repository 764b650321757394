"""The actuator core on a fake boot clock: what counts as contact, a Will per connection,
the fence across restarts and suspends, and a clean stop."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from bpfailover.actuator.contact import ContactMemory
from bpfailover.actuator.controller import RoleController
from bpfailover.actuator.core import ActuatorCore, PublishState
from bpfailover.actuator.methods import build_method
from bpfailover.actuator.methods.base import demotion_bound
from bpfailover.actuator.policy import Expected
from bpfailover.actuator.state import StoredState
from bpfailover.protocol.wire import NodeState
from bpfailover.rejections import Rejections
from tests.actuator.helpers import PRODUCER_ENV, RELAY_ENV, NodeFiles, command

TOPIC = "bpfailover/pool1/role/bp1"
WALL0 = 1_800_000_000.0
FENCE_AFTER = 20.0
KEEPALIVE = 5.0


class Clock:
    """A boot clock and a wall clock that move together (a suspend moves both)."""

    def __init__(self) -> None:
        self.boot = 100.0

    def now(self) -> float:
        return self.boot

    def wall(self) -> float:
        return WALL0 + self.boot


class MemoryStub:
    """ContactMemory's interface, in memory: survives a 'restart' when passed to the next core."""

    def __init__(self) -> None:
        self.saved: tuple[float, float] | None = None

    def load(self, now_boot: float, now_wall: float) -> float | None:
        return None if self.saved is None else self.saved[0]

    def remember(self, at_boot: float, at_wall: float) -> None:
        self.saved = (at_boot, at_wall)


def make_core(
    files: NodeFiles,
    clock: Clock,
    memory: MemoryStub | ContactMemory,
    sent: list[NodeState],
    *,
    start_timeout: float = 0.0,
    **overrides: object,
) -> ActuatorCore:
    settings = files.settings(fence_after=FENCE_AFTER, apply_timeout=2.0, **overrides)
    controller = RoleController("pool1", "bp1", build_method(settings), files.store())

    def emit(action: PublishState) -> None:
        sent.append(action.state)

    core = ActuatorCore(
        controller=controller,
        expected=Expected(TOPIC, "pool1", "bp1"),
        fence_after=FENCE_AFTER,
        keepalive=KEEPALIVE,
        demotion_bound=demotion_bound(settings),
        method_name="env-swap",
        boot="b1",
        memory=memory,
        clock=clock.now,
        wall=clock.wall,
        emit=emit,
        rejections=Rejections("test", logging.getLogger("test")),
        start_timeout=start_timeout,
    )
    core.start()
    return core


def producer_at(files: NodeFiles, epoch: int) -> None:
    files.store().save(StoredState(pool="pool1", node="bp1", epoch=epoch, role="producer"))
    files.env_file.write_bytes(PRODUCER_ENV)


def test_a_connection_without_an_acknowledged_report_is_no_contact(node_files: NodeFiles) -> None:
    # A lossy link: CONNACKs get through, every report is lost. The decider sees nothing of
    # these connections, so they must not hold the fence back.
    clock, sent = Clock(), []
    producer_at(node_files, 3)
    core = make_core(node_files, clock, MemoryStub(), sent)
    core.on_connected("c1", KEEPALIVE)
    core.on_contact(clock.now())  # the first report is acknowledged: the last contact
    contact = clock.now()
    for n in range(2, 12):
        clock.boot += 2.0
        core.on_disconnected()
        core.on_connected(f"c{n}", KEEPALIVE)  # reports go out, none is acknowledged
        core.tick()
        if node_files.env_file.read_bytes() == RELAY_ENV:
            break
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert clock.now() - contact <= FENCE_AFTER + 2.0
    assert core.controller.status().fenced
    assert {s.conn for s in sent} >= {"c2", "c3"}  # each report names its connection


def test_each_connection_gets_its_own_will(node_files: NodeFiles) -> None:
    clock, sent = Clock(), []
    producer_at(node_files, 3)
    core = make_core(node_files, clock, MemoryStub(), sent)
    first, second = core.will_state("c1"), core.will_state("c2")
    assert (first.conn, second.conn) == ("c1", "c2")
    assert first.to_json() != second.to_json()
    assert (first.online, first.role, first.epoch, first.stopped) == (False, "unknown", 3, False)
    assert first.fence_after == core.fence_promise > FENCE_AFTER


def test_a_crash_looping_actuator_fences_from_its_last_contact_not_its_start(node_files: NodeFiles) -> None:
    clock, memory = Clock(), MemoryStub()
    producer_at(node_files, 3)
    core = make_core(node_files, clock, memory, [])
    core.on_connected("c1", KEEPALIVE)
    core.on_contact(clock.now())
    contact = clock.now()
    # The link is cut; the process dies and is restarted every 5 s, always short of fence_after.
    while node_files.env_file.read_bytes() == PRODUCER_ENV:
        clock.boot += 5.0
        assert clock.now() - contact <= FENCE_AFTER + 5.0, "never fenced"
        core = make_core(node_files, clock, memory, [])  # a new process: start() checks the fence
        core.tick()
    assert FENCE_AFTER <= clock.now() - contact <= FENCE_AFTER + 5.0


def test_a_host_resuming_after_its_fence_time_fences_at_once(node_files: NodeFiles) -> None:
    clock = Clock()
    producer_at(node_files, 3)
    core = make_core(node_files, clock, MemoryStub(), [])
    core.on_connected("c1", KEEPALIVE)
    core.on_contact(clock.now())
    clock.boot += 3600  # suspended: the boot clock counted the hour, the process did not run
    core.check_fence()  # the first thing the loop does on resume
    assert node_files.env_file.read_bytes() == RELAY_ENV


def test_a_clean_stop_promises_no_fence_and_names_its_connection(node_files: NodeFiles) -> None:
    clock = Clock()
    producer_at(node_files, 3)
    core = make_core(node_files, clock, MemoryStub(), [])
    core.on_connected("c7", KEEPALIVE)
    last = core.stop("c8")  # sent on a last connection whose Will is this same report
    assert (last.online, last.stopped, last.fence_after, last.conn, last.role) == (
        False,
        True,
        0.0,
        "c8",
        "producer",
    )
    assert node_files.env_file.read_bytes() == PRODUCER_ENV  # a clean stop leaves the node as it is
    core.stop_unreported()  # ... unless the decider could not be told
    assert node_files.env_file.read_bytes() == RELAY_ENV


def test_the_keepalive_in_force_sets_the_fence_promise(node_files: NodeFiles) -> None:
    clock = Clock()
    producer_at(node_files, 3)
    core = make_core(node_files, clock, MemoryStub(), [])
    before = core.fence_promise
    core.on_connected("c1", 30.0)  # an MQTT 5 broker imposed 30 s (AWS IoT's minimum)
    assert core.fence_promise == before - max(FENCE_AFTER, 2 * KEEPALIVE) + max(FENCE_AFTER, 60.0)
    assert core.will_state("c2").fence_after == core.fence_promise


def test_a_retained_producer_command_at_the_fenced_epoch_is_refused(node_files: NodeFiles) -> None:
    clock, sent = Clock(), []
    producer_at(node_files, 3)
    core = make_core(node_files, clock, MemoryStub(), sent)
    clock.boot += FENCE_AFTER + 1
    core.check_fence()
    assert core.controller.status().fenced
    core.on_connected("c2", KEEPALIVE)
    core.on_command(TOPIC, command("producer", 3).to_json())  # the broker rolled back to it
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert sent[-1].rejected is not None and "reapply" in sent[-1].rejected
    core.on_command(TOPIC, command("producer", 4).to_json())
    assert node_files.env_file.read_bytes() == PRODUCER_ENV


# --- the memory on disk ------------------------------------------------------------------------


def test_contact_memory_survives_a_restart_on_the_same_boot(tmp_path: Path) -> None:
    memory = ContactMemory(tmp_path, boot="boot-a")
    memory.remember(500.0, WALL0 + 500.0)
    assert memory.flush(5.0)
    assert ContactMemory(tmp_path, boot="boot-a").load(520.0, WALL0 + 520.0) == 500.0


def test_contact_memory_across_a_reboot_is_placed_by_the_wall_clock(tmp_path: Path) -> None:
    memory = ContactMemory(tmp_path, boot="boot-a")
    memory.remember(500.0, WALL0 + 500.0)
    assert memory.flush(5.0)
    after_reboot = ContactMemory(tmp_path, boot="boot-b")
    assert after_reboot.load(30.0, WALL0 + 590.0) == pytest.approx(30.0 - 90.0)  # 90 s ago
    assert after_reboot.load(30.0, WALL0 + 400.0) == -math.inf  # a wall clock gone backwards


def test_an_unreadable_contact_memory_counts_as_long_ago(tmp_path: Path) -> None:
    (tmp_path / "last-contact.json").write_text(json.dumps({"boot_id": "x", "boot": "soon"}))
    assert ContactMemory(tmp_path, boot="x").load(10.0, WALL0) == -math.inf
    assert ContactMemory(tmp_path / "none", boot="x").load(10.0, WALL0) is None


def test_a_demotion_under_way_keeps_proving_the_loop_alive(node_files: NodeFiles) -> None:
    # systemd's watchdog must not kill an actuator that is busy demoting (its restart runs).
    clock = Clock()
    producer_at(node_files, 3)
    core = make_core(node_files, clock, MemoryStub(), [])
    beats: list[int] = []
    core.on_alive = lambda: beats.append(1)
    core.controller.alive = core.on_alive
    node_files.restart.hang(1.0)
    clock.boot += FENCE_AFTER + 1
    core.check_fence()
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert len(beats) >= 5  # every 0.1 s while the restart ran, not only before and after


def test_a_restart_for_a_role_change_is_reported_until_start_timeout(node_files: NodeFiles) -> None:
    clock, sent = Clock(), []
    core = make_core(node_files, clock, MemoryStub(), sent, start_timeout=600.0)
    core.on_connected("c1", KEEPALIVE)
    assert sent[-1].starting_since is None and sent[-1].start_timeout is None
    core.on_command(TOPIC, command("producer", 1).to_json())
    restarted = clock.wall()
    state = sent[-1]
    assert (state.role, state.pending, state.epoch) == ("producer", None, 1)
    assert (state.starting_since, state.start_timeout) == (restarted, 600.0)
    assert core.will_state("c1").starting_since is None  # an offline node starts nothing we know of
    clock.boot += 599.0
    core.report()
    assert sent[-1].starting_since == restarted  # the same restart, not a new one
    clock.boot += 1.0
    core.report()
    assert sent[-1].starting_since is None and sent[-1].start_timeout is None


def test_an_apply_that_restarts_nothing_reports_no_start(node_files: NodeFiles) -> None:
    clock, sent = Clock(), []
    core = make_core(node_files, clock, MemoryStub(), sent, start_timeout=600.0)
    core.on_connected("c1", KEEPALIVE)
    core.on_command(TOPIC, command("relay", 1).to_json())  # already relay: nothing runs
    assert sent[-1].starting_since is None
    node_files.restart.fail()
    core.on_command(TOPIC, command("producer", 2).to_json())  # the restart failed
    assert sent[-1].error is not None and sent[-1].starting_since is None


def test_the_command_method_never_reports_a_start(node_files: NodeFiles) -> None:
    clock, sent = Clock(), []
    core = make_core(
        node_files,
        clock,
        MemoryStub(),
        sent,
        start_timeout=600.0,
        method="command",
        promote_command="true",
        demote_command="true",
    )
    core.on_connected("c1", KEEPALIVE)
    core.on_command(TOPIC, command("producer", 1).to_json())
    assert sent[-1].role == "producer" and sent[-1].starting_since is None
