"""A small, closed template language for trigger keys and launch parameters.

``{{ event.data.branch }}`` inserts a value found by a dotted path; ``{{ event.data.env |
default("dev") }}`` gives a fallback when the path is missing. Nothing else: no expressions, no
calls, no attribute access on Python objects, so a template can never run code. Paths are checked
when the config loads (their root must be one the context provides); a path missing at render
time is an error (strict undefined) unless it has a default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pitstop.kernel.errors import ValidationError

__all__ = ["Template", "TemplateError", "compile_value", "lookup", "render_value"]

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\Z")
_DEFAULT = re.compile(
    r"""^default\(\s*(?:"([^"\\]*)"|'([^'\\]*)'|(-?\d+(?:\.\d+)?)|(true|false|null))\s*\)$""")
_MISSING = object()
MAX_RENDERED_CHARS = 4096


TemplateError = ValidationError
"""A template is malformed (at load) or names a value that is missing (at render)."""


@dataclass(frozen=True)
class _Tag:
    path: tuple[str, ...]
    default: Any = _MISSING


def lookup(context: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at ``path`` (keys of mappings, indexes of lists), or raise KeyError."""
    value: Any = context
    for part in path:
        if isinstance(value, Mapping):
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def _parse_default(text: str) -> Any:
    match = _DEFAULT.match(text)
    if match is None:
        raise TemplateError(f"unknown filter {text!r}: only default(\"value\") is supported")
    double, single, number, word = match.groups()
    if double is not None:
        return double
    if single is not None:
        return single
    if number is not None:
        return json.loads(number)
    return json.loads(word)


class Template:
    """One compiled template string; ``roots`` limits the first segment of every path."""

    def __init__(self, text: str, *, roots: frozenset[str]) -> None:
        if not isinstance(text, str):
            raise TemplateError(f"a template must be a string, got {type(text).__name__}")
        self.text = text
        self._parts: list[str | _Tag] = []
        position = 0
        for match in _TAG.finditer(text):
            self._parts.append(text[position:match.start()])
            self._parts.append(self._compile_tag(match.group(1), roots))
            position = match.end()
        rest = text[position:]
        if "{{" in rest or "}}" in rest or "{%" in text:
            raise TemplateError(f"template {text!r}: unbalanced '{{{{ }}}}' or unsupported tag")
        self._parts.append(rest)
        self._parts = [part for part in self._parts if part != ""]

    @staticmethod
    def _compile_tag(body: str, roots: frozenset[str]) -> _Tag:
        expression, bar, flt = body.partition("|")
        path_text = expression.strip()
        if not _PATH.match(path_text):
            raise TemplateError(f"{{{{{body}}}}}: expected a dotted path such as event.data.branch")
        path = tuple(path_text.split("."))
        if path[0] not in roots:
            raise TemplateError(f"{{{{{body}}}}}: unknown name {path[0]!r} (known: "
                                f"{', '.join(sorted(roots))})")
        default = _parse_default(flt.strip()) if bar else _MISSING
        return _Tag(path, default)

    @property
    def is_constant(self) -> bool:
        return all(isinstance(part, str) for part in self._parts)

    def render(self, context: Mapping[str, Any]) -> Any:
        """The rendered text; a template that is one tag alone keeps the value's JSON type."""
        if len(self._parts) == 1 and isinstance(self._parts[0], _Tag):
            return self._value(self._parts[0], context)
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = self._value(part, context)
            out.append(value if isinstance(value, str) else json.dumps(value, default=str))
        text = "".join(out)
        if len(text) > MAX_RENDERED_CHARS:
            raise TemplateError(f"template {self.text!r} rendered {len(text)} characters, over "
                                f"{MAX_RENDERED_CHARS}")
        return text

    def render_text(self, context: Mapping[str, Any]) -> str:
        value = self.render(context)
        return value if isinstance(value, str) else json.dumps(value, default=str,
                                                               sort_keys=True)

    def _value(self, tag: _Tag, context: Mapping[str, Any]) -> Any:
        try:
            return lookup(context, tag.path)
        except (KeyError, IndexError, TypeError):
            if tag.default is not _MISSING:
                return tag.default
            raise TemplateError(f"template {self.text!r}: {'.'.join(tag.path)} is not set "
                                "(add | default(\"…\") if it may be missing)") from None


def compile_value(value: Any, *, roots: frozenset[str]) -> Any:
    """``value`` with every string inside it (dicts and lists walked) compiled to a Template."""
    if isinstance(value, str):
        return Template(value, roots=roots)
    if isinstance(value, Mapping):
        return {str(key): compile_value(item, roots=roots) for key, item in value.items()}
    if isinstance(value, list):
        return [compile_value(item, roots=roots) for item in value]
    return value


def render_value(compiled: Any, context: Mapping[str, Any]) -> Any:
    """Render what :func:`compile_value` returned."""
    if isinstance(compiled, Template):
        return compiled.render(context)
    if isinstance(compiled, dict):
        return {key: render_value(item, context) for key, item in compiled.items()}
    if isinstance(compiled, list):
        return [render_value(item, context) for item in compiled]
    return compiled
