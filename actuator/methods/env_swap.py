"""``env-swap``: replace the node's env file with the producer or relay variant, then restart."""

from __future__ import annotations

from pathlib import Path

from actuator.atomic import atomic_write
from actuator.commands import StepFailed
from actuator.methods.base import Budget, Method
from bpfailover.settings import ConfigError
from bpfailover.wire import AppliedRole, Role


class EnvSwap(Method):
    name = "env-swap"

    def check(self) -> None:
        s = self.settings
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
        source = s.producer_env if role == "producer" else s.relay_env
        return f"replace {s.env_file} with {source}, then run {s.restart_command!r}"

    def _apply(self, role: Role, budget: Budget) -> None:
        s = self.settings
        assert s.env_file is not None
        env_file = s.env_file

        def swap() -> None:
            try:
                wanted = self._variant(role)
            except ConfigError as exc:
                raise StepFailed(str(exc)) from None
            try:
                current = env_file.read_bytes()
            except FileNotFoundError:
                current = None
            if current != wanted:
                atomic_write(env_file, wanted)

        budget.files(swap, f"writing {env_file}")
        self.run(s.restart_command, "restart_command", budget)
