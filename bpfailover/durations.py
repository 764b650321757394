"""Durations in configuration: a number of seconds, or a string such as "90s", "5m", "1h30m"."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Return seconds for a number or a duration string; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as 30, "90s" or "5m", got a boolean')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f'invalid duration {value!r}: use seconds or a string such as "90s", "5m", "1h"'
                ) from None
    else:
        raise ValueError(f'invalid duration {value!r}: use seconds or a string such as "5m"')
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A non-negative number of seconds, accepting "5m"-style strings in configuration."""
