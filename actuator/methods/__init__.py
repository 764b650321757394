"""Ways of applying a role: ``env-swap``, ``sighup`` and ``command`` (DESIGN §8)."""

from __future__ import annotations

from bpfailover.actuator.methods.base import ApplyError, Method
from bpfailover.actuator.methods.command import CommandMethod
from bpfailover.actuator.methods.env_swap import EnvSwap
from bpfailover.actuator.methods.sighup import SigHup
from bpfailover.settings import ActuatorSettings

METHODS: dict[str, type[Method]] = {"env-swap": EnvSwap, "sighup": SigHup, "command": CommandMethod}


def build_method(settings: ActuatorSettings) -> Method:
    """The configured method; raise ConfigError when its keys are missing."""
    return METHODS[settings.method](settings)


__all__ = ["METHODS", "ApplyError", "Method", "build_method"]
