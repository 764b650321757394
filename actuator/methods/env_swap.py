"""``env-swap``: set the node's env file up for producer or relay, then restart the node.

Two ways of setting the file up (``env_mode``):

- ``files``: replace it with a copy of ``producer_env`` or ``relay_env``.
- ``pool_name``: toggle its ``POOL_NAME`` line in place (guild-operators' ``scripts/env``,
  ``bpfailover.actuator.methods.pool_name``), leaving every other line as it is. guild's updater
  rewrites that file, so whole-file variants go stale; the line survives its updates.
"""

from __future__ import annotations

from pathlib import Path

from bpfailover.actuator.atomic import atomic_write
from bpfailover.actuator.commands import StepFailed
from bpfailover.actuator.methods import pool_name
from bpfailover.actuator.methods.base import Budget, Method
from bpfailover.protocol.wire import AppliedRole, Role
from bpfailover.settings import ConfigError


class EnvSwap(Method):
    name = "env-swap"
    restarts_node = True

    @property
    def by_line(self) -> bool:
        return self.settings.env_mode == "pool_name"

    def check(self) -> None:
        s = self.settings
        if self.by_line:
            self._need(env_file=s.env_file, pool_name=s.pool_name, restart_command=s.restart_command)
            assert s.pool_name is not None
            if not pool_name.NAME.match(s.pool_name):
                raise ConfigError(
                    f"actuator.pool_name {s.pool_name!r} must be the pool's folder name under "
                    "priv/pool (letters, digits, '.', '_', '-')"
                )
            return
        self._need(
            env_file=s.env_file,
            producer_env=s.producer_env,
            relay_env=s.relay_env,
            restart_command=s.restart_command,
        )
        producer, relay = self._variant("producer"), self._variant("relay")
        if producer == relay:
            raise ConfigError(
                "actuator.producer_env and actuator.relay_env have the same content: "
                "the role could not be told apart"
            )

    def _variant(self, role: Role) -> bytes:
        path = self.settings.producer_env if role == "producer" else self.settings.relay_env
        assert path is not None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"actuator.{role}_env: cannot read {path}: {exc.strerror}") from None

    def detect_role(self) -> AppliedRole:
        assert self.settings.env_file is not None
        try:
            current = self.settings.env_file.read_bytes()
        except OSError:
            return "unknown"
        if self.by_line:
            assert self.settings.pool_name is not None
            found = pool_name.detect(_text(current), self.settings.pool_name)
            return found if found in ("producer", "relay") else "unknown"  # type: ignore[return-value]
        try:
            if current == self._variant("producer"):
                return "producer"
            if current == self._variant("relay"):
                return "relay"
        except ConfigError:
            pass
        return "unknown"

    def describe(self, role: Role) -> str:
        s = self.settings
        if self.by_line:
            line = f'POOL_NAME="{s.pool_name}"' if role == "producer" else '#POOL_NAME=""'
            return f"set {line} in {s.env_file}, then run {s.restart_command!r}"
        source = s.producer_env if role == "producer" else s.relay_env
        return f"replace {s.env_file} with {source}, then run {s.restart_command!r}"

    def wanted(self, role: Role, current: bytes | None) -> bytes:
        """The env file's content for ``role``; raise StepFailed when it cannot be made."""
        if not self.by_line:
            try:
                return self._variant(role)
            except ConfigError as exc:
                raise StepFailed(str(exc)) from None
        assert self.settings.pool_name is not None
        if current is None:
            raise StepFailed(f"{self.settings.env_file} does not exist: no POOL_NAME line to set")
        try:
            return pool_name.set_role(_text(current), role, self.settings.pool_name).encode(
                "utf-8", "surrogateescape"
            )
        except pool_name.NoPoolNameLine as exc:
            raise StepFailed(f"{self.settings.env_file}: {exc}") from None

    def _apply(self, role: Role, budget: Budget) -> None:
        s = self.settings
        assert s.env_file is not None
        env_file = s.env_file

        def swap() -> None:
            try:
                current: bytes | None = env_file.read_bytes()
            except FileNotFoundError:
                current = None
            wanted = self.wanted(role, current)
            if current != wanted:
                atomic_write(env_file, wanted)

        budget.files(swap, f"writing {env_file}")
        self.run(s.restart_command, "restart_command", budget)
        self.observer.node_restarted()


def _text(data: bytes) -> str:
    """Bytes as text that encodes back to the same bytes, whatever their encoding."""
    return data.decode("utf-8", "surrogateescape")
