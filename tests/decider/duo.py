"""Two (or more) decider cores on the fake pool of ``sim``: each with its own instance id, presence
and Last Will, fed the same messages, as two decider processes on one broker would be."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bpfailover.decider.actions import Action, PublishEvent, PublishPresence, PublishRole, PublishStatus
from bpfailover.decider.core import Decider
from bpfailover.decider.model import Now, PoolView
from bpfailover.protocol.wire import DeciderStatus
from tests.decider.sim import KEEPALIVE, POOL, Sim

_instances = itertools.count(1)


@dataclass
class Member:
    decider_id: str
    standby: bool
    core: Decider
    up: bool = True

    @property
    def instance(self) -> str:
        assert self.core.ctx.instance is not None
        return self.core.ctx.instance


class Fleet:
    """Looks like one core to ``Sim``: every input goes to each running member, actions in order."""

    def __init__(self, duo: DuoSim) -> None:
        self.duo = duo
        self.members: list[Member] = []

    def running(self) -> list[Member]:
        return [m for m in self.members if m.up]

    def _all(self, call: str, *args: Any, **kw: Any) -> list[Action]:
        actions: list[Action] = []
        for m in self.running():
            actions += getattr(m.core, call)(*args, **kw)
        return actions

    def view(self, pool: str) -> PoolView:
        active = [m for m in self.running() if m.core.active]
        return (active or self.members)[0].core.view(pool)

    def on_link(self, connected: bool, now: Now) -> list[Action]:
        return self._all("on_link", connected, now)

    def on_tip(self, *args: Any, **kw: Any) -> list[Action]:
        return self._all("on_tip", *args, **kw)

    def on_state(self, *args: Any, **kw: Any) -> list[Action]:
        return self._all("on_state", *args, **kw)

    def on_role(self, *args: Any, **kw: Any) -> list[Action]:
        return self._all("on_role", *args, **kw)

    def on_status(self, *args: Any, **kw: Any) -> list[Action]:
        return self._all("on_status", *args, **kw)

    def on_control(self, *args: Any, **kw: Any) -> list[Action]:
        return self._all("on_control", *args, **kw)

    def tick(self, now: Now) -> list[Action]:
        return self._all("tick", now)


class DuoSim(Sim):
    """``Sim`` with several deciders: ``dec-1`` preferred and ``dec-2`` standby by default."""

    def __init__(self, deciders: Iterable[tuple[str, bool]] = (("dec-1", False), ("dec-2", True)), **kw: Any):
        self._wanted = list(deciders)
        self.presences: list[DeciderStatus] = []
        self.active_counts: list[int] = []
        super().__init__(**kw)

    def _new_decider(self) -> Decider:  # type: ignore[override]
        fleet = Fleet(self)
        for decider_id, standby in self._wanted:
            fleet.members.append(Member(decider_id, standby, self._core(decider_id, standby)))
        self.fleet = fleet
        return fleet  # type: ignore[return-value]

    def _core(self, decider_id: str, standby: bool) -> Decider:
        settings = self.settings.model_copy(update={"standby": standby})
        instance = f"i{next(_instances):04d}"
        return Decider(
            settings, [self.spec], decider_id, keepalive=KEEPALIVE, now=self.clock.now(), instance=instance
        )

    def member(self, decider_id: str) -> Member:
        return next(m for m in self.fleet.members if m.decider_id == decider_id and m.up)

    def _publish(self, action: Action) -> None:
        if isinstance(action, PublishPresence):
            status = action.status
            self.presences.append(status)
            self.retained[("presence", f"{status.decider}/{status.instance}")] = status
            self._deliver(lambda s=status: self.fleet._all("on_presence", POOL, s, self.now, retained=False))
            return
        if isinstance(action, PublishStatus):
            # Every decider reads the pool's status topic, the others' statuses included.
            self._deliver(lambda s=action.status: self.fleet.on_status(POOL, s, self.now, retained=False))
        super()._publish(action)

    def start(self, producer: str | None = None, epoch: int = 0) -> None:
        for name, act in self.actuators.items():
            if producer is not None:
                act.epoch = epoch
                act.role = act.stored_role = "producer" if name == producer else "relay"
            self.publish_state(name)
        self._execute(self.decider.on_link(True, self.now))
        self._drain()
        self.send_tips()

    def tick(self) -> None:
        super().tick()
        self.active_counts.append(sum(1 for m in self.fleet.running() if m.core.active))

    # --- deciders come and go -----------------------------------------------------------------

    def kill(self, decider_id: str) -> None:
        """A crash: the broker publishes its Wills (presence offline, and the pool status if active)."""
        member = self.member(decider_id)
        member.up = False
        will = member.core.presence(self.now, online=False)
        assert will is not None
        self._publish(will)
        status_will = member.core.will(self.now)
        if status_will is not None:
            self._publish(status_will)
        self._drain()

    def start_decider(self, decider_id: str, standby: bool = False) -> Member:
        """A new process: it reads everything retained, then runs."""
        member = Member(decider_id, standby, self._core(decider_id, standby))
        self.fleet.members.append(member)
        core = member.core
        self._execute(core.on_link(True, self.now))
        for (kind, _key), msg in list(self.retained.items()):
            if kind == "tip":
                actions = core.on_tip(POOL, msg, self.now, received_at=self.now.wall, retained=True)
            elif kind == "state":
                actions = core.on_state(POOL, msg, self.now)
            elif kind == "role":
                actions = core.on_role(POOL, msg, self.now, retained=True)
            elif kind == "decider":
                actions = core.on_status(POOL, msg, self.now, retained=True)
            elif kind == "presence":
                actions = core.on_presence(POOL, msg, self.now, retained=True)
            else:
                continue
            self._execute(actions)
        self._drain()
        return member

    def commanders(self) -> list[str]:
        return [c.decider for _, c in self.roles]

    def events_of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.kind == kind]

    @staticmethod
    def roles_in(actions: list[Action]) -> list[PublishRole]:
        return [a for a in actions if isinstance(a, PublishRole)]

    @staticmethod
    def events_in(actions: list[Action]) -> list[PublishEvent]:
        return [a for a in actions if isinstance(a, PublishEvent)]
