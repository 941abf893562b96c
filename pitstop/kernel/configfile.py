"""Load a YAML file into a typed model, with errors that name the file, the key path and the line.

Used for every file under ``config/``. YAML is parsed with the safe loader only; duplicate keys are
an error; ``${ENV_NAME}`` in a string value is replaced from the environment (secrets never live in
YAML), and an unset variable is an error naming where it was referenced.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from pitstop.kernel.errors import ConfigError, PitstopError

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
T = TypeVar("T")
R = TypeVar("R")
KeyPath = tuple[str | int, ...]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def format_key_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class FieldProblem(ValueError):
    """A model validator's complaint about one key below the model it validates.

    Pydantic reports what a model validator raises at the model's own location; raising this
    instead lets :func:`validation_error` name (and find the line of) the key at fault, e.g.
    ``celery.visibility_timeout`` rather than the top level.
    """

    def __init__(self, key_path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.key_path = key_path


def validate_field(check: Callable[[T], R], value: T) -> R:
    """``check(value)`` inside a pydantic field validator: the :class:`PitstopError` a pitstop
    check raises becomes the ValueError pydantic reports against the field (its message alone,
    without the chain)."""
    try:
        return check(value)
    except PitstopError as exc:
        raise ValueError(str(exc)) from None


def error_key_path(error: Mapping[str, Any]) -> KeyPath:
    """The key path one pydantic error is about, a :class:`FieldProblem`'s key included."""
    path: KeyPath = tuple(part for part in error["loc"] if isinstance(part, str | int))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        path = (*path, *cause.key_path)
    return path


class Document:
    """A parsed YAML document plus the line of every key path in it."""

    def __init__(self, file: str, data: Any, lines: dict[KeyPath, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def line_of(self, path: KeyPath) -> int | None:
        # Fall back to the nearest ancestor we know the line of.
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


MAX_DEPTH = 64
"""The deepest nesting of mappings and lists a config file may have."""
MAX_ALIAS_NODES = 100_000
"""How many nodes aliases (``*name``) may repeat in all: a few anchors nested in each other
would otherwise expand to billions ("billion laughs")."""
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DepthLimitedLoader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than :data:`MAX_DEPTH` while composing (PyYAML
    composes recursively: a few hundred ``[`` would end in RecursionError)."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file = file
        self.path: list[str | int] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # ``index`` is the key node for a mapping value, the position for a list item.
        part = index.value if isinstance(index, yaml.ScalarNode) else index
        self.path.append(part if isinstance(part, str | int) else "?")
        try:
            if len(self.path) > MAX_DEPTH + 1:  # the top-level node is depth 1, its values 2 ...
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                where = format_key_path(tuple(self.path[1:4]))
                raise ConfigError(f"nested deeper than {MAX_DEPTH} levels", file=self.file,
                                  key_path=where + ("…" if len(self.path) > 4 else ""),
                                  line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.path.pop()


class _Builder:
    """Turns a composed YAML node tree into plain data, noting the line of every key path."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.lines: dict[KeyPath, int] = {}
        self.scalars = yaml.SafeLoader("")  # its constructors turn scalar text into values
        self.seen: set[int] = set()
        self.repeated = 0
        self.open: set[int] = set()

    def close(self) -> None:
        self.scalars.dispose()

    def error(self, message: str, path: KeyPath, node: yaml.Node) -> ConfigError:
        return ConfigError(message, file=self.file, key_path=format_key_path(path),
                           line=node.start_mark.line + 1)

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self.seen:  # an alias: the anchored node once more
            if id(node) in self.open:
                raise self.error("an alias refers to a node that contains it", path, node)
            self.repeated += 1
            if self.repeated > MAX_ALIAS_NODES:
                raise self.error(f"aliases repeat more than {MAX_ALIAS_NODES} nodes", path, node)
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            expected = _MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG
            if node.tag != expected:
                raise self.error(f"unsupported YAML tag {node.tag} (plain mappings and lists "
                                 "only)", path, node)
            self.open.add(id(node))
            try:
                if isinstance(node, yaml.SequenceNode):
                    return [self.build(item, (*path, index))
                            for index, item in enumerate(node.value)]
                return self.mapping(node, path)
            finally:
                self.open.discard(id(node))
        if not isinstance(node, yaml.ScalarNode):  # pragma: no cover - the three kinds above
            raise self.error(f"unsupported YAML node {node.tag}", path, node)
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                raise self.error("YAML merge keys (<<) are not supported", path, key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error("mapping keys must be plain strings", path, key_node)
            key = str(key_node.value)
            if key in result:
                raise self.error(f"duplicate key {key!r}", (*path, key), key_node)
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        try:
            value = self.scalars.construct_object(node)
        except Exception as exc:
            # The safe constructors are pure functions of the scalar's text; whatever they
            # raise (ValueError for 2001-02-30, KeyError for !!bool maybe, ConstructorError for
            # !!binary zz or an unknown tag ...) means this value is not what its tag says.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            message = f"{_shown(node.value)} is not a valid {tag} value"
            if isinstance(exc, yaml.YAMLError | ValueError):  # else an internal detail
                detail = getattr(exc, "problem", None) or str(exc)
                message += f": {detail}" if detail else ""
            raise self.error(message, path, node) from None
        if ((isinstance(value, float) and not math.isfinite(value))
                or (isinstance(value, str) and node.style is None and _overflows(value))):
            # YAML 1.1 reads 1e400 as a string, which a pydantic float field would turn into
            # inf all the same: a timeout of inf ends in OverflowError far from this file.
            raise self.error(f"{_shown(node.value)} is not a finite number", path, node)
        if isinstance(value, str) and "${" in value:
            value = _interpolate(value, self.environ, file=self.file, path=path,
                                 line=node.start_mark.line + 1)
        return value


_NUMBER = re.compile(r"[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)", re.ASCII)


def _overflows(text: str) -> bool:
    """Whether a plain scalar is a number in exponent form too large for a float."""
    return bool(_NUMBER.fullmatch(text)) and math.isinf(float(text.replace("_", "")))


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def _interpolate(text: str, environ: Mapping[str, str], *, file: str, path: KeyPath,
                 line: int) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (referenced as ${{{name}}})",
                          file=file, key_path=format_key_path(path), line=line)

    return _ENV_REF.sub(replace, text)


def parse_yaml(text: str, *, file: str, environ: Mapping[str, str] | None = None) -> Document:
    """Parse one YAML document safely, keeping the line of every key path."""
    env = os.environ if environ is None else environ
    loader: _DepthLimitedLoader | None = None
    try:
        loader = _DepthLimitedLoader(text, file)  # reads the text: may raise already
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", file=file,
                          line=(mark.line + 1) if mark else None) from None
    except yaml.reader.ReaderError as exc:  # a character YAML refuses: say on which line
        line = text.count("\n", 0, max(0, exc.position)) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        raise ConfigError(f"invalid YAML: character {char!r} is not allowed", file=file,
                          line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return Document(file, {}, {})
    builder = _Builder(file, env)
    try:
        data = builder.build(node, ())
    finally:
        builder.close()
    return Document(file, data, builder.lines)


def validation_error(exc: pydantic.ValidationError, doc: Document) -> ConfigError:
    """Turn pydantic's error into one ConfigError listing every problem with its key and line."""
    problems: list[tuple[str, int | None, str]] = []
    for error in exc.errors():
        path = error_key_path(error)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        problems.append((format_key_path(path), doc.line_of(path), message))
    first_path, first_line, first_message = problems[0]
    if len(problems) == 1:
        return ConfigError(first_message, file=doc.file, key_path=first_path, line=first_line)
    listing = "; ".join(
        f"{path}{f' (line {line})' if line else ''}: {message}" for path, line, message in problems
    )
    return ConfigError(f"{len(problems)} problems: {listing}", file=doc.file,
                       key_path=first_path, line=first_line)


def read_document(path: Path, *, environ: Mapping[str, str] | None = None,
                  missing_ok: bool = True, shown_as: str | None = None) -> Document | None:
    """Parse the mapping in ``path`` (None when it is missing and ``missing_ok``); errors name
    the file as ``shown_as`` (default: ``path`` as given)."""
    file = shown_as or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError("file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    doc = parse_yaml(text, file=file, environ=environ)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise ConfigError("the top level must be a mapping of keys", file=file, line=1)
    return doc


def validate_document(doc: Document, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, doc) from None


def load_model(path: Path, model: type[ModelT], *, environ: Mapping[str, str] | None = None,
               missing_ok: bool = True) -> ModelT:
    """Read ``path`` and validate it into ``model``; a missing file gives the model's defaults."""
    doc = read_document(path, environ=environ, missing_ok=missing_ok)
    return model() if doc is None else validate_document(doc, model)
