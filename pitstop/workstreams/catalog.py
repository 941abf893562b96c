"""The workstream catalog: ``config/workstreams.yaml`` loaded, checked and compiled.

Everything that can be checked before a run is checked at load, and reported as one line naming
the file, the key path and the line (exit 2): unknown keys, bad values, duplicate step ids, a
step kind nobody registers, parameters the kind refuses, template syntax, templates naming a step
that has not finished by then or a param nobody declared, sub-workstreams that do not exist or
call each other in a cycle.

A workstream using a step kind another component will bring (``validate_patch`` …) but which is
not installed yet is loaded and marked unavailable with the reason; launching it fails clearly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

from pitstop.bus.patterns import normalize_type
from pitstop.kernel.configfile import Document, KeyPath, error_key_path, format_key_path, parse_yaml
from pitstop.kernel.constants import (
    EVENT_WORKSTREAM_COMPLETED,
    EVENT_WORKSTREAM_FAILED,
    PLANNED_STEP_KINDS,
)
from pitstop.kernel.errors import ConfigError
from pitstop.workstreams.config import (
    ID_PATTERN,
    CatalogModel,
    ParallelModel,
    StepModel,
    WorkstreamModel,
)
from pitstop.workstreams.spec import (
    KIND_EMIT,
    KIND_WORKSTREAM,
    StepSpec,
    WorkstreamSpec,
)
from pitstop.workstreams.steps import StepKind, step_kinds
from pitstop.workstreams.templates import (
    ROOT_NAMES,
    TemplateProblem,
    compile_template,
    is_template,
    references,
    template_strings,
)

__all__ = ["Workstream", "WorkstreamCatalog"]

_ID = re.compile(ID_PATTERN)
M = TypeVar("M", bound=BaseModel)
KEY_ROOTS = frozenset({"event", "params"})
"""What a concurrency key template may use: it is rendered at launch, before any step."""


@dataclass(frozen=True)
class Workstream:
    """One catalog entry: its spec, and whether it can run now."""

    id: str
    spec: WorkstreamSpec
    source: str
    """Where it is defined: ``file:line``."""
    unavailable_reason: str | None = None

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    @property
    def description(self) -> str:
        return self.spec.description


class WorkstreamCatalog:
    """The workstreams of one config version."""

    def __init__(self, workstreams: Mapping[str, Workstream], *, version: str,
                 source: str) -> None:
        self._workstreams = dict(workstreams)
        self.version = version
        """A short hash of the config's content."""
        self.source = source

    @classmethod
    def load(cls, path: Path) -> WorkstreamCatalog:
        """Load ``path``; a missing file is an empty catalog. Raises :class:`ConfigError`."""
        shown = _shown(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls({}, version=_digest(b""), source=shown)
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc}", file=shown) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cannot read: {exc}", file=shown) from None
        return cls.from_text(text, source=shown)

    @classmethod
    def from_text(cls, text: str, *, source: str,
                  environ: Mapping[str, str] | None = None) -> WorkstreamCatalog:
        """The catalog of a workstreams.yaml text (errors with its lines); its version is the one
        :meth:`load` gives the file holding that text, so a config stored as text (the trigger
        config in Redis) names the same version as the file it came from."""
        doc = parse_yaml(text, file=source, environ=environ)
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise ConfigError("the top level must be a mapping of keys", file=source, line=1)
        return cls(_Builder(doc).build(), version=_digest(text.encode("utf-8")), source=source)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "<memory>") -> WorkstreamCatalog:
        """A catalog from already parsed data (no line numbers in errors)."""
        if not isinstance(data, dict):
            raise ConfigError("the top level must be a mapping of keys", file=source)
        try:
            canonical = json.dumps(data, sort_keys=True, default=str).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConfigError(f"not plain data: {exc}", file=source) from None
        return cls(_Builder(Document(source, data, {})).build(), version=_digest(canonical),
                   source=source)

    def ids(self) -> list[str]:
        return list(self._workstreams)

    def __contains__(self, workstream_id: object) -> bool:
        return workstream_id in self._workstreams

    def __len__(self) -> int:
        return len(self._workstreams)

    def get(self, workstream_id: str) -> Workstream:
        """The workstream; raises :class:`ConfigError` naming the known ids."""
        try:
            return self._workstreams[workstream_id]
        except (KeyError, TypeError):
            pass
        known = ", ".join(self._workstreams) or "none"
        near = [i for i in self._workstreams if i.lower() == str(workstream_id).lower()]
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ConfigError(f"unknown workstream {workstream_id!r}{hint}; known: {known}",
                          file=self.source)

    def unavailable(self) -> dict[str, str]:
        """Workstreams that cannot run yet, with the reason."""
        return {ws.id: ws.unavailable_reason for ws in self._workstreams.values()
                if ws.unavailable_reason is not None}

    def launch_spec(self, workstream_id: str) -> WorkstreamSpec:
        """The spec a run of ``workstream_id`` carries: with every sub-workstream it reaches."""
        spec = self.get(workstream_id).spec
        subs: dict[str, WorkstreamSpec] = {}
        pending = [spec]
        while pending:
            for sub_id in _sub_ids(pending.pop()):
                if sub_id not in subs:
                    subs[sub_id] = self.get(sub_id).spec
                    pending.append(subs[sub_id])
        return WorkstreamSpec(**{**spec.__dict__, "subs": subs})

    def emitted_event_types(self, workstream_id: str) -> set[str]:
        """Event types a run of ``workstream_id`` may publish: its own ``completed``/``failed``,
        the literal types of its ``emit`` steps, and those of its sub-workstreams (templated
        types cannot be known before the run)."""
        types: set[str] = set()
        seen: set[str] = set()
        pending = [workstream_id]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            spec = self.get(current).spec
            types.add(_event_type(EVENT_WORKSTREAM_COMPLETED, current))
            types.add(_event_type(EVENT_WORKSTREAM_FAILED, current))
            for step in spec.all_steps():
                if step.kind == KIND_EMIT:
                    declared = step.params.get("type")
                    if isinstance(declared, str) and not is_template(declared):
                        types.add(normalize_type(declared))
            pending.extend(_sub_ids(spec))
        return types


def _event_type(template: str, workstream_id: str) -> str:
    return normalize_type(template.format(id=workstream_id))


def _sub_ids(spec: WorkstreamSpec) -> list[str]:
    return [str(step.params["workstream"]) for step in spec.all_steps()
            if step.kind == KIND_WORKSTREAM and isinstance(step.params.get("workstream"), str)]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _shown(path: Path) -> str:
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _component_of(kind: str) -> str:
    return {"validate_patch": "patches", "fix_lint": "patches", "triage": "triage",
            "alert": "alerts", "deploy": "deploy"}.get(kind, kind)


class _Builder:
    """Compiles one parsed document; raises the first problem as a :class:`ConfigError`."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.kinds: dict[str, StepKind] = step_kinds()
        self.paths: dict[tuple[str, str], KeyPath] = {}
        """(workstream, step id) -> the step's key path."""

    # --- errors ----------------------------------------------------------------------------------

    def error(self, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(message, file=self.doc.file, key_path=format_key_path(path),
                           line=self.doc.line_of(path))

    def validate(self, model: type[M], data: Any, path: KeyPath) -> M:
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise self.pydantic_error(exc, path) from None

    def pydantic_error(self, exc: pydantic.ValidationError, path: KeyPath,
                       errors: list[Any] | None = None) -> ConfigError:
        problems: list[tuple[KeyPath, str]] = []
        for error in errors if errors is not None else exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            elif error["type"] == "missing":
                message = "required key is missing"
            problems.append(((*path, *error_key_path(error)), message))
        first_path, first_message = problems[0]
        if len(problems) == 1:
            return self.error(first_path, first_message)
        listing = "; ".join(
            f"{format_key_path(where)}"
            f"{f' (line {line})' if (line := self.doc.line_of(where)) else ''}: {message}"
            for where, message in problems)
        return self.error(first_path, f"{len(problems)} problems: {listing}")

    # --- building --------------------------------------------------------------------------------

    def build(self) -> dict[str, Workstream]:
        top = self.validate(CatalogModel, self.doc.data, ())
        workstreams: dict[str, Workstream] = {}
        lowered: dict[str, str] = {}
        for ws_id, raw in top.workstreams.items():
            path: KeyPath = ("workstreams", ws_id)
            if not _ID.fullmatch(ws_id):
                raise self.error(path, f"workstream id {ws_id!r} must be letters, digits, '-' "
                                       "and '_' (at most 64, starting with a letter or digit)")
            if ws_id.lower() in lowered:
                raise self.error(path, f"workstream {ws_id!r} differs from "
                                       f"{lowered[ws_id.lower()]!r} only in case (their events "
                                       "would have the same type)")
            lowered[ws_id.lower()] = ws_id
            workstreams[ws_id] = self.workstream(ws_id, raw, path)
        self.check_subs(workstreams)
        return self.propagate(workstreams)

    def workstream(self, ws_id: str, raw: dict[str, Any], path: KeyPath) -> Workstream:
        model = self.validate(WorkstreamModel, raw, path)
        stages = self.stages(model.steps, (*path, "steps"))
        recovery = self.stages(model.on_failure, (*path, "on_failure"))
        paths: dict[str, KeyPath] = {}
        for part_stages in (stages, recovery):
            for stage in part_stages:
                for step, step_path in stage:
                    if step.id in paths:
                        raise self.error((*step_path, "id"), f"duplicate step id {step.id!r} "
                                         f"(also at {format_key_path(paths[step.id])})")
                    paths[step.id] = step_path
                    self.paths[(ws_id, step.id)] = step_path
        spec = WorkstreamSpec(
            id=ws_id,
            stages=tuple(tuple(step for step, _ in stage) for stage in stages),
            on_failure=tuple(tuple(step for step, _ in stage) for stage in recovery),
            params=dict(model.params), timeout=model.timeout, policy=model.concurrency.policy,
            concurrency_key=model.concurrency.key, description=model.description)
        unavailable: str | None = None
        declared = set(model.params)
        main_ids = spec.main_ids()
        finished: set[str] = set()
        for part, part_stages in (("steps", stages), ("on_failure", recovery)):
            if part == "on_failure":
                finished = set(main_ids)
            for stage in part_stages:
                for step, step_path in stage:
                    reason = self.check_step(step, step_path, finished=finished,
                                             all_ids=set(paths), declared=declared)
                    unavailable = unavailable or reason
                finished |= {step.id for step, _ in stage}
        self.check_key(model.concurrency.key, (*path, "concurrency", "key"), declared)
        line = self.doc.line_of(path)
        return Workstream(id=ws_id, spec=spec,
                          source=f"{self.doc.file}:{line}" if line else self.doc.file,
                          unavailable_reason=unavailable)

    def stages(self, items: list[dict[str, Any]],
               path: KeyPath) -> list[list[tuple[StepSpec, KeyPath]]]:
        stages: list[list[tuple[StepSpec, KeyPath]]] = []
        for index, item in enumerate(items):
            item_path = (*path, index)
            if "parallel" in item:
                group = self.validate(ParallelModel, item, item_path)
                stages.append([self.step(raw, (*item_path, "parallel", number))
                               for number, raw in enumerate(group.parallel)])
            else:
                stages.append([self.step(item, item_path)])
        return stages

    def step(self, raw: dict[str, Any], path: KeyPath) -> tuple[StepSpec, KeyPath]:
        if not isinstance(raw, dict):
            raise self.error(path, "a step must be a mapping (id, kind, params …)")
        model = self.validate(StepModel, raw, path)
        return StepSpec(id=model.id, kind=model.kind, params=model.params, queue=model.queue,
                        timeout=model.timeout, queue_timeout=model.queue_timeout,
                        retries=model.retries, backoff=model.backoff,
                        backoff_factor=model.backoff_factor, max_backoff=model.max_backoff,
                        description=model.description), path

    def check_step(self, step: StepSpec, path: KeyPath, *, finished: set[str], all_ids: set[str],
                   declared: set[str]) -> str | None:
        """Check one step; returns why its workstream cannot run yet, or None."""
        params_path = (*path, "params")
        for where, source in template_strings(step.params, params_path):
            refs = self.template_refs(source, where)
            unknown = sorted(refs.names - ROOT_NAMES)
            if unknown:
                raise self.error(where, f"template uses unknown name {', '.join(unknown)}: "
                                        "templates see event, params, steps and run")
            for name in sorted(refs.steps):
                if name not in all_ids:
                    raise self.error(where, f"template refers to step {name!r}, which this "
                                            f"workstream does not have")
                if name not in finished:
                    raise self.error(where, f"template refers to step {name!r}, which has not "
                                            "finished when this step starts (it runs later, or "
                                            "in the same parallel group)")
            self.check_params_used(refs.params, declared, where)
        kind = self.kinds.get(step.kind)
        if kind is None:
            if step.kind in PLANNED_STEP_KINDS:
                return (f"step {step.id!r} needs step kind {step.kind!r}, which is not "
                        f"installed yet (it comes with the {_component_of(step.kind)} "
                        "component)")
            known = ", ".join(sorted(self.kinds)) or "none"
            raise self.error((*path, "kind"), f"unknown step kind {step.kind!r} (known: {known})")
        self.check_params(kind, step.params, params_path)
        return None

    def template_refs(self, source: str, where: KeyPath) -> Any:
        try:
            compile_template(source)
            return references(source)
        except TemplateProblem as exc:
            raise self.error(where, str(exc)) from None

    def check_params_used(self, used: frozenset[str], declared: set[str], where: KeyPath) -> None:
        undeclared = sorted(used - declared)
        if undeclared:
            names = ", ".join(sorted(declared)) or "none"
            raise self.error(where, f"template uses param {', '.join(undeclared)}, which this "
                                    f"workstream does not declare under params (declared: "
                                    f"{names})")

    def check_params(self, kind: StepKind, params: dict[str, Any], path: KeyPath) -> None:
        """Validate with the kind's model; a value that is a template is checked when the step
        starts (rendered), so a complaint about it (or about what holds it) is not one here."""
        templated = [where for where, _ in template_strings(params)]
        try:
            kind.params_model.model_validate(params)
        except pydantic.ValidationError as exc:
            problems = [error for error in exc.errors()
                        if not any(_related(error_key_path(error), where) for where in templated)]
            if problems:
                raise self.pydantic_error(exc, path, problems) from None

    def check_key(self, key: str, path: KeyPath, declared: set[str]) -> None:
        if not is_template(key):
            return
        refs = self.template_refs(key, path)
        unknown = sorted(refs.names - KEY_ROOTS)
        if unknown:
            raise self.error(path, f"a concurrency key is rendered at launch and sees only event "
                                   f"and params, not {', '.join(unknown)}")
        self.check_params_used(refs.params, declared, path)

    def check_subs(self, workstreams: dict[str, Workstream]) -> None:
        """``workstream`` steps name a known workstream, literally, with params it declares;
        and no workstream reaches itself."""
        for ws in workstreams.values():
            for step in ws.spec.all_steps():
                if step.kind == KIND_WORKSTREAM:
                    path = self.paths[(ws.id, step.id)]
                    target = step.params.get("workstream")
                    where = (*path, "params", "workstream")
                    if not isinstance(target, str) or is_template(target):
                        raise self.error(where, "must name a workstream of this file literally "
                                                "(no template)")
                    if target not in workstreams:
                        known = ", ".join(workstreams) or "none"
                        raise self.error(where, f"unknown workstream {target!r} (known: {known})")
                    given = step.params.get("params") or {}
                    if isinstance(given, dict):
                        extra = sorted(set(given) - set(workstreams[target].spec.params))
                        if extra:
                            raise self.error((*path, "params", "params"),
                                             f"workstream {target} declares no param "
                                             f"{', '.join(extra)}")
        for start in workstreams:
            cycle = _find_cycle(start, workstreams)
            if cycle:
                ws = workstreams[cycle[0]]
                step = next(s for s in ws.spec.all_steps() if s.kind == KIND_WORKSTREAM
                            and s.params.get("workstream") == cycle[1])
                path = self.paths[(ws.id, step.id)]
                raise self.error((*path, "params", "workstream"),
                                 f"workstreams call each other in a cycle: {' -> '.join(cycle)}")

    def propagate(self, workstreams: dict[str, Workstream]) -> dict[str, Workstream]:
        """A workstream reaching an unavailable one through its steps is unavailable too."""
        result = dict(workstreams)
        changed = True
        while changed:
            changed = False
            for ws_id, ws in result.items():
                if ws.unavailable_reason is not None:
                    continue
                for sub in _sub_ids(ws.spec):
                    reason = result[sub].unavailable_reason
                    if reason is not None:
                        result[ws_id] = Workstream(ws.id, ws.spec, ws.source,
                                                   f"sub-workstream {sub} is unavailable: {reason}")
                        changed = True
                        break
        return result


def _related(a: KeyPath, b: KeyPath) -> bool:
    """Whether one key path is the other or lies under it."""
    size = min(len(a), len(b))
    return a[:size] == b[:size]


def _find_cycle(start: str, workstreams: dict[str, Workstream]) -> list[str] | None:
    """A path start -> ... -> start through ``workstream`` steps, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        current, trail = stack.pop()
        for sub in _sub_ids(workstreams[current].spec):
            if sub == start:
                return [*trail, sub]
            if sub not in seen and sub in workstreams:
                seen.add(sub)
                stack.append((sub, [*trail, sub]))
    return None
