"""Rendering: one Jinja environment with autoescape on for every template (whatever its name),
undefined names an error, and the filters the pages use. Values from events, scripts and config
files are only ever inserted as escaped text; links go through :func:`safe_href`, which emits
only this server's own paths and plain http(s) URLs, never ``javascript:`` or ``data:``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined

from pitstop.kernel.constants import WEB_MOUNT
from pitstop.web.charts import NO_VALUE

__all__ = ["ago", "environment", "pretty_json", "safe_href", "ui"]

_MAX_HREF = 2000
_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f<>\"'`\\]")
_JSON_SHOWN = 20_000


def safe_href(value: Any) -> str | None:
    """``value`` when it is safe to put in an ``href``: a path of this server (``/...``, not
    ``//host``) or an ``http``/``https`` URL with a host, without spaces, quotes or control
    characters. Anything else (``javascript:``, ``data:``, ``vbscript:``, relative tricks)
    gives None, and the template shows plain text instead of a link."""
    if not isinstance(value, str) or not value or len(value) > _MAX_HREF:
        return None
    if _UNSAFE_IN_URL.search(value):
        return None
    if value.startswith("/"):
        return value if not value.startswith("//") else None
    parts = urlsplit(value)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return value
    return None


def ui(*parts: Any, **query: Any) -> str:
    """A path of the web view: each part quoted as one path segment (``/`` included), then
    the query (``None`` values left out)."""
    path = WEB_MOUNT + "/" + "/".join(quote(str(part), safe="") for part in parts)
    items = [(k, v) for k, v in query.items() if v not in (None, "")]
    if items:
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in items)
    return path


def pretty_json(value: Any, limit: int = _JSON_SHOWN) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


def compact_json(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def clock(value: Any) -> str:
    """``2026-05-01 12:00:03`` (UTC) of a datetime, ISO text or epoch seconds."""
    moment = _moment(value)
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(value: Any, now: datetime) -> str:
    moment = _moment(value)
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def seconds(value: Any) -> str:
    if value is None:
        return NO_VALUE
    number = float(value)
    if number < 120:
        return f"{number:.1f}s"
    if number < 7200:
        return f"{number / 60:.1f}m"
    return f"{number / 3600:.1f}h"


def short(value: Any, keep: int = 8) -> str:
    """The end of an id (its random part: ids sort by time, so their starts look alike); a
    step's script run (``<run id>.<step>.<attempt>``) keeps its step and attempt whole."""
    text = str(value or "")
    base, dot, rest = text.partition(".")
    if dot and len(base) > 6:
        return "\u2026" + base[-6:] + "." + rest
    return text if len(text) <= keep else "\u2026" + text[-keep:]


def percent(value: Any) -> str:
    return NO_VALUE if value is None else f"{float(value) * 100:.0f}%"


def environment() -> Environment:
    env = Environment(loader=PackageLoader("pitstop.web", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(json=pretty_json, compact=compact_json, clock=clock, seconds=seconds,
                       short=short, percent=percent, href=safe_href)
    env.globals.update(ui=ui, ago=ago)
    return env
