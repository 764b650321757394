"""``bpfailover config check``: show the effective configuration, secrets masked, with warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bpfailover.settings import SECRET_KEYS, BpfConfig, environment_overrides, masked_url, read_toml

MASK = "********"


def _mask(key: str, value: Any) -> Any:
    """A secret's stand-in: a URL keeps its scheme and host, so the operator sees which service."""
    if key == "webhook_url" and isinstance(value, str):
        return masked_url(value)
    return MASK


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (_mask(k, v) if k in SECRET_KEYS and v is not None else _masked(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def effective(config: BpfConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    return _masked(data)


def _roles(path: Path) -> set[str]:
    """Which components this file configures: "node" (with "publisher" and/or "actuator"),
    "decider" and/or "operator".

    A split node file (``<node>.publisher.toml``) holds one service's section and is checked for
    that service only; a combined node file, or one with ``[node]`` alone, for both.
    """
    sections = set(read_toml(path)) | {
        k.upper().removeprefix("BPF_").split("__")[0].lower() for k in environment_overrides()
    }
    roles: set[str] = set()
    if sections & {"node", "publisher", "actuator"}:
        roles.add("node")
        services = sections & {"publisher", "actuator"}
        roles |= services or {"publisher", "actuator"}
    if "decider" in sections or ("pools" in sections and "pool" not in sections):
        roles.add("decider")
    if "pools" in sections and "pool" in sections and "node" not in sections:
        roles.add("operator")
    return roles


def problems(config: BpfConfig, path: Path) -> list[str]:
    """What would stop the services this file configures from starting, one line each.

    It runs the same checks the services run at start-up, so a file that passes here does
    not fail there (keys load, method and source settings are complete, timings hold).
    """
    from bpfailover.protocol.signing import KeyLoadError, load_signing_key, load_verify_key
    from bpfailover.settings import ConfigError

    roles = _roles(path)
    out: list[str] = []
    for key in ("ca_file", "cert_file", "key_file", "password_file"):
        value = getattr(config.mqtt, key)
        if value is not None and not Path(value).is_file():
            out.append(f"mqtt.{key}: {value} does not exist")
    if "node" in roles:
        try:
            config.require_pool_id()
            config.require_node_name()
        except ConfigError as exc:
            out.append(str(exc))
    if "actuator" in roles:
        if config.actuator.verify_key:
            try:
                load_verify_key(config.actuator.verify_key)
            except KeyLoadError as exc:
                out.append(f"actuator.verify_key: {exc}")
        try:
            from bpfailover.actuator.methods import build_method

            build_method(config.actuator).check()
        except ConfigError as exc:
            out.append(str(exc))
    if "publisher" in roles:
        try:
            from bpfailover.publisher.chain import chain_for
            from bpfailover.publisher.sources import make_source

            make_source(config.publisher, chain_for(config.publisher), pool=config.pool.id or "x",
                        node=config.node.name or "x")
        except ConfigError as exc:
            out.append(str(exc))
    if "decider" in roles:
        if not config.pools:
            out.append("no [[pools]] configured: the decider needs at least one pool with its nodes")
        if config.decider.signing_key is not None:
            try:
                load_signing_key(config.decider.signing_key)
            except KeyLoadError as exc:
                out.append(f"decider.signing_key: {exc}")
        try:
            from bpfailover.decider.invariants import check_invariants

            check_invariants(config.decider, config.mqtt.keepalive)
        except ConfigError as exc:
            out.append(str(exc))
    return out


def warnings(config: BpfConfig, path: Path) -> list[str]:
    """Things that are valid but that an operator should know about."""
    roles = _roles(path)
    out: list[str] = []
    if not config.mqtt.tls:
        out.append("mqtt.tls is false: passwords and role commands travel in plaintext")
    if config.mqtt.tls and config.mqtt.ca_file is None:
        out.append("mqtt.ca_file is not set: the system's CA store is used (fine for cloud brokers)")
    if "publisher" in roles and config.publisher.source == "simulate":
        out.append("publisher.source is 'simulate': a synthetic chain, for demos and tests only")
    if "actuator" in roles and config.actuator.fence_after == 0:
        out.append("actuator.fence_after is 0: self-fencing is disabled, no split-brain guarantee")
    if "actuator" in roles and config.actuator.verify_key is None:
        out.append("actuator.verify_key is not set: role commands are not signature-checked")
    if "actuator" in roles:
        from bpfailover.actuator.start_check import sighup_warnings

        out += sighup_warnings(config.actuator)
    if "decider" in roles and config.decider.signing_key is None:
        out.append("decider.signing_key is not set: role commands are sent unsigned")
    if "decider" in roles and len(config.pools) == 1 and len(config.pools[0].nodes) < 2:
        out.append(f"pool {config.pools[0].id} has one node: there is nothing to fail over to")
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + inner + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def render(config: BpfConfig, path: Path, *, as_json: bool = False) -> str:
    sections = set(read_toml(path)) | {
        k.upper().removeprefix("BPF_").split("__")[0].lower() for k in environment_overrides()
    }
    data = {k: v for k, v in effective(config).items() if k in sections or k in ("mqtt",)}
    notes = warnings(config, path)
    if as_json:
        return json.dumps({"file": str(path), "valid": True, "config": data, "warnings": notes}, indent=2)
    lines = [f"{path}: valid"]
    for section, values in data.items():
        if isinstance(values, list):
            for item in values:
                lines.append(f"\n[[{section}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None)
            continue
        lines.append(f"\n[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None)
    if notes:
        lines.append("")
        lines.extend(f"warning: {n}" for n in notes)
    return "\n".join(lines)
