"""Globs on strings and on lists of paths, as GitHub's ``paths`` and ``branches`` filters read them.

``*`` matches any characters but ``/``, ``**`` any characters including ``/`` (``schema/**`` is
everything under ``schema/``), ``?`` one character but ``/``, ``[abc]``/``[!abc]`` a class. A
pattern starting with ``!`` excludes; across a list the last pattern that matches a path decides
(``["schema/**", "!schema/docs/**"]``), and a list of only exclusions starts from "everything".
Compiled to one regular expression per pattern at load; matching is linear in the path length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pitstop.kernel.errors import ValidationError

__all__ = ["GlobSet", "compile_glob"]

MAX_GLOB_CHARS = 1000


def compile_glob(pattern: str) -> re.Pattern[str]:
    """One glob (without a leading ``!``) as an anchored regular expression."""
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError("a glob must be a non-empty string")
    if len(pattern) > MAX_GLOB_CHARS:
        raise ValidationError(f"a glob is longer than {MAX_GLOB_CHARS} characters")
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i) and (not out or out[-1].endswith("/")):
                    # "**/" : zero or more whole directories
                    out.append("(?:[^/]*/)*")
                    i += 1
                else:
                    while pattern.startswith("*", i):  # "***" is "**"
                        i += 1
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern.startswith(("[!", "[^"), i) else i + 1)
            if end < 0:
                raise ValidationError(f"glob {pattern!r}: '[' without a closing ']'")
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            if not body:
                raise ValidationError(f"glob {pattern!r}: empty character class")
            escaped = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            out.append(f"[{'^/' if negate else ''}{escaped}]" if negate else f"[{escaped}]")
            i = end
        else:
            out.append(re.escape(char) if char != "/" else "/")
        i += 1
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as exc:  # a class like [z-a]
        raise ValidationError(f"glob {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class _Rule:
    include: bool
    regex: re.Pattern[str]


class GlobSet:
    """Patterns with ``!`` exclusions; the last pattern that matches decides."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = list(patterns)
        if not self.patterns:
            raise ValidationError("a glob list must not be empty")
        rules: list[_Rule] = []
        for pattern in self.patterns:
            if not isinstance(pattern, str):
                raise ValidationError(f"a glob must be a string, got {type(pattern).__name__}")
            include = not pattern.startswith("!")
            rules.append(_Rule(include, compile_glob(pattern if include else pattern[1:])))
        self._rules = tuple(rules)
        # Only exclusions: everything else is included (as "**" then the exclusions).
        self._default = not any(rule.include for rule in rules)

    def matches(self, value: str) -> bool:
        decided = self._default
        for rule in self._rules:
            if rule.regex.match(value):
                decided = rule.include
        return decided

    def first_match(self, values: Iterable[str]) -> str | None:
        """The first of ``values`` the set includes, or None."""
        for value in values:
            if self.matches(value):
                return value
        return None
