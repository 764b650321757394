"""``bpfailover config check``: show the effective configuration, secrets masked, with warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bpfailover.settings import BpfConfig, environment_overrides, read_toml

SECRET_KEYS = {"password"}
MASK = "********"


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_KEYS and v is not None else _masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def effective(config: BpfConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    return _masked(data)


def warnings(config: BpfConfig) -> list[str]:
    """Things that are valid but that an operator should know about."""
    out: list[str] = []
    if not config.mqtt.tls:
        out.append("mqtt.tls is false: passwords and role commands travel in plaintext")
    if config.mqtt.tls and config.mqtt.ca_file is None:
        out.append("mqtt.ca_file is not set: the system's CA store is used (fine for cloud brokers)")
    if config.node.name and config.publisher.source == "simulate":
        out.append("publisher.source is 'simulate': a synthetic chain, for demos and tests only")
    if config.node.name and config.actuator.fence_after == 0:
        out.append("actuator.fence_after is 0: self-fencing is disabled, no split-brain guarantee")
    if config.node.name and config.actuator.verify_key is None:
        out.append("actuator.verify_key is not set: role commands are not signature-checked")
    if config.pools and config.decider.signing_key is None:
        out.append("decider.signing_key is not set: role commands are sent unsigned")
    for path_key in ("ca_file", "cert_file", "key_file", "password_file"):
        path = getattr(config.mqtt, path_key)
        if path is not None and not Path(path).is_file():
            out.append(f"mqtt.{path_key}: {path} does not exist")
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
    notes = warnings(config)
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
