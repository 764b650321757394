"""Durable state and atomic file replacement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bpfailover.actuator.atomic import atomic_move, atomic_write
from bpfailover.actuator.methods import build_method
from bpfailover.actuator.state import StateCorrupt, StateStore, StoredState
from tests.actuator.helpers import PRODUCER_ENV, RELAY_ENV, NodeFiles


def test_state_survives_a_new_store_instance(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state", "pool1", "bp1")
    assert store.load() is None
    store.save(StoredState(pool="pool1", node="bp1", epoch=7, role="producer", pending="producer"))
    again = StateStore(tmp_path / "state", "pool1", "bp1").load()
    assert again is not None
    assert (again.epoch, again.role, again.pending, again.fenced) == (7, "producer", "producer", False)
    assert (store.path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"v":1,"pool":"pool1","node":"bp1","epoch":-1,"role":"relay"}', b"", b"[]"],
    ids=["truncated", "negative-epoch", "empty", "wrong-type"],
)
def test_corrupt_state_file_is_reported(tmp_path: Path, content: bytes) -> None:
    store = StateStore(tmp_path, "pool1", "bp1")
    store.path.write_bytes(content)
    with pytest.raises(StateCorrupt, match="corrupt"):
        store.load()


def test_state_file_of_another_node_is_refused(tmp_path: Path) -> None:
    StateStore(tmp_path, "pool1", "bp2").save(StoredState(pool="pool1", node="bp2", epoch=3, role="producer"))
    with pytest.raises(StateCorrupt, match="belongs to pool1/bp2"):
        StateStore(tmp_path, "pool1", "bp1").load()


def test_atomic_write_keeps_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "env"
    target.write_bytes(b"old\n")
    target.chmod(0o640)
    atomic_write(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert (target.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env"]


def test_crash_between_write_and_rename_leaves_the_old_whole_file(
    node_files: NodeFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the temp file is written but before the rename: env is still the old relay file."""
    method = build_method(node_files.settings())
    assert node_files.env_file.read_bytes() == RELAY_ENV

    def crash(src: object, dst: object) -> None:
        assert Path(str(src)).read_bytes() == PRODUCER_ENV  # the new content was fully written
        raise SystemExit("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SystemExit):
        method.apply("producer")
    monkeypatch.undo()
    assert node_files.env_file.read_bytes() == RELAY_ENV
    assert [p.name for p in node_files.root.iterdir() if p.name.startswith(".env")] == []
    assert node_files.restart.calls() == []


def test_atomic_move_across_filesystems_copies_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    src, dst = tmp_path / "a" / "kes.skey", tmp_path / "b" / "kes.skey"
    src.parent.mkdir()
    dst.parent.mkdir()
    src.write_bytes(b"secret")
    src.chmod(0o600)
    real_replace = os.replace

    def exdev_once(a: object, b: object) -> None:
        if Path(str(a)) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", exdev_once)
    atomic_move(src, dst)
    assert not src.exists()
    assert dst.read_bytes() == b"secret"
    assert (dst.stat().st_mode & 0o777) == 0o600
