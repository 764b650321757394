"""Tip from ``cardano-cli query tip`` over the node's local socket."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bpfailover.publisher.chain import Chain
from bpfailover.publisher.sources.base import SourceError, TipSample
from bpfailover.publisher.sources.process import run_command_full
from bpfailover.publisher.sources.tipjson import parse_tip_json

SOCKET_ENV = "CARDANO_NODE_SOCKET_PATH"


class CardanoCliSource:
    name = "cardano-cli"

    def __init__(self, cli: str, chain: Chain, socket_path: Path | None, timeout: float) -> None:
        self.cli = cli
        self.network_args = chain.cli_network_args()  # ConfigError now rather than at every sample
        self.socket_path = socket_path
        self.timeout = timeout

    def _socket(self) -> Path:
        raw = self.socket_path if self.socket_path is not None else os.environ.get(SOCKET_ENV)
        if not raw:
            raise SourceError(f"no node socket: set publisher.socket_path or {SOCKET_ENV}")
        path = Path(raw)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise SourceError(f"node socket {path} does not exist (is cardano-node running?)") from None
        except OSError as exc:
            raise SourceError(f"node socket {path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(mode):
            raise SourceError(f"node socket {path} is not a socket")
        return path

    def command(self, socket: Path) -> list[str]:
        return [self.cli, "query", "tip", *self.network_args, "--socket-path", str(socket)]

    def sample(self) -> TipSample:
        socket = self._socket()
        out, err = run_command_full(self.command(socket), timeout=self.timeout, what="cardano-cli query tip")
        return parse_cli_tip(out, err)


def parse_cli_tip(out: bytes, err: bytes = b"") -> TipSample:
    """The tip from ``cardano-cli query tip``'s stdout, its stderr explaining a ``null``.

    cardano-cli prints ``null`` (and exits 0) when its local state query failed: it then
    writes "Warning: Local state unavailable: <why>" on stderr. No tip, and the reason.
    """
    if out.strip() == b"null":
        warning = next(
            (ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if "Local state" in ln), ""
        )
        why = warning.split("Local state unavailable:", 1)[-1].strip() if warning else ""
        raise SourceError(
            "cardano-cli query tip printed null: the node's local state is unavailable"
            + (f" ({why})" if why else "")
            + "; the node may still be starting"
        )
    return parse_tip_json(out, "cardano-cli output")
