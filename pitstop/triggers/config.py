"""The trigger config in force: every rule compiled, one pattern index over all of them.

Loaded from ``config/triggers.yaml`` against the workstream catalog (``config/workstreams.yaml``):
a rule naming an unknown workstream, a duplicate id, or rules whose workstreams trigger each other
in a cycle are refused with the file, the key path and the line. The ``version`` names the exact
pair of texts, and is written with every routing decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pitstop.bus.patterns import PatternIndex, normalize_type
from pitstop.kernel.configfile import Document, KeyPath, format_key_path, parse_yaml, validate_document
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.triggers.rules import Rule, RuleModel, TriggersFile, compile_rule

__all__ = ["Catalog", "TriggerConfig", "build_config", "config_version", "parse_triggers"]


class Catalog(Protocol):
    """What triggers need of the workstream catalog (``pitstop.workstreams.WorkstreamCatalog``)."""

    @property
    def version(self) -> str: ...

    def ids(self) -> Iterable[str]: ...

    def emitted_event_types(self, workstream_id: str) -> set[str]: ...


def config_version(triggers_text: str, catalog_version: str) -> str:
    digest = hashlib.sha256(triggers_text.encode() + b"\0" + catalog_version.encode())
    return digest.hexdigest()[:12]


class TriggerConfig:
    """Compiled rules plus one :class:`PatternIndex` over every event rule's pattern."""

    def __init__(self, rules: Iterable[Rule], *, version: str, source: str = "(in memory)",
                 catalog: Catalog | None = None) -> None:
        self.rules: dict[str, Rule] = {}
        self.version = version
        self.source = source
        self.catalog = catalog
        self.index: PatternIndex[Rule] = PatternIndex()
        for rule in rules:
            if rule.id in self.rules:
                raise ConfigError(f"duplicate rule id {rule.id!r}", key_path="id")
            self.rules[rule.id] = rule
            if rule.pattern is not None:
                self.index.add(rule.pattern, rule)

    def candidates(self, event_type: str) -> list[Rule]:
        """Rules whose pattern matches ``event_type`` (one index walk, not a loop over rules)."""
        return self.index.match(event_type)

    def schedule_rules(self) -> list[Rule]:
        return [rule for rule in self.rules.values() if rule.schedule is not None]

    def get(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            known = ", ".join(sorted(self.rules)) or "none"
            raise ValidationError(f"no trigger rule {rule_id!r} (known: {known})") from None

    def __len__(self) -> int:
        return len(self.rules)


def _line(doc: Document | None, path: KeyPath) -> int | None:
    return doc.line_of(path) if doc is not None else None


def _problem(doc: Document | None, path: KeyPath, message: str) -> ConfigError:
    return ConfigError(message, file=doc.file if doc is not None else None,
                       key_path=format_key_path(path), line=_line(doc, path))


def find_cycle(rules: Iterable[Rule], catalog: Catalog,
               index: PatternIndex[Rule]) -> list[Rule] | None:
    """Rules whose workstreams trigger one another in a loop, in order; None without a loop.

    Workstream W's completion (and its emit steps) emits ``catalog.emitted_event_types(W)``;
    a rule matching one of those launches its own workstream: an edge. Rules marked
    ``allow_cycle`` are left out.
    """
    by_workstream: dict[str, list[Rule]] = {}
    for rule in rules:
        if rule.pattern is not None and not rule.allow_cycle:
            by_workstream.setdefault(rule.workstream, []).append(rule)
    edges: dict[str, list[Rule]] = {}
    for workstream in by_workstream.keys() | {r.workstream for rs in by_workstream.values()
                                               for r in rs}:
        targets: list[Rule] = []
        try:
            emitted = catalog.emitted_event_types(workstream)
        except (KeyError, ValidationError, ConfigError):
            emitted = set()
        for event_type in sorted(emitted):
            try:
                normalized = normalize_type(event_type)
            except ValidationError:
                continue  # a templated type: only known at run time (the hop limit guards it)
            targets.extend(rule for rule in index.match(normalized)
                           if not rule.allow_cycle and rule not in targets)
        edges[workstream] = targets
    # Depth-first search over workstreams, following rules; the stack holds (from, rule).
    state: dict[str, int] = {}
    stack: list[tuple[str, Rule]] = []

    def visit(workstream: str) -> list[Rule] | None:
        state[workstream] = 1
        for rule in edges.get(workstream, []):
            stack.append((workstream, rule))
            target = rule.workstream
            if state.get(target) == 1:
                start = next(i for i, (source, _) in enumerate(stack) if source == target)
                return [r for _, r in stack[start:]]
            if state.get(target) is None:
                found = visit(target)
                if found is not None:
                    return found
            stack.pop()
        state[workstream] = 2
        return None

    for workstream in sorted(edges):
        if state.get(workstream) is None:
            stack.clear()
            found = visit(workstream)
            if found is not None:
                return found
    return None


def _declared_params(catalog: Catalog | None, workstream_id: str) -> set[str] | None:
    """The params ``workstream_id`` declares, when the catalog tells (None: unknown)."""
    get = getattr(catalog, "get", None)
    if get is None:
        return None
    try:
        params = getattr(getattr(get(workstream_id), "spec", None), "params", None)
    except (KeyError, ConfigError, ValidationError):
        return None
    return set(params) if isinstance(params, Mapping) else None


def build_config(models: Iterable[tuple[RuleModel, KeyPath]], *, catalog: Catalog | None,
                 version: str, source: str, doc: Document | None = None) -> TriggerConfig:
    """Compile and cross-check rules: ids unique, workstreams known, no cycle."""
    rules: list[Rule] = []
    paths: dict[str, KeyPath] = {}
    known = set(catalog.ids()) if catalog is not None else None
    for model, path in models:
        if model.id in paths:
            raise _problem(doc, (*path, "id"), f"duplicate rule id {model.id!r} (first at "
                           f"line {_line(doc, (*paths[model.id], 'id')) or '?'})")
        paths[model.id] = path
        if known is not None and model.workstream not in known:
            listing = ", ".join(sorted(known)) or "none defined"
            raise _problem(doc, (*path, "workstream"), f"unknown workstream "
                           f"{model.workstream!r} (known: {listing})")
        declared = _declared_params(catalog, model.workstream)
        for name in model.params:
            if declared is not None and name not in declared:
                raise _problem(doc, (*path, "params", name), f"workstream {model.workstream} "
                               f"has no param {name!r} (declared: "
                               f"{', '.join(sorted(declared)) or 'none'})")
        rules.append(compile_rule(model, line=_line(doc, path)))
    config = TriggerConfig(rules, version=version, source=source, catalog=catalog)
    if catalog is not None:
        cycle = find_cycle(config.rules.values(), catalog, config.index)
        if cycle is not None:
            order = list(paths)
            loop = cycle
            start = min(range(len(loop)), key=lambda i: order.index(loop[i].id))
            cycle = loop[start:] + loop[:start]  # told from the rule written first
            chain = " -> ".join(f"{rule.id} ({rule.workstream})" for rule in cycle)
            first = cycle[0]
            raise _problem(doc, (*paths[first.id], "event"),
                           f"trigger cycle: {chain} -> {first.id} again; break it, or mark a "
                           "rule allow_cycle: true (the hop limit still stops it at run time)")
    return config


def parse_triggers(text: str, *, file: str, catalog: Catalog | None,
                   environ: Mapping[str, str] | None = None) -> TriggerConfig:
    """Parse and validate a triggers.yaml text against ``catalog``; ConfigError names the file,
    the key path and the line of the first problem."""
    doc = parse_yaml(text, file=file, environ=environ)
    if doc.data is None or doc.data == {}:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise ConfigError("the top level must be a mapping (version:, triggers:)", file=file,
                          line=1)
    parsed = validate_document(doc, TriggersFile)
    version = config_version(text, catalog.version if catalog is not None else "")
    return build_config(((model, ("triggers", index))
                         for index, model in enumerate(parsed.triggers)),
                        catalog=catalog, version=version, source=file, doc=doc)


def rule_from_arguments(arguments: dict[str, Any]) -> RuleModel:
    """A :class:`RuleModel` from keyword arguments (the Python API); errors name the argument."""
    import pydantic

    from pitstop.kernel.configfile import error_key_path

    try:
        return RuleModel.model_validate(arguments)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(error["msg"].removeprefix("Value error, "),
                          key_path=format_key_path(error_key_path(error))) from None
