"""Configuration: one model per TOML section, loaded from a file and ``BPF_<SECTION>__<KEY>``.

Environment variables win over the file. Relative paths in the file are resolved
against the file's own folder, so a bundle written by ``bpfailover init`` can be
moved as a whole. Every error names the offending key in one line.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bpfailover.durations import Duration
from bpfailover.protocol.topics import DEFAULT_PREFIX, NodeName, PoolId, check_prefix


class ConfigError(ValueError):
    """A configuration the operator must fix; the message is one actionable line."""


# Keys whose values an error message never quotes: passwords, and webhook URLs, which
# usually carry their token in the path (Slack, Discord, Teams).
SECRET_KEYS = frozenset({"password", "webhook_url"})


def masked_url(url: str) -> str:
    """``scheme://host[:port]/...``: enough to tell which service, never the path or credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    host = f"[{host}]" if ":" in host else host
    rest = "/..." if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook, in words that do not quote it; None if it can."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError:
        return "is not a valid URL (value not shown: it may hold a token)"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https:// (value not shown: it may hold a token)"
    if not host:
        return "has no host name (value not shown: it may hold a token)"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains spaces or control characters (value not shown: it may hold a token)"
    return None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MqttSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=1, le=65535)
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: Duration = 30.0
    prefix: str = DEFAULT_PREFIX
    client_id: str | None = None
    connect_timeout: Duration = 10.0

    @field_validator("keepalive")
    @classmethod
    def _keepalive(cls, value: float) -> float:
        if value < 5:
            raise ValueError("must be at least 5 seconds")
        return value

    @model_validator(mode="after")
    def _check(self) -> MqttSettings:
        check_prefix(self.prefix)
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self

    def secret(self) -> str | None:
        """The password, from ``password`` or the first line of ``password_file``."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                return self.password_file.read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file}: {exc}") from None
        return None


class PoolSettings(Section):
    id: PoolId | None = None


class NodeSettings(Section):
    name: NodeName | None = None
    priority: int = Field(default=100, ge=0)


Source = Literal["cardano-cli", "prometheus", "command", "simulate"]
Network = Literal["mainnet", "preprod", "preview", "custom"]


class PublisherSettings(Section):
    source: Source = "cardano-cli"
    interval: Duration = 10.0
    network: Network = "mainnet"
    cardano_cli: str = "cardano-cli"
    socket_path: Path | None = None
    testnet_magic: int | None = None
    metrics_url: str = "http://127.0.0.1:12798/metrics"
    command: str | None = None
    stall_file: Path | None = None
    timeout: Duration = 10.0
    slot_offset: float | None = None
    slot_length: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> PublisherSettings:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.source == "command" and not self.command:
            raise ValueError("source 'command' needs publisher.command")
        if self.network == "custom" and self.slot_offset is None:
            raise ValueError("network 'custom' needs publisher.slot_offset")
        return self


Method = Literal["env-swap", "sighup", "command"]


class ActuatorSettings(Section):
    method: Method = "env-swap"
    env_file: Path | None = None
    # env-swap: "files" replaces env_file with producer_env or relay_env; "pool_name" toggles
    # the POOL_NAME line of guild-operators' env file in place (pool_name = the pool's folder).
    env_mode: Literal["files", "pool_name"] = "files"
    pool_name: str | None = None
    producer_env: Path | None = None
    relay_env: Path | None = None
    restart_command: str = "systemctl restart cnode"
    stop_command: str | None = "systemctl stop cnode"
    promote_command: str | None = None
    demote_command: str | None = None
    # sighup: the paths the node was started with, and where the keys rest while relay
    kes_key: Path | None = None
    vrf_key: Path | None = None
    opcert: Path | None = None
    key_store: Path | None = None
    pid_file: Path | None = None
    sighup_command: str | None = None
    state_dir: Path = Path("/var/lib/bpfailover")
    fence_after: Duration = 120.0
    # A demotion may take 2 x this; see NodeState.fence_after. 45 s keeps the fence wait of the
    # defaults (advertised 211 s, + 37 s under the systemd watchdog) inside stale_after.
    apply_timeout: Duration = 45.0
    apply_retries: int = Field(default=3, ge=1, le=20)
    apply_retry_wait: Duration = 2.0  # first backoff between attempts, doubling up to 30 s
    dry_run: bool = False
    verify_key: str | None = None
    # The longest this node may take to come up after a restart the actuator ran for a role
    # change (a ledger replay can take many minutes); reported in NodeState so that the decider
    # does not judge the restarting node stale meanwhile (capped by [decider] max_start_timeout).
    start_timeout: Duration = 1200.0
    # Where the actuator observes the node's forging state (actuator/observe.py): its Prometheus
    # endpoint (``forging_enabled``) and/or its log file ("Enabling/Disabling block forging").
    # Without either, a sighup role change cannot be confirmed and NodeState says forging: null.
    metrics_url: str | None = None
    node_log: Path | None = None
    # The script that starts cardano-node (guild's cnode.sh, or your own): only read by
    # ``config check``, to warn when the node would start without the key paths SIGHUP needs.
    start_script: Path | None = None


class DeciderSettings(Section):
    id: str | None = None
    stale_after: Duration = 300.0
    tick: Duration = 1.0
    rise: int = Field(default=2, ge=1)
    min_switch_interval: Duration = 300.0
    max_failovers: int = Field(default=3, ge=1)
    flap_window: Duration = 3600.0
    startup_grace: Duration = 30.0
    max_clock_skew: Duration = 10.0
    apply_timeout: Duration = 120.0
    fence_margin: Duration = 10.0
    status_interval: Duration = 30.0
    failback: bool = False
    dry_run: bool = False
    signing_key: Path | None = None
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0 = no /metrics endpoint
    metrics_address: str = "127.0.0.1"
    webhook_url: str | None = None
    webhook_format: Literal["json", "slack"] = "json"
    kes_alert_periods: int = Field(default=5, ge=0)
    # Two deciders per pool: the standby defers while a preferred decider is present, and
    # takes over takeover_delay after the active one's presence went offline.
    standby: bool = False
    takeover_delay: Duration = 60.0
    # The operator key's public half (a file, or the key in base64): control requests that
    # change roles must be signed with it. Unset: unsigned requests are accepted (a warning).
    operator_key: str | None = None
    # The most a node's advertised start_timeout is honoured: while a node restarts for a role
    # change, its tip is not judged stale (if producer) and it is not eligible (if not), until its
    # tip is fresh again or this much has passed since its state said so.
    max_start_timeout: Duration = 1200.0
    # A producer whose actuator reports its node not forging (observed, after consensus started)
    # for this long, while its tip is fresh, is failed over: its actuator re-applies the role
    # first (a SIGHUP), so this must leave it time for that.
    not_forging_after: Duration = 120.0

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        problem = url_problem(value) if value else None
        if problem is not None:
            raise ValueError(problem)
        return value


class OperatorSettings(Section):
    """The operator commands (switchover, failover, pause, resume, maintenance)."""

    signing_key: Path | None = None  # signs control requests; the decider checks operator_key


class PoolNode(Section):
    name: NodeName
    priority: int = Field(default=100, ge=0)


class PoolSpec(Section):
    id: PoolId
    nodes: list[PoolNode] = Field(min_length=1)
    initial_producer: NodeName | None = None
    dry_run: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):
            data = dict(data)
            data["nodes"] = [{"name": n} if isinstance(n, str) else n for n in data["nodes"]]
        return data

    @model_validator(mode="after")
    def _check(self) -> PoolSpec:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"pool {self.id}: node names repeat")
        if self.initial_producer is not None and self.initial_producer not in names:
            raise ValueError(f"pool {self.id}: initial_producer {self.initial_producer!r} is not in nodes")
        return self


_PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "mqtt": ("ca_file", "cert_file", "key_file", "password_file"),
    "publisher": ("socket_path", "stall_file"),
    "actuator": (
        "env_file",
        "producer_env",
        "relay_env",
        "kes_key",
        "vrf_key",
        "opcert",
        "key_store",
        "pid_file",
        "state_dir",
        "node_log",
        "start_script",
    ),
    "decider": ("signing_key",),
    "operator": ("signing_key",),
}


class BpfConfig(BaseSettings):
    """The whole configuration; each component reads the sections it needs."""

    model_config = SettingsConfigDict(
        env_prefix="BPF_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        extra="forbid",
        case_sensitive=False,
    )

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    actuator: ActuatorSettings = Field(default_factory=ActuatorSettings)
    decider: DeciderSettings = Field(default_factory=DeciderSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    pools: list[PoolSpec] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init data; the environment overrides it.
        return env_settings, init_settings

    # Convenience accessors that fail with a clear message when a section is incomplete.
    def require_pool_id(self) -> str:
        if not self.pool.id:
            raise ConfigError('pool.id is not set: add [pool] id = "..." or BPF_POOL__ID')
        return self.pool.id

    def require_node_name(self) -> str:
        if not self.node.name:
            raise ConfigError('node.name is not set: add [node] name = "..." or BPF_NODE__NAME')
        return self.node.name


def _env_name(loc: tuple[int | str, ...]) -> str | None:
    """The BPF_* variable that set this key, if one did, so the error blames the right place."""
    if len(loc) < 2 or not all(isinstance(p, str) for p in loc[:2]):
        return None
    wanted = f"BPF_{loc[0]}__{loc[1]}".upper()
    return next((k for k in os.environ if k.upper() == wanted), None)


def _format_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        given = item.get("input")
        secret = any(p in SECRET_KEYS for p in item["loc"] if isinstance(p, str))
        shown = (
            ""
            if secret
            or isinstance(given, dict | list)
            or item["type"] in ("missing", "extra_forbidden")
            else f" (got {given!r})"
        )
        env = _env_name(item["loc"])
        if env is not None:
            where = f"{where} (from environment {env})"
        parts.append(f"{where or 'config'}: {msg}{shown}")
    more = f"; +{error.error_count() - 3} more" if error.error_count() > 3 else ""
    return "; ".join(parts) + more


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    for section, keys in _PATH_FIELDS.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        for key in keys:
            raw = values.get(key)
            if isinstance(raw, str) and raw and not Path(raw).expanduser().is_absolute():
                values[key] = str((base / raw).resolve())
            elif isinstance(raw, str) and raw:
                values[key] = str(Path(raw).expanduser())
    return data


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return _resolve_paths(data, path.resolve().parent)


def load_config(path: Path | str | None = None) -> BpfConfig:
    """Read ``path`` (optional) and the environment; raise ConfigError with one line."""
    data = read_toml(Path(path)) if path is not None else {}
    where = f"{path}: " if path is not None else ""
    try:
        return BpfConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"{where}{_format_error(exc)}") from None
    except ValueError as exc:  # e.g. a malformed BPF_* value that pydantic-settings cannot decode
        raise ConfigError(f"{where}{exc}".splitlines()[0]) from None


def environment_overrides() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.upper().startswith("BPF_")}
