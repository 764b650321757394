"""The ``bpfailover`` command line: one console command with a subcommand per job."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bpfailover import __version__
from bpfailover.logs import escape_control, setup_logging
from bpfailover.settings import BpfConfig, ConfigError, load_config

log = logging.getLogger("bpfailover")


class UsageError(Exception):
    """A mistake on the command line or in the environment the user can fix."""


def _config(args: argparse.Namespace) -> BpfConfig:
    if not args.config:
        raise UsageError("no configuration file: pass -c FILE (or set BPF_CONFIG)")
    return load_config(Path(args.config))


# --- subcommand handlers (imports are lazy so that each command loads only its component) ---


def _cmd_init(args: argparse.Namespace) -> int:
    from bpfailover.broker.bundle import BundleError, write_bundle

    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    try:
        summary = write_bundle(
            Path(args.dir),
            pool=args.pool,
            nodes=nodes,
            broker_host=args.broker_host,
            broker_port=args.broker_port,
            prefix=args.prefix,
            force=args.force,
            deciders=args.deciders,
        )
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    print(summary)
    return 0


def _cmd_publisher(args: argparse.Namespace) -> int:
    from bpfailover.publisher.service import run

    return run(_config(args))


def _cmd_actuator(args: argparse.Namespace) -> int:
    from bpfailover.actuator.service import run

    return run(_config(args))


def _cmd_decider(args: argparse.Namespace) -> int:
    from bpfailover.decider.service import run

    return run(_config(args))


def _cmd_config_check(args: argparse.Namespace) -> int:
    import json

    from bpfailover.cli.config_check import problems, render

    config = _config(args)
    path = Path(args.config)
    found = problems(config, path)
    if found:
        if args.json:
            print(json.dumps({"file": str(path), "valid": False, "errors": found}, indent=2))
        for problem in found:
            print(f"bpfailover: error: {path}: {problem}", file=sys.stderr)
        return 2
    print(render(config, path, as_json=args.json))
    return 0


def _cmd_ops(args: argparse.Namespace) -> int:
    from bpfailover.cli import ops

    return ops.run(args, _config(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    from bpfailover.cli.demo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpfailover",
        description="Automatic, split-brain-safe failover for Cardano block producers over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"bpfailover {__version__}")
    levels = ["debug", "info", "warning", "error"]
    parser.add_argument(
        "--log-level",
        default=os.environ.get("BPF_LOG_LEVEL", "info"),
        choices=levels,
        help="log verbosity (default: info, or BPF_LOG_LEVEL); also accepted after the subcommand",
    )
    # The same option after the subcommand; SUPPRESS keeps it from overriding the one before.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=levels, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            default=os.environ.get("BPF_CONFIG"),
            help="TOML configuration file (default: $BPF_CONFIG)",
        )
        return p

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common])
        if config:
            with_config(p)
        p.set_defaults(handler=handler)
        return p

    p = add(
        "init",
        _cmd_init,
        "write a complete deployment bundle (broker, certificates, configs, keys)",
        config=False,
    )
    p.add_argument("dir", help="folder to create")
    p.add_argument("--pool", required=True, help="pool id (1-32 of a-z 0-9 _ -)")
    p.add_argument("--nodes", required=True, help="comma-separated node names, first is the initial producer")
    p.add_argument("--broker-host", default="127.0.0.1", help="host name clients use for the broker")
    p.add_argument("--broker-port", type=int, default=8883, help="TLS port of the broker (default 8883)")
    p.add_argument("--prefix", default="bpfailover", help="topic prefix (default bpfailover)")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle")
    p.add_argument(
        "--deciders",
        type=int,
        default=1,
        choices=(1, 2),
        help="2: also write decider-2.toml, a standby decider with its own broker user (default 1)",
    )

    add("publisher", _cmd_publisher, "publish this node's chain tip to the broker")
    add("actuator", _cmd_actuator, "apply the role the decider commands on this node")
    add("decider", _cmd_decider, "watch tips and node states and command roles")

    p = add("status", _cmd_ops, "show pools, nodes, roles, tips and eligibility")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--pool", help="only this pool")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to collect retained state")

    p = add("switchover", _cmd_ops, "graceful change of producer: demote, acknowledge, promote")
    p.add_argument("--to", required=True, help="node to promote")
    p = add("failover", _cmd_ops, "change producer now; with --force skip the old producer's acknowledgement")
    p.add_argument("--to", required=True, help="node to promote")
    p.add_argument("--force", action="store_true", help="assert the old producer is dead")
    p = add("pause", _cmd_ops, "stop automatic failover (decisions still go to the dry-run topic)")
    p.add_argument("--until", help="resume automatically after this duration (e.g. 2h)")
    add("resume", _cmd_ops, "resume automatic failover")
    p = add("maintenance", _cmd_ops, "put a node in or out of maintenance (never promoted meanwhile)")
    p.add_argument("node", help="node name")
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--until", help="maintenance ends after this duration (e.g. 4h)")
    for name in ("switchover", "failover", "pause", "resume", "maintenance"):
        sp = sub.choices[name]
        sp.add_argument("--pool", help="pool id (default: the only pool in the config)")
        sp.add_argument(
            "--timeout", type=float, default=15.0, help="seconds to wait for the decider's answer"
        )

    p = add(
        "demo", _cmd_demo, "run a local failover demo: broker, decider and two simulated nodes", config=False
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary bundle for inspection")

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = with_config(
        cfg_sub.add_parser(
            "check", help="validate a file and print the effective configuration", parents=[common]
        )
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"bpfailover: error: {escape_control(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
