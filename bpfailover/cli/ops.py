"""Operator commands: ``status`` and the control requests (switchover, failover, pause, ...).

They run with the operator's broker user, which reads everything under
``{prefix}/{pool}/`` and writes only the pool's control topic. A control command
subscribes to the events topic *before* it publishes its ControlRequest, then
waits for the DecisionEvent carrying the same ``request_id``.

Exit codes of the control commands: 0 accepted; 1 refused by the decider (the
reason is printed); 2 usage, configuration or broker error; 3 no answer in time.
``status`` exits with the worst code of its pools (see ``bpfailover.cli.status``).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import socket
import sys
import time
import uuid
from collections.abc import Callable

from bpfailover.cli import status as st
from bpfailover.durations import parse_duration
from bpfailover.link import Incoming, LinkError, MqttLink, PublishError, make_client_id
from bpfailover.logs import escape_control
from bpfailover.protocol.signing import KeyLoadError, load_signing_key, sign
from bpfailover.protocol.topics import TopicError, Topics, check_id
from bpfailover.protocol.wire import ControlRequest, DeciderStatus, DecisionEvent, PayloadRejected, decode
from bpfailover.settings import BpfConfig, ConfigError

EXIT_REFUSED = 1
EXIT_ERROR = 2
EXIT_TIMEOUT = 3

QUIET = 1.0  # status: stop collecting after this long without a new retained message
WATCH_REFRESH = 1.0


def fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"bpfailover: error: {escape_control(message)}", file=sys.stderr)
    return code


def configured_pools(config: BpfConfig) -> list[str]:
    pools = [p.id for p in config.pools]
    if config.pool.id and config.pool.id not in pools:
        pools.insert(0, config.pool.id)
    return pools


def select_pool(config: BpfConfig, wanted: str | None) -> str:
    pools = configured_pools(config)
    if wanted:
        if pools and wanted not in pools:
            raise ConfigError(f"--pool {wanted}: not in this configuration (pools: {', '.join(pools)})")
        return wanted
    if config.pool.id:
        return config.pool.id
    if len(pools) == 1:
        return pools[0]
    if not pools:
        raise ConfigError('no pool in the configuration: add [pool] id = "..." or pass --pool')
    raise ConfigError(f"several pools configured ({', '.join(pools)}): pass --pool")


def priorities(config: BpfConfig, pool: str) -> dict[str, int]:
    for spec in config.pools:
        if spec.id == pool:
            return {n.name: n.priority for n in spec.nodes}
    return {}


def requested_by() -> str:
    try:
        who = f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        who = "operator"
    return who[:64]


def run(args: argparse.Namespace, config: BpfConfig) -> int:
    try:
        if args.command == "status":
            return run_status(args, config)
        return run_control(args, config)
    except LinkError as exc:
        return fail(str(exc))


# --- control requests --------------------------------------------------------------------------


def build_request(args: argparse.Namespace, pool: str, now: float) -> ControlRequest:
    """The ControlRequest for a parsed control command. ``until`` is absolute unix time."""
    until = None
    if getattr(args, "until", None):
        try:
            until = now + parse_duration(args.until)
        except ValueError as exc:
            raise ConfigError(f"--until: {exc}") from None
    fields: dict[str, object] = {}
    action = args.command
    for flag, name in (("--to", getattr(args, "to", None)), ("NODE", getattr(args, "node", None))):
        if name is not None:
            try:
                check_id(name, "node name")
            except TopicError as exc:
                raise ConfigError(f"{flag}: {exc}") from None
    if action in ("switchover", "failover"):
        fields["to"] = args.to
        fields["force"] = bool(getattr(args, "force", False))
    elif action == "maintenance":
        fields["node"] = args.node
        fields["enabled"] = args.state == "on"
    try:
        return ControlRequest(
            request_id=uuid.uuid4().hex,
            pool=pool,
            action=action,
            until=until,
            requested_by=requested_by(),
            sent_at=now,
            **fields,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise ConfigError(f"invalid {action} request: {exc}".splitlines()[0]) from None


def sign_request(request: ControlRequest, config: BpfConfig) -> ControlRequest:
    """Sign with ``[operator] signing_key`` when set (the decider checks it with operator_key)."""
    path = config.operator.signing_key
    if path is None:
        return request
    try:
        key = load_signing_key(path)
    except KeyLoadError as exc:
        raise ConfigError(f"operator.signing_key: {exc}") from None
    return sign(request, key)


def answer_line(request: ControlRequest, event: DecisionEvent) -> str:
    """'switchover accepted: switchover to bp2 started at epoch 5' or '... refused: <why>'."""
    verdict = "refused" if event.ok is False else "accepted"
    detail = event.reason.removeprefix(f"{request.action}: ") or st.describe_event(event) or event.kind
    return escape_control(f"{request.action} {verdict}: {detail}")  # the reason is the decider's text


def run_control(args: argparse.Namespace, config: BpfConfig) -> int:
    pool = select_pool(config, args.pool)
    topics = Topics(config.mqtt.prefix)
    request = sign_request(build_request(args, pool, time.time()), config)
    link = MqttLink(
        config.mqtt,
        make_client_id("ops", pool, unique=True),
        subscriptions=[topics.events(pool), topics.decider(pool)],
    )
    link.start(attempts=3)
    try:
        return _exchange(link, topics, pool, request, args.timeout)
    finally:
        with contextlib.suppress(Exception):
            link.stop()


def _exchange(link: MqttLink, topics: Topics, pool: str, request: ControlRequest, timeout: float) -> int:
    # Wait for the broker's SUBACK before asking: brokers that apply subscriptions
    # asynchronously (AWS IoT) could otherwise miss the decider's answer.
    if not link.subscribed.wait(min(timeout, 10.0)):
        print(
            "bpfailover: error: the broker did not acknowledge the subscription to the events topic",
            file=sys.stderr,
        )
        return 2
    try:
        link.publish_wait(topics.control(pool), request.to_json(), timeout=min(timeout, 10.0))
    except PublishError as exc:
        return fail(f"{exc} (is this the operator's configuration?)")
    deadline = time.monotonic() + timeout
    decider: DeciderStatus | None = None
    while (left := deadline - time.monotonic()) > 0:
        item = link.get(timeout=left)
        if not isinstance(item, Incoming) or not item.payload:
            continue
        try:
            if item.topic == topics.decider(pool):
                decider = decode(DeciderStatus, item.payload, pool=pool)
                continue
            event = decode(DecisionEvent, item.payload, pool=pool)
        except PayloadRejected:
            continue
        if event.request_id != request.request_id or event.kind != "control":
            continue  # other events of the same request (e.g. the switchover itself) follow it
        print(answer_line(request, event))
        return EXIT_REFUSED if event.ok is False else 0
    hint = ""
    if decider is not None and not decider.online:
        hint = f" (its last status, {st.fmt_time(decider.updated_at)}, says offline)"
    elif decider is None:
        hint = " (no decider has ever published a status for this pool)"
    return fail(
        f"no answer from the decider within {timeout:g}s: is `bpfailover decider` running?{hint}",
        EXIT_TIMEOUT,
    )


# --- status ------------------------------------------------------------------------------------


class StatusSession:
    """A connected operator link collecting every selected pool's retained messages."""

    def __init__(self, config: BpfConfig, pools: list[str]) -> None:
        self.topics = Topics(config.mqtt.prefix)
        self.rules = st.Rules.from_config(config)
        self.collectors = {
            pool: st.PoolCollector(self.topics, pool, priorities(config, pool)) for pool in pools
        }
        self.link = MqttLink(
            config.mqtt,
            make_client_id("status", unique=True),
            subscriptions=[f"{self.topics.prefix}/{pool}/#" for pool in pools],
        )

    def start(self) -> None:
        self.link.start(attempts=2)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.link.stop()

    def pump(self, timeout: float) -> tuple[bool, bool]:
        """Take one inbox item; return (got a message, it was retained)."""
        item = self.link.get(timeout=timeout)
        if not isinstance(item, Incoming):
            return False, False
        for pool, collector in self.collectors.items():
            if item.topic.startswith(f"{self.topics.prefix}/{pool}/"):
                collector.feed(item.topic, item.payload, retain=item.retain, received_at=item.received_at)
        return True, item.retain

    def collect(self, timeout: float) -> None:
        """Read retained state until complete and quiet, or ``timeout`` seconds."""
        start = time.monotonic()
        deadline = start + timeout
        last = start
        while (now := time.monotonic()) < deadline:
            if all(c.complete() for c in self.collectors.values()) and now - last >= 0.2:
                return
            if now - last >= QUIET:
                return
            got, retained = self.pump(min(0.1, deadline - now))
            if got and retained:
                last = time.monotonic()

    def reports(self) -> list[st.PoolReport]:
        now = time.time()
        return [st.assess(c.view, now, self.rules) for c in self.collectors.values()]


def render(reports: list[st.PoolReport], as_json: bool, *, indent: int | None = 2) -> str:
    if as_json:
        return st.to_json(reports, indent=indent)
    return "\n\n".join(st.render_table(r) for r in reports)


def run_status(args: argparse.Namespace, config: BpfConfig, *, out: Callable[[str], None] = print) -> int:
    pools = [select_pool(config, args.pool)] if args.pool else configured_pools(config)
    if not pools:
        raise ConfigError('no pool in the configuration: add [pool] id = "..." or pass --pool')
    session = StatusSession(config, pools)
    session.start()
    try:
        session.collect(args.timeout)
        reports = session.reports()
        if not args.watch:
            out(render(reports, args.json))
            return max(r.code for r in reports)
        return _watch(session, args.json, out)
    finally:
        session.stop()


def _watch(session: StatusSession, as_json: bool, out: Callable[[str], None]) -> int:
    clear = sys.stdout.isatty() and not as_json
    code = st.EXIT_OK
    try:
        while True:
            reports = session.reports()
            code = max(r.code for r in reports)
            text = render(reports, as_json, indent=None)
            if clear:
                out("\x1b[H\x1b[2J" + text)
            else:
                out(text if as_json else text + "\n")
            deadline = time.monotonic() + WATCH_REFRESH
            while (left := deadline - time.monotonic()) > 0:
                session.pump(left)
    except KeyboardInterrupt:
        return code
