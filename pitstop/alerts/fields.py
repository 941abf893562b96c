"""The value types of ``config/alerts.yaml``: durations, lists given as one value, event
patterns, header-safe strings, and the strict base model every section uses."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from pitstop.bus.patterns import compile_pattern
from pitstop.kernel.configfile import validate_field

__all__ = ["Duration", "HeaderSafe", "PatternList", "Patterns", "StrList", "Strict", "as_list",
           "parse_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``5m``, ``1h30m``, ``250ms``, ``2d``, ``1w`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be like 30s, 5m, 1h30m (or a number of seconds)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text or _DURATION_PART.sub("", text):
            raise ValueError(f"{value!r} is not a duration: use 30s, 5m, 1h30m, 2d "
                             "(or a number of seconds)")
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    else:
        raise ValueError("a duration must be like 30s, 5m, 1h30m (or a number of seconds)")
    if not 0 <= seconds <= 366 * 86400:
        raise ValueError(f"duration {value!r} must be between 0 and a year")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


def _no_crlf(value: Any) -> Any:
    if isinstance(value, str) and ("\r" in value or "\n" in value):
        raise ValueError("must not contain CR or LF (it would go into a message header)")
    return value


def _patterns(value: list[str]) -> list[str]:
    for text in value:
        validate_field(compile_pattern, text)
    return value


StrList = Annotated[list[str], BeforeValidator(as_list)]
Patterns = Annotated[list[str], AfterValidator(_patterns)]
"""Event patterns (``**.failed``), each one the bus can compile."""
PatternList = Annotated[list[str], BeforeValidator(as_list), AfterValidator(_patterns)]
""":data:`Patterns`, or one pattern given alone."""
HeaderSafe = Annotated[str, BeforeValidator(_no_crlf)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
