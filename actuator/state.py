"""The actuator's durable memory: the highest epoch applied and the role it commanded.

One small JSON file per node, replaced atomically. It is written before a promotion
(so the node is never producer at an epoch it has not recorded), marks an apply in
progress with ``pending`` (so a crash mid-apply is redone, not trusted), and records a
self-fence so a restarted actuator does not promote again without a command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bpfailover.actuator.atomic import atomic_write
from bpfailover.protocol.topics import NodeName, PoolId
from bpfailover.protocol.wire import Role, RoleCommand, summarise

STATE_FILE = "actuator-state.json"


class StateCorrupt(ValueError):
    """The state file exists but cannot be trusted; the node is then treated as a relay."""


class StoredState(BaseModel):
    """What survives a restart. ``role`` is the commanded role at ``epoch``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    v: int = 1
    pool: PoolId
    node: NodeName
    epoch: int = Field(ge=0)
    role: Role
    fenced: bool = False
    pending: Role | None = None
    updated_at: float = Field(default_factory=time.time)
    # The command accepted at ``epoch``, signature included: what proves the epoch to a decider.
    command: RoleCommand | None = None

    def desired_role(self) -> Role:
        """The role the node should have from this record alone (a fenced node stays relay)."""
        return "relay" if self.fenced else self.role


class StateStore:
    """Load and save ``StoredState`` at ``state_dir/actuator-state.json``."""

    def __init__(self, state_dir: Path, pool: str, node: str) -> None:
        self.path = Path(state_dir) / STATE_FILE
        self.pool = pool
        self.node = node

    def load(self) -> StoredState | None:
        """The stored state, None when there is none yet; raise StateCorrupt if unreadable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateCorrupt(f"state file {self.path} cannot be read: {exc}") from None
        try:
            state = StoredState.model_validate_json(raw)
        except ValidationError as exc:
            raise StateCorrupt(
                f"state file {self.path} is corrupt ({summarise(exc, 'content')[:160]})"
            ) from None
        if (state.pool, state.node) != (self.pool, self.node):
            raise StateCorrupt(
                f"state file {self.path} belongs to {state.pool}/{state.node}, not {self.pool}/{self.node}"
            )
        return state

    def save(self, state: StoredState) -> None:
        """Write atomically and durably (temp file, fsync, rename, fsync folder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(state.model_dump(mode="json"), sort_keys=True).encode() + b"\n"
        atomic_write(self.path, data, mode=0o600)
