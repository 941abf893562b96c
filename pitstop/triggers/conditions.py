"""The condition language of triggers: a small declared language, validated at load, no ``eval``.

A condition is one of::

    {field: data.branch, equals: main}          # one test on one value of the event
    {all: [cond, ...]}  {any: [cond, ...]}  {not: cond}
    [cond, ...]                                 # a list is ``all``

Tests: ``equals``, ``not_equals``, ``in``, ``not_in``, ``exists`` (true/false), ``gt``, ``gte``,
``lt``, ``lte`` (numbers), ``matches`` (a regular expression, searched), ``glob`` (a string
against a glob or a list of globs with ``!`` exclusions) and ``paths`` (a list of paths, true when
any path is included by the globs: a file-change trigger). ``field`` is a dotted path into the
event: ``type``, ``source``, ``hops``, ``data.<key>…`` (list items by index: ``data.files.0``).

:func:`parse_condition` raises :class:`FieldProblem` naming the key at fault, so config errors
carry file, key path and line; :meth:`Condition.failure` says which test stopped an event.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import regex

from pitstop.kernel.configfile import FieldProblem, KeyPath
from pitstop.kernel.errors import ValidationError
from pitstop.triggers.pathglob import GlobSet
from pitstop.triggers.templates import lookup

__all__ = ["OPERATORS", "Condition", "parse_condition"]

FIELD_ROOTS = frozenset({"id", "type", "source", "time", "data", "trace_id", "parent_id", "hops"})
OPERATORS = ("equals", "not_equals", "in", "not_in", "exists", "gt", "gte", "lt", "lte",
             "matches", "glob", "paths")
MAX_MATCH_CHARS = 10_000
"""Longest string a ``matches`` regex is run on (event data is anyone's; config regexes may
backtrack): longer values do not match, and the failure says why."""
MATCH_TIMEOUT_SECONDS = 0.05
"""Longest one ``matches`` search may take. A backtracking regex such as ``^(\\w+\\s?)*$`` takes
seconds on 25 characters of event data and hours on 40: past this the test fails (it does not
match, and says why) instead of stalling the router for every rule. Searches run in the
``regex`` module, which is ``re``'s syntax with a timeout."""
MAX_DEPTH = 32
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\Z")
_MISSING = object()


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


class Condition:
    """A compiled condition; :meth:`failure` is None when the event satisfies it."""

    text: str

    def failure(self, event: Mapping[str, Any]) -> str | None:
        raise NotImplementedError

    def holds(self, event: Mapping[str, Any]) -> bool:
        return self.failure(event) is None


@dataclass
class _All(Condition):
    parts: tuple[Condition, ...]
    text: str = "all"

    def failure(self, event: Mapping[str, Any]) -> str | None:
        for part in self.parts:
            why = part.failure(event)
            if why is not None:
                return why
        return None


@dataclass
class _Any(Condition):
    parts: tuple[Condition, ...]
    text: str = "any"

    def failure(self, event: Mapping[str, Any]) -> str | None:
        reasons = []
        for part in self.parts:
            why = part.failure(event)
            if why is None:
                return None
            reasons.append(why)
        return "none of: " + "; ".join(reasons) if reasons else "any: [] never holds"


@dataclass
class _Not(Condition):
    part: Condition
    text: str = "not"

    def failure(self, event: Mapping[str, Any]) -> str | None:
        if self.part.failure(event) is None:
            return f"not ({self.part.text}) failed: it holds"
        return None


@dataclass
class _Test(Condition):
    field: str
    path: tuple[str, ...]
    operator: str
    argument: Any
    compiled: Any
    text: str = ""

    def __post_init__(self) -> None:
        self.text = f"{self.field} {self.operator} {_short(self.argument)}"

    def failure(self, event: Mapping[str, Any]) -> str | None:
        try:
            value = lookup(event, self.path)
        except (KeyError, IndexError, TypeError):
            value = _MISSING
        why = self._check(value)
        return None if why is None else f"{self.text}: {why}"

    def _check(self, value: Any) -> str | None:
        op, arg = self.operator, self.argument
        if op == "exists":
            present = value is not _MISSING and value is not None
            return None if present == arg else ("it is set" if present else "it is not set")
        if value is _MISSING:
            return None if op in ("not_equals", "not_in") else "it is not set"
        got = f"got {_short(value)}"
        if op == "equals":
            return None if _same(value, arg) else got
        if op == "not_equals":
            return None if not _same(value, arg) else got
        if op == "in":
            return None if any(_same(value, item) for item in arg) else got
        if op == "not_in":
            return None if not any(_same(value, item) for item in arg) else got
        if op in ("gt", "gte", "lt", "lte"):
            if not _is_number(value):
                return f"{got}, not a number"
            ok = {"gt": value > arg, "gte": value >= arg, "lt": value < arg,
                  "lte": value <= arg}[op]
            return None if ok else got
        if op == "matches":
            if not isinstance(value, str):
                return f"{got}, not a string"
            if len(value) > MAX_MATCH_CHARS:
                return f"the value is longer than {MAX_MATCH_CHARS} characters"
            try:
                found = self.compiled.search(value, timeout=MATCH_TIMEOUT_SECONDS)
            except TimeoutError:
                return (f"the regular expression took longer than {MATCH_TIMEOUT_SECONDS:g}s on "
                        "this value (it backtracks): treated as no match")
            return None if found else got
        if op == "glob":
            if not isinstance(value, str):
                return f"{got}, not a string"
            return None if self.compiled.matches(value) else got
        # paths
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return f"{got}, not a list of paths"
        if self.compiled.first_match(paths) is not None:
            return None
        return f"none of {len(paths)} path(s) matched"


def _check_json(value: Any, where: KeyPath, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise FieldProblem(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, (*where, str(key)), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, (*where, index), depth + 1)
    elif not (value is None or isinstance(value, str | bool | int | float)):
        raise FieldProblem(where, f"{type(value).__name__} values are not supported")


def _compile_test(field: Any, operator: str, argument: Any, where: KeyPath) -> _Test:
    if not isinstance(field, str) or not _FIELD.match(field):
        raise FieldProblem((*where, "field"), "expected a dotted path into the event, such as "
                           "data.branch")
    path = tuple(field.split("."))
    if path[0] not in FIELD_ROOTS:
        raise FieldProblem((*where, "field"), f"unknown field {path[0]!r}: a field starts with "
                           f"one of {', '.join(sorted(FIELD_ROOTS))} (event data is data.<key>)")
    at = (*where, operator)
    compiled: Any = None
    if operator == "exists":
        if not isinstance(argument, bool):
            raise FieldProblem(at, "expected true or false")
    elif operator in ("in", "not_in"):
        if not isinstance(argument, list):
            raise FieldProblem(at, "expected a list of values")
        _check_json(argument, at)
    elif operator in ("equals", "not_equals"):
        _check_json(argument, at)
    elif operator in ("gt", "gte", "lt", "lte"):
        if not _is_number(argument) or math.isnan(argument):
            raise FieldProblem(at, "expected a number")
    elif operator == "matches":
        if not isinstance(argument, str):
            raise FieldProblem(at, "expected a regular expression (a string)")
        try:
            re.compile(argument)  # Python's syntax is the documented one: refuse what re refuses
            compiled = regex.compile(argument)
        except (re.error, regex.error, OverflowError, RecursionError) as exc:
            raise FieldProblem(at, f"bad regular expression {argument!r}: {exc}") from None
    else:  # glob, paths
        patterns = [argument] if isinstance(argument, str) else argument
        if not isinstance(patterns, list) or not patterns:
            raise FieldProblem(at, "expected a glob or a non-empty list of globs")
        try:
            compiled = GlobSet(patterns)
        except ValidationError as exc:
            raise FieldProblem(at, str(exc)) from None
    return _Test(field, path, operator, argument, compiled)


def parse_condition(raw: Any, where: KeyPath = (), depth: int = 0) -> Condition:
    """Compile ``raw`` (parsed YAML/JSON) into a :class:`Condition`; raise :class:`FieldProblem`
    with the key path below ``where`` at fault."""
    if depth > MAX_DEPTH:
        raise FieldProblem(where, f"conditions are nested deeper than {MAX_DEPTH} levels")
    if isinstance(raw, list):
        return _All(tuple(parse_condition(item, (*where, index), depth + 1)
                          for index, item in enumerate(raw)))
    if not isinstance(raw, Mapping):
        raise FieldProblem(where, "a condition must be a mapping ({field: …, equals: …}, "
                           "{all: […]}, {any: […]}, {not: …}) or a list of them")
    keys = [key for key in raw if isinstance(key, str)]
    if len(keys) != len(raw):
        raise FieldProblem(where, "condition keys must be strings")
    for combinator in ("all", "any"):
        if combinator in raw:
            if len(raw) != 1:
                raise FieldProblem(where, f"{combinator!r} must stand alone in its mapping")
            items = raw[combinator]
            if not isinstance(items, list):
                raise FieldProblem((*where, combinator), "expected a list of conditions")
            parts = tuple(parse_condition(item, (*where, combinator, index), depth + 1)
                          for index, item in enumerate(items))
            return _All(parts) if combinator == "all" else _Any(parts)
    if "not" in raw:
        if len(raw) != 1:
            raise FieldProblem(where, "'not' must stand alone in its mapping")
        part = parse_condition(raw["not"], (*where, "not"), depth + 1)
        return _Not(part, text=f"not ({part.text})")
    if "field" not in raw:
        unknown = ", ".join(repr(key) for key in raw) or "nothing"
        raise FieldProblem(where, f"expected 'field' and one test, or all/any/not; got {unknown}")
    operators = [key for key in raw if key != "field"]
    if len(operators) != 1:
        raise FieldProblem(where, f"expected exactly one test besides 'field' (one of "
                           f"{', '.join(OPERATORS)}), got {len(operators)}")
    operator = operators[0]
    if operator not in OPERATORS:
        raise FieldProblem((*where, operator), f"unknown operator {operator!r} (known: "
                           f"{', '.join(OPERATORS)})")
    return _compile_test(raw["field"], operator, raw[operator], where)
