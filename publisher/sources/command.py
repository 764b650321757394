"""Tip from any command that prints cardano-cli style tip JSON (run by ``/bin/sh -c``).

For setups the other sources do not cover, e.g. a node in a container:
``command = "docker exec cardano-node cardano-cli query tip --mainnet"``.
"""

from __future__ import annotations

from bpfailover.publisher.sources.base import TipSample
from bpfailover.publisher.sources.process import run_command
from bpfailover.publisher.sources.tipjson import parse_tip_json


class CommandSource:
    name = "command"

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout

    def sample(self) -> TipSample:
        out = run_command(["/bin/sh", "-c", self.command], timeout=self.timeout, what="tip command")
        return parse_tip_json(out, "tip command output")
