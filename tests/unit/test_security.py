"""Security rules every module of pitstop/, workers/ and tasks/ keeps, checked on the AST:

no ``shell=True``, no ``pickle`` (nor modules built on it), no ``yaml.load`` with anything but a
safe loader, no ``eval`` or ``exec``. bandit runs in ``.ci/run`` (each finding it would report is
justified inline with ``# nosec Bxxx # why``); these rules are the ones that must never need one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT

CHECKED_DIRS = ("pitstop", "workers", "tasks")
PICKLING_MODULES = frozenset({"pickle", "cPickle", "_pickle", "dill", "shelve", "cloudpickle", "marshal"})
UNSAFE_YAML_CALLS = frozenset({"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load",
                               "full_load_all"})
SAFE_LOADERS = frozenset({"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"})
BUILTIN_CODE_RUNNERS = frozenset({"eval", "exec"})


def python_files() -> list[Path]:
    files = [path for folder in CHECKED_DIRS for path in sorted((ROOT / folder).rglob("*.py"))]
    files.append(ROOT / "beat_schedule.py")
    return files


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ``""``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _safe_loader(call: ast.Call) -> bool:
    loaders = [kw.value for kw in call.keywords if kw.arg == "Loader"] + call.args[1:2]
    return any(_dotted(loader).rpartition(".")[2] in SAFE_LOADERS for loader in loaders)


def violations(source: str, filename: str = "<source>") -> Iterator[str]:
    """Every breach of the rules in ``source``, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    yaml_names = {"yaml"}
    yaml_functions: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLING_MODULES:
                    yield f"{filename}:{node.lineno}: imports {alias.name}"
                if alias.name == "yaml":
                    yaml_names.add(alias.asname or "yaml")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in PICKLING_MODULES:
                yield f"{filename}:{node.lineno}: imports from {module}"
            if module == "yaml":
                for alias in node.names:
                    if alias.name in UNSAFE_YAML_CALLS:
                        yaml_functions.add(alias.asname or alias.name)
        elif isinstance(node, ast.Call):
            yield from _call_violations(node, filename, yaml_names, yaml_functions)


def _call_violations(node: ast.Call, filename: str, yaml_names: set[str],
                     yaml_functions: set[str]) -> Iterator[str]:
    where = f"{filename}:{node.lineno}"
    for keyword in node.keywords:
        if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                           and keyword.value.value is False):
            yield f"{where}: shell={ast.unparse(keyword.value)}"
    name = _dotted(node.func)
    if name in BUILTIN_CODE_RUNNERS or name in {f"builtins.{n}" for n in BUILTIN_CODE_RUNNERS}:
        yield f"{where}: calls {name}()"
    if isinstance(node.func, ast.Name) and node.func.id == "__import__":
        yield f"{where}: calls __import__()"
    head, _, tail = name.rpartition(".")
    unsafe_yaml = (head in yaml_names and tail in UNSAFE_YAML_CALLS) or name in yaml_functions
    if unsafe_yaml and not _safe_loader(node):
        yield f"{where}: {name}() without a safe loader (use pitstop.kernel.configfile)"


def test_the_checked_tree_is_not_empty() -> None:
    files = python_files()
    assert len(files) > 100
    assert ROOT / "pitstop" / "kernel" / "configfile.py" in files


@pytest.mark.parametrize("folder", CHECKED_DIRS)
def test_no_module_runs_a_shell_unpickles_loads_unsafe_yaml_or_evaluates_code(folder: str) -> None:
    found = [breach for path in python_files() if path.is_relative_to(ROOT / folder)
             for breach in violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize(("source", "expected"), [
    ("import subprocess\nsubprocess.run('ls', shell=True)", "shell=True"),
    ("import subprocess\nflag = 1\nsubprocess.run('ls', shell=flag)", "shell=flag"),
    ("import pickle", "imports pickle"),
    ("from shelve import open", "imports from shelve"),
    ("import yaml\nyaml.load(text)", "yaml.load() without a safe loader"),
    ("import yaml\nyaml.load(text, Loader=yaml.FullLoader)", "yaml.load() without"),
    ("import yaml as y\ny.unsafe_load(text)", "y.unsafe_load() without"),
    ("from yaml import load\nload(text)", "load() without a safe loader"),
    ("eval('1 + 1')", "calls eval()"),
    ("exec('x = 1')", "calls exec()"),
    ("import builtins\nbuiltins.exec('x = 1')", "calls builtins.exec()"),
    ("__import__('os')", "calls __import__()"),
])
def test_the_checker_catches_each_breach(source: str, expected: str) -> None:
    found = list(violations(source))
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize("source", [
    "import subprocess\nsubprocess.run(['ls'], shell=False)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(text, yaml.CSafeLoader)",
    "import yaml\nyaml.safe_load(text)",
    "client.eval('return 1', 0)",  # Lua on Redis, not Python
    "script.exec_command()",
])
def test_the_checker_lets_safe_code_pass(source: str) -> None:
    assert list(violations(source)) == []
