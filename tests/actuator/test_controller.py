"""The role controller: durable state, idempotence, start-up, fencing and dry-run, on real files."""

from __future__ import annotations

import errno
import json
import threading
import time

import pytest

from bpfailover.actuator.controller import MARK_WAIT, RoleController
from bpfailover.actuator.methods import build_method
from bpfailover.actuator.policy import CommandRejected, epoch_rule
from bpfailover.actuator.state import StoredState
from bpfailover.settings import ActuatorSettings
from tests.actuator.helpers import PRODUCER_ENV, RELAY_ENV, NodeFiles, command, running_sleeps


def make(node_files: NodeFiles, settings: ActuatorSettings | None = None, **kw: object) -> RoleController:
    settings = settings or node_files.settings()
    controller = RoleController(
        "pool1", "bp1", build_method(settings), node_files.store(), dry_run=settings.dry_run, **kw
    )  # type: ignore[arg-type]
    controller.start()
    return controller


def send(controller: RoleController, role: str, epoch: int) -> None:
    controller.on_command(
        epoch_rule(command(role, epoch), controller.epoch, controller.stored_role, controller.applied)
    )


def stored(node_files: NodeFiles) -> StoredState | None:
    return node_files.store().load()


def test_command_for_the_applied_role_runs_nothing(node_files: NodeFiles) -> None:
    controller = make(node_files)
    send(controller, "relay", 1)  # env is already relay
    send(controller, "relay", 1)  # retained command delivered again
    assert node_files.restart.calls() == []
    send(controller, "producer", 2)
    send(controller, "producer", 2)
    send(controller, "producer", 3)  # new epoch, same role: only the epoch is stored
    assert node_files.restart.calls() == ['POOL_NAME="pool1"']
    state = stored(node_files)
    assert state is not None and (state.epoch, state.role, state.pending) == (3, "producer", None)


def test_epoch_is_stored_before_promoting(node_files: NodeFiles) -> None:
    snapshot = node_files.root / "state-at-restart.json"
    state_file = node_files.store().path
    settings = node_files.settings(
        restart_command=f"cp {state_file} {snapshot} && {node_files.restart.script}"
    )
    controller = make(node_files, settings)
    send(controller, "producer", 4)
    seen = json.loads(snapshot.read_text())
    assert (seen["epoch"], seen["role"], seen["pending"]) == (4, "producer", "producer")
    assert controller.status().role == "producer"


def test_stored_epoch_survives_a_restart_of_the_actuator(node_files: NodeFiles) -> None:
    send(make(node_files), "producer", 5)
    again = make(node_files)
    assert (again.epoch, again.stored_role, again.status().role) == (5, "producer", "producer")
    assert len(node_files.restart.calls()) == 1


def test_start_without_stored_state_applies_nothing(node_files: NodeFiles) -> None:
    node_files.env_file.write_bytes(PRODUCER_ENV)
    controller = make(node_files)
    assert controller.status().role == "producer"
    assert controller.epoch == 0
    assert node_files.restart.calls() == []
    assert node_files.env_file.read_bytes() == PRODUCER_ENV


def test_start_never_promotes_from_stored_state(node_files: NodeFiles) -> None:
    node_files.store().save(StoredState(pool="pool1", node="bp1", epoch=3, role="producer"))
    controller = make(node_files)  # env is relay
    assert controller.status().role == "relay"
    assert node_files.restart.calls() == []
    assert not controller.might_forge()


def test_start_demotes_when_stored_state_says_relay(node_files: NodeFiles) -> None:
    node_files.store().save(StoredState(pool="pool1", node="bp1", epoch=3, role="relay"))
    node_files.env_file.write_bytes(PRODUCER_ENV)
    controller = make(node_files)
    assert controller.status().role == "relay"
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert node_files.restart.calls() == ['#POOL_NAME=""']


def test_corrupt_state_is_reported_and_the_node_treated_as_relay(node_files: NodeFiles) -> None:
    node_files.state_dir.mkdir()
    node_files.store().path.write_text('{"epoch": 9, "role": "prod')
    node_files.env_file.write_bytes(PRODUCER_ENV)
    controller = make(node_files)
    status = controller.status()
    assert (
        status.error is not None
        and "corrupt" in status.error
        and "treating this node as relay" in status.error
    )
    assert status.role == "relay"
    assert node_files.env_file.read_bytes() == RELAY_ENV
    send(controller, "producer", 1)  # the next valid command is applied and clears the report
    assert controller.status().error is None
    state = stored(node_files)
    assert state is not None and state.epoch == 1


def test_interrupted_promotion_is_fenced_at_start_and_redone_only_at_a_higher_epoch(
    node_files: NodeFiles,
) -> None:
    # Crash after the env file was swapped but before the restart ran.
    node_files.store().save(
        StoredState(pool="pool1", node="bp1", epoch=2, role="producer", pending="producer")
    )
    node_files.env_file.write_bytes(PRODUCER_ENV)
    controller = make(node_files)
    status = controller.status()
    assert (status.role, status.epoch, status.fenced) == ("relay", 2, True)
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert not controller.might_forge()
    with pytest.raises(CommandRejected, match="reapply"):
        send(controller, "producer", 2)  # the retained command of the interrupted promotion
    send(controller, "producer", 3)
    assert controller.status().role == "producer"
    state = stored(node_files)
    assert state is not None and (state.epoch, state.pending, state.fenced) == (3, None, False)


def test_fence_demotes_keeps_epoch_and_needs_a_higher_epoch_to_promote_again(node_files: NodeFiles) -> None:
    controller = make(node_files)
    send(controller, "producer", 6)
    assert controller.fence("test: no broker contact")
    status = controller.status()
    assert (status.role, status.epoch, status.fenced) == ("relay", 6, True)
    assert node_files.env_file.read_bytes() == RELAY_ENV
    state = stored(node_files)
    assert state is not None and (state.epoch, state.role, state.fenced) == (6, "producer", True)

    restarted = make(node_files)  # a restarted actuator stays fenced and does not promote
    assert (restarted.status().role, restarted.status().fenced) == ("relay", True)
    assert len(node_files.restart.calls()) == 2

    # The retained producer command at its epoch may be a rolled-back copy: it does not count.
    with pytest.raises(CommandRejected, match="reapply"):
        send(restarted, "producer", 6)
    assert (restarted.status().role, restarted.status().fenced) == ("relay", True)
    send(restarted, "producer", 7)  # the decider re-commands a fenced producer at a new epoch
    assert (restarted.status().role, restarted.status().fenced) == ("producer", False)
    assert node_files.env_file.read_bytes() == PRODUCER_ENV
    state = stored(node_files)
    assert state is not None and (state.epoch, state.fenced) == (7, False)


def test_fence_is_a_no_op_for_a_relay(node_files: NodeFiles) -> None:
    controller = make(node_files)
    send(controller, "relay", 1)
    assert controller.fence("test")
    assert not controller.status().fenced
    assert node_files.restart.calls() == []


def test_failed_promotion_is_reported_and_keeps_fencing_armed(node_files: NodeFiles) -> None:
    node_files.restart.fail()
    changes: list[str | None] = []
    controller = make(node_files, on_change=lambda: changes.append(controller.status().pending))
    send(controller, "producer", 1)
    status = controller.status()
    assert status.role == "unknown" and status.pending is None
    assert status.error is not None and "exited with 3" in status.error
    assert changes == ["producer"]  # pending was reported before the restart ran
    assert controller.might_forge()
    node_files.restart.fail(False)
    assert controller.fence("test")  # demotion still works
    assert controller.status().role == "relay"


def test_failed_demotion_stops_the_node(node_files: NodeFiles) -> None:
    controller = make(node_files)
    send(controller, "producer", 1)
    node_files.restart.fail()
    send(controller, "relay", 2)
    status = controller.status()
    assert status.role == "relay"
    assert status.error is not None and "node stopped with stop_command" in status.error
    assert len(node_files.stop.calls()) == 1


def test_rejection_is_reported_until_the_next_accepted_command(node_files: NodeFiles) -> None:
    controller = make(node_files)
    controller.note_rejection("bad_signature", "command signature does not verify")
    status = controller.status()
    assert status.rejected == "rejected bad_signature: command signature does not verify"
    assert status.error is None  # a refused command is not an apply error: eligibility is kept
    assert status.role == "relay"
    send(controller, "relay", 1)
    assert controller.status().rejected is None


def test_dry_run_changes_nothing_and_reports_the_role_the_node_runs(node_files: NodeFiles) -> None:
    node_files.store().save(StoredState(pool="pool1", node="bp1", epoch=1, role="relay"))
    node_files.env_file.write_bytes(PRODUCER_ENV)  # a start would normally demote this
    before = {p.name: p.read_bytes() for p in node_files.root.rglob("*") if p.is_file()}
    controller = make(node_files, node_files.settings(dry_run=True))
    assert (controller.status().role, controller.status().pending) == ("producer", "relay")  # would demote
    send(controller, "producer", 2)
    status = controller.status()
    assert (status.role, status.epoch, status.pending) == ("producer", 2, None)  # what the node runs already
    send(controller, "relay", 3)
    assert not controller.fence("test")  # it would fence, but the node is still producer
    status = controller.status()
    # The role the node really runs at the epoch it was accepted for; what it would do in pending.
    assert (status.role, status.epoch, status.pending, status.fenced) == ("producer", 2, "relay", False)
    assert controller.epoch == 3  # the epoch rule still counts the accepted command
    after = {p.name: p.read_bytes() for p in node_files.root.rglob("*") if p.is_file()}
    assert after == before
    assert node_files.restart.calls() == [] and node_files.stop.calls() == []

    node_files.env_file.write_bytes(RELAY_ENV)  # whatever runs the node now demoted it
    status = controller.status()
    assert (status.role, status.epoch, status.pending) == ("relay", 3, None)


def test_promotion_retries_stop_and_the_node_fences_when_contact_is_lost(node_files: NodeFiles) -> None:
    # The restart fails while the env file says producer (e.g. the node will not come up).
    settings = node_files.settings(
        restart_command=f"{node_files.restart.script} && ! grep -q '^POOL_NAME' {node_files.env_file}",
        apply_retries=5,
    )
    controller = make(node_files, settings)
    # The fence is due as soon as the first attempt has run.
    controller.on_command(
        epoch_rule(command("producer", 1), 0, None), abort=lambda: bool(node_files.restart.calls())
    )
    # One promotion attempt, no retries, then the fence's demotion.
    assert node_files.restart.calls() == ['POOL_NAME="pool1"', '#POOL_NAME=""']
    status = controller.status()
    assert (status.role, status.epoch, status.fenced) == ("relay", 1, True)


def test_demotion_that_failed_completely_is_tried_again(node_files: NodeFiles) -> None:
    controller = make(node_files)
    send(controller, "producer", 1)
    node_files.restart.fail()
    node_files.stop.fail()
    send(controller, "relay", 2)
    assert controller.status().role == "unknown"
    assert controller.needs_demotion()
    node_files.restart.fail(False)
    controller.converge_relay("retry")  # what the service does every minute
    assert (controller.status().role, controller.status().error) == ("relay", None)
    assert not controller.needs_demotion()


def test_unwritable_state_blocks_a_promotion_but_not_a_demotion(
    node_files: NodeFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = make(node_files)
    send(controller, "producer", 1)

    def disk_full(_state: StoredState) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(controller.store, "save", disk_full)
    send(controller, "relay", 2)
    assert controller.status().role == "relay"  # demoted all the same
    assert "No space left on device" in (controller.status().error or "")
    send(controller, "producer", 3)
    assert controller.status().role == "relay"  # never producer at an epoch not on disk
    assert controller.epoch == 2
    assert node_files.restart.calls() == ['POOL_NAME="pool1"', '#POOL_NAME=""']


def test_reported_epoch_is_the_applied_one_and_moves_only_once_the_role_is_applied(
    node_files: NodeFiles,
) -> None:
    seen: list[tuple[str, int, str | None]] = []

    def report() -> None:
        status = controller.status()
        seen.append((status.role, status.epoch, status.pending))

    controller = make(node_files, on_change=report)
    send(controller, "producer", 1)
    report()
    send(controller, "relay", 2)
    report()
    assert seen == [
        ("relay", 0, "producer"),  # while promoting: still relay at the previous epoch, plus pending
        ("producer", 1, None),
        ("producer", 1, "relay"),  # while demoting: not yet relay at 2, and not producer at 2 either
        ("relay", 2, None),  # what the decider takes as the acknowledgement
    ]
    assert controller.epoch == 2


def test_stopped_node_reports_relay_at_the_demotion_epoch(node_files: NodeFiles) -> None:
    controller = make(node_files)
    send(controller, "producer", 1)
    node_files.restart.fail()
    send(controller, "relay", 2)
    status = controller.status()
    assert (status.role, status.epoch, status.pending) == (
        "relay",
        2,
        None,
    )  # acknowledged: it no longer forges


def test_failed_promotion_reports_unknown_at_the_stored_epoch(node_files: NodeFiles) -> None:
    node_files.restart.fail()
    controller = make(node_files)
    send(controller, "producer", 4)
    status = controller.status()
    assert (status.role, status.epoch, status.pending) == ("unknown", 4, None)


def test_promotion_under_way_is_killed_when_the_fence_falls_due(node_files: NodeFiles) -> None:
    # The restart hangs while the env file says producer; the demotion's restart returns at once.
    hang = f"if grep -q '^POOL_NAME' {node_files.env_file}; then sleep 37.51; fi"
    settings = node_files.settings(
        restart_command=f"{node_files.restart.script} && {hang}", apply_timeout=30, apply_retries=3
    )
    controller = make(node_files, settings)
    started = time.monotonic()
    due_at = started + 0.3  # contact is lost as the promotion begins
    controller.on_command(
        epoch_rule(command("producer", 1), 0, None), abort=lambda: time.monotonic() >= due_at
    )
    assert time.monotonic() - started < 3  # not apply_timeout: the fence did not wait for the restart
    assert node_files.restart.calls() == ['POOL_NAME="pool1"', '#POOL_NAME=""']
    status = controller.status()
    assert (status.role, status.epoch, status.fenced) == ("relay", 1, True)
    assert running_sleeps("37.51") == []


def test_a_fence_on_a_hung_disk_ends_in_time_with_stop_command(
    node_files: NodeFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk stops answering: the fence mark and the env-file write never return. The fence
    # must still end within its bound (the demotion's apply_timeout, then stop_command's).
    controller = make(node_files, node_files.settings(apply_timeout=1.0))
    send(controller, "producer", 4)
    release = threading.Event()

    def hang(*_args: object, **_kwargs: object) -> None:
        release.wait(30)

    monkeypatch.setattr("bpfailover.actuator.methods.env_swap.atomic_write", hang)
    monkeypatch.setattr(controller.store, "save", hang)
    started = time.monotonic()
    try:
        controller.fence("test: no broker contact, on a hung disk")
        took = time.monotonic() - started
    finally:
        release.set()
    assert took <= 2 * 1.0 + MARK_WAIT + 0.5, took  # demotion_bound + the mark's wait + slack
    assert node_files.stop.calls(), "the node was stopped"
    status = controller.status()
    assert (status.role, status.fenced) == ("relay", True)
    assert status.error is not None and "did not finish" in status.error
    # A retained producer command at the fenced epoch does not bring it back.
    with pytest.raises(CommandRejected, match="reapply"):
        send(controller, "producer", 4)
