"""``command``: the operator's own promote and demote commands."""

from __future__ import annotations

from bpfailover.actuator.methods.base import Budget, Method
from bpfailover.protocol.wire import AppliedRole, Role


class CommandMethod(Method):
    name = "command"

    def check(self) -> None:
        s = self.settings
        self._need(promote_command=s.promote_command, demote_command=s.demote_command)

    def detect_role(self) -> AppliedRole | None:
        return None  # only the stored state says what was applied

    def _command(self, role: Role) -> str:
        command = self.settings.promote_command if role == "producer" else self.settings.demote_command
        assert command
        return command

    def describe(self, role: Role) -> str:
        return f"run {self._command(role)!r}"

    def _apply(self, role: Role, budget: Budget) -> None:
        what = "promote_command" if role == "producer" else "demote_command"
        self.run(self._command(role), what, budget)
