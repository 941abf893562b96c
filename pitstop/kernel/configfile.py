"""Load a YAML file into a typed model, with errors that name the file, the key path and the line.

Used for every file under ``config/``. YAML is parsed with the safe loader only; duplicate keys are
an error; ``${ENV_NAME}`` in a string value is replaced from the environment (secrets never live in
YAML), and an unset variable is an error naming where it was referenced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from pitstop.kernel.errors import ConfigError

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
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


def _construct(node: yaml.Node, path: KeyPath, file: str, lines: dict[KeyPath, int],
               environ: Mapping[str, str]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError("YAML merge keys (<<) are not supported", file=file,
                                  key_path=format_key_path(path), line=key_node.start_mark.line + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("mapping keys must be plain strings", file=file,
                                  key_path=format_key_path(path), line=key_node.start_mark.line + 1)
            key = str(key_node.value)
            if key in result:
                raise ConfigError(f"duplicate key {key!r}", file=file,
                                  key_path=format_key_path((*path, key)),
                                  line=key_node.start_mark.line + 1)
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, (*path, key), file, lines, environ)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, index), file, lines, environ)
                for index, item in enumerate(node.value)]
    if not isinstance(node, yaml.ScalarNode):  # aliases resolve to one of the three kinds
        raise ConfigError(f"unsupported YAML node {node.tag}", file=file,
                          key_path=format_key_path(path), line=node.start_mark.line + 1)
    loader = yaml.SafeLoader("")
    try:
        value = loader.construct_object(node)
    finally:
        loader.dispose()
    if isinstance(value, str) and "${" in value:
        value = _interpolate(value, environ, file=file, path=path, line=node.start_mark.line + 1)
    return value


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
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", file=file,
                          line=(mark.line + 1) if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None
    lines: dict[KeyPath, int] = {}
    data = {} if node is None else _construct(node, (), file, lines, env)
    return Document(file, data, lines)


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
