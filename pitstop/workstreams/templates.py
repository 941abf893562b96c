"""Step parameters as templates: sandboxed Jinja2 with strict undefined, checked at load.

Only strings from the config are ever compiled; event data and step outputs are values in the
context, never templates, so an event cannot inject template code. A template sees four names:

* ``event``: the triggering event's envelope (``event.data.branch``, ``event.id`` …);
* ``params``: the run's parameters (the workstream's defaults, overridden at launch);
* ``steps``: earlier steps by id, each its outputs plus ``status`` (``steps.build.exit_code``);
* ``run``: this run (``run.id``, ``run.workstream``, ``run.trace_id``, and in ``on_failure``
  steps ``run.failed_step`` and ``run.error``).

At load, :func:`references` tells which names, steps and params a template uses, so the catalog
can refuse a template naming a step that has not finished by then, or an undeclared param.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from pitstop.kernel.errors import ValidationError

__all__ = [
    "ROOT_NAMES",
    "References",
    "TemplateProblem",
    "compile_template",
    "is_template",
    "references",
    "render",
    "template_strings",
]

ROOT_NAMES = frozenset({"event", "params", "steps", "run"})
MAX_RENDERED_CHARS = 64 * 1024
"""Longest string one template may render to."""

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                            keep_trailing_newline=True)
_MARKERS = ("{{", "{%", "{#")

KeyPath = tuple[str | int, ...]


class TemplateProblem(ValueError):
    """A template that does not compile (the message says where in it)."""


def is_template(value: object) -> bool:
    """Whether ``value`` is a string holding template syntax."""
    return isinstance(value, str) and any(marker in value for marker in _MARKERS)


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (cached: step tasks render the same few templates again and again).

    Raises :class:`TemplateProblem`."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message} (line {exc.lineno} of "
                              "the template)") from None
    except (jinja2.TemplateError, RecursionError, ValueError, TypeError) as exc:
        raise TemplateProblem(f"template error: {exc}") from None


@dataclass(frozen=True)
class References:
    """What one template refers to."""

    names: frozenset[str]
    """Top-level names it reads without defining them (``event``, ``steps`` …)."""
    steps: frozenset[str] = field(default_factory=frozenset)
    """Step ids named literally: ``steps.build``, ``steps['unit-tests']``."""
    params: frozenset[str] = field(default_factory=frozenset)
    """Params named literally: ``params.branch``."""


@functools.lru_cache(maxsize=4096)
def references(source: str) -> References:
    """The names, step ids and params ``source`` uses. Raises :class:`TemplateProblem`."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message} (line {exc.lineno} of "
                              "the template)") from None
    except (jinja2.TemplateError, RecursionError, ValueError, TypeError) as exc:
        raise TemplateProblem(f"template error: {exc}") from None
    found: dict[str, set[str]] = {"steps": set(), "params": set()}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node, nodes.Getattr | nodes.Getitem):
            continue
        target = node.node
        if not isinstance(target, nodes.Name) or target.name not in found:
            continue
        if isinstance(node, nodes.Getattr):
            found[target.name].add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found[target.name].add(node.arg.value)
    return References(names=frozenset(meta.find_undeclared_variables(tree)),
                      steps=frozenset(found["steps"]), params=frozenset(found["params"]))


def template_strings(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, str]]:
    """Every template string inside ``value`` (nested dicts and lists) with its key path."""
    stack: list[tuple[KeyPath, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if is_template(item):
                yield where, item
        elif isinstance(item, dict):
            stack.extend(((*where, str(key)), child) for key, child in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend(((*where, index), child)
                         for index, child in reversed(list(enumerate(item))))


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` with every template string in it rendered against ``context`` (other values are
    kept as they are; dict keys are never templates).

    Raises :class:`ValidationError` naming the template and what went wrong (an undefined name
    or key, a sandbox refusal, a result over :data:`MAX_RENDERED_CHARS`)."""
    if isinstance(value, str):
        return _render_one(value, context) if is_template(value) else value
    if isinstance(value, dict):
        return {key: render(child, context) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [render(child, context) for child in value]
    return value


def _render_one(source: str, context: Mapping[str, Any]) -> str:
    shown = source if len(source) <= 120 else source[:117] + "..."
    try:
        text = compile_template(source).render(dict(context))
    except TemplateProblem as exc:
        raise ValidationError(f"template {shown!r}: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise ValidationError(f"template {shown!r}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise ValidationError(f"template {shown!r}: refused by the sandbox: {exc}") from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError,
            RecursionError, MemoryError) as exc:
        raise ValidationError(f"template {shown!r}: {type(exc).__name__}: {exc}") from None
    if len(text) > MAX_RENDERED_CHARS:
        raise ValidationError(f"template {shown!r} renders to {len(text)} characters, over the "
                              f"limit of {MAX_RENDERED_CHARS}")
    return text
