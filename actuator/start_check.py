"""What ``config check`` can tell about a node's start-up that would make the method fail.

Relay, for the sighup method, means the node runs with its key paths configured and the files
away: cardano-node re-reads the paths it was *started* with on SIGHUP, so a node started without
``--shelley-kes-key`` / ``--shelley-vrf-key`` / ``--shelley-operational-certificate`` can never
be promoted by SIGHUP. It should start with the non-producing flag (``--non-producing-node`` up
to 10.4.x, ``--start-as-non-producing-node`` from 10.5), so that it does not forge before its
actuator has a command. guild-operators' ``cnode.sh`` passes the key flags only when all three
files exist in ``$POOL_DIR``: started while relay (keys in key_store) it gets none.

Pure text checks, one warning line each; nothing here stops a service.
"""

from __future__ import annotations

import re
from pathlib import Path

from bpfailover.actuator.methods import pool_name
from bpfailover.settings import ActuatorSettings

KEY_FLAGS = ("--shelley-kes-key", "--shelley-vrf-key", "--shelley-operational-certificate")
NON_PRODUCING = ("--start-as-non-producing-node", "--non-producing-node")
# guild's cnode.sh: `[[ -f "${POOL_DIR}/${POOL_OPCERT_FILENAME}" && -f ... ]]` around the key flags.
_GUILD_CONDITION = re.compile(r"-f\s+\"?\$\{?POOL_DIR")


def script_warnings(text: str, where: str) -> list[str]:
    """Warnings about a start script's text (``actuator.start_script``)."""
    out: list[str] = []
    missing = [flag for flag in KEY_FLAGS if flag not in text]
    if missing:
        out.append(
            f"{where} passes no {', '.join(missing)}: a node started without key paths can never be "
            "promoted by SIGHUP (method sighup); start it with the key paths and the files away"
        )
    elif _GUILD_CONDITION.search(text):
        out.append(
            f"{where} looks like guild's cnode.sh, which passes the key flags only when all three key "
            "files exist in $POOL_DIR: started while relay (keys in key_store) the node gets no key "
            "paths and SIGHUP can never promote it; start it with the key paths always (e.g. "
            "CUSTOM_RUN_ARGS) and the non-producing flag"
        )
    if not any(flag in text for flag in NON_PRODUCING):
        out.append(
            f"{where} has neither --start-as-non-producing-node (node 10.5+) nor --non-producing-node "
            "(up to 10.4.x): with its keys in place at start the node forges before its actuator has a "
            "command"
        )
    return out


def sighup_warnings(s: ActuatorSettings) -> list[str]:
    """What can be told from the files of a sighup actuator."""
    if s.method != "sighup":
        return []
    out: list[str] = []
    if not s.metrics_url and s.node_log is None:
        out.append(
            "actuator.method is 'sighup' without actuator.metrics_url or actuator.node_log: a SIGHUP "
            "cannot be confirmed from the node (the change is assumed; NodeState says forging: null)"
        )
    keys = [p for p in (s.kes_key, s.vrf_key, s.opcert) if p is not None]
    if keys and s.key_store is not None:
        nowhere = [p.name for p in keys if not p.exists() and not (s.key_store / p.name).exists()]
        if len(nowhere) == len(keys):
            out.append(
                f"actuator: none of the key files ({', '.join(nowhere)}) is at its path or in "
                f"key_store {s.key_store}: this node can never be promoted"
            )
        elif nowhere:
            out.append(
                f"actuator: {', '.join(nowhere)} neither at its path nor in key_store {s.key_store}: "
                "a promotion would fail"
            )
    if s.start_script is not None:
        try:
            text = Path(s.start_script).read_text(errors="replace")
        except OSError as exc:
            out.append(f"actuator.start_script: cannot read {s.start_script}: {exc.strerror or exc}")
        else:
            out += script_warnings(text, f"actuator.start_script {s.start_script}")
    if s.env_file is not None:
        try:
            text = Path(s.env_file).read_text(errors="surrogateescape")
        except OSError:
            text = None
        if text is not None and pool_name.detect(text, "x") in ("relay",):
            out.append(
                f"actuator.env_file {s.env_file} leaves POOL_NAME unset: guild's cnode.sh then starts the "
                "node without key paths, and SIGHUP can never promote it"
            )
    return out
