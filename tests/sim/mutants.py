"""Safety fixes reverted one at a time (monkeypatched, for the simulation only), to show
that the simulation finds what each one prevents: ``python -m tests.sim --mutant NAME``.

Each mutant restores the behaviour before the fix it names:

- ``reapply``: the actuator takes a producer command at its stored epoch again after it
  left producer (fenced): a rolled-back broker's old command re-promotes it (class 1).
- ``republish``: the decider leaves an older retained role command read back alone (class 1).
- ``recommand``: the decider does not notice that its producer lost the role (fenced, or
  relay after a broker that lost its retained state): the pool stays without one (class 2).
- ``clean_stop``: a clean stop reports offline promising its fence, like a crash (class 3).
- ``stop_will``: the decider forgets a clean stop when that connection's Will follows (class 3).
- ``contact_any``: any packet from the broker (CONNACK, SUBACK, PINGRESP) is contact (class 4).
- ``will_conn``: the decider keeps timing the fence from the first Will of a series (class 4).
- ``contact_any+will_conn``: both (class 4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from bpfailover.actuator import core as actuator_core
from bpfailover.actuator import policy
from bpfailover.actuator.core import ActuatorCore
from bpfailover.actuator.policy import CommandRejected, Verdict
from bpfailover.decider import pool as decider_pool
from bpfailover.decider import safety
from bpfailover.decider.model import Command, NodeView, Now
from bpfailover.protocol.wire import NodeState, RoleCommand
from tests.sim import world as sim_world


def _epoch_rule_without_reapply(
    command: RoleCommand, stored_epoch: int, stored_role: Any, applied: Any = "producer"
) -> Verdict:
    if command.epoch > stored_epoch:
        return Verdict("apply", command)
    if command.epoch < stored_epoch:
        raise CommandRejected("stale_epoch", f"epoch {command.epoch} < {stored_epoch}")
    if command.role != stored_role:
        raise CommandRejected("epoch_conflict", f"{command.role} at epoch {command.epoch}")
    return Verdict("confirm", command)


def _on_role_without_republish(self: Any, command: RoleCommand, retained: bool, now: Now) -> list[Any]:
    self._settled_until = None
    node = self.view.nodes[command.node]
    current = node.command
    if current is not None and current.epoch == command.epoch and current.role == command.role:
        current.confirmed = True
    elif current is None or command.epoch > current.epoch:
        node.command = Command(command.role, command.epoch, confirmed=True, decider=command.decider)
    return []


def _stop_like_a_crash(self: ActuatorCore, conn: str) -> NodeState:
    self.last_conn = conn
    return self.node_state(online=False)


def _promises_fence_ignoring_stop_conn(self: NodeView) -> bool:
    s = self.state
    return s is not None and s.fence_after > 0 and not s.stopped


def _on_state_first_will(original: Callable[..., Any]) -> Callable[..., Any]:
    def on_state(self: Any, state: NodeState, now: Now, **kwargs: Any) -> Any:
        node = self.view.nodes[state.node]
        before = node.offline_since
        actions = original(self, state, now, **kwargs)
        if not state.online and before is not None:
            node.offline_since = before
        return actions

    return on_state


@contextlib.contextmanager
def _patch(target: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


def _patches(name: str) -> list[tuple[Any, str, Any]]:
    if name == "reapply":
        return [(policy, "epoch_rule", _epoch_rule_without_reapply)]
    if name == "republish":
        return [(decider_pool.PoolMachine, "on_role", _on_role_without_republish)]
    if name == "recommand":
        return [(safety, "producer_lost", lambda *a, **k: None)]
    if name == "clean_stop":
        return [(actuator_core.ActuatorCore, "stop", _stop_like_a_crash)]
    if name == "stop_will":
        return [(NodeView, "promises_fence", _promises_fence_ignoring_stop_conn)]
    if name == "contact_any":
        return [(sim_world, "CONTACT_ANY_PACKET", True)]
    if name == "will_conn":
        return [
            (decider_pool.PoolMachine, "on_state", _on_state_first_will(decider_pool.PoolMachine.on_state))
        ]
    if "+" in name:
        return [p for part in name.split("+") for p in _patches(part)]
    raise KeyError(f"unknown mutant {name!r}; known: {', '.join(MUTANTS)}")


MUTANTS = [
    "reapply",
    "republish",
    "recommand",
    "clean_stop",
    "stop_will",
    "contact_any",
    "will_conn",
    "contact_any+will_conn",
]


@contextlib.contextmanager
def mutant(name: str | None) -> Iterator[None]:
    """Revert the named fix for the duration (None: nothing)."""
    if not name:
        yield
        return
    with contextlib.ExitStack() as stack:
        for target, attr, value in _patches(name):
            stack.enter_context(_patch(target, attr, value))
        yield
