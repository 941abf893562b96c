"""The bad-input sweep's shared parts: how many examples, value strategies, mutations of the
shipped configs, and the judgement every input gets.

The judgement: an input is accepted, or refused with one of pitstop's own errors
(:class:`~pitstop.kernel.errors.PitstopError`); a :class:`ConfigError` names where (a key path or
a line); any other exception is a bug. CI runs a few examples per target (the ``pitstop``
hypothesis profile of tests/conftest.py, ``max_examples`` from :data:`EXAMPLES`);
``PITSTOP_FAULTS_LONG=1`` runs :data:`LONG_EXAMPLES` per target, over 100,000 in all.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from pitstop.kernel.errors import ConfigError, PitstopError
from tests.faults.report import long_mode
from tests.support import ROOT

LONG_EXAMPLES = 8_000
EXAMPLES = int(os.environ.get("PITSTOP_SWEEP_EXAMPLES", "0")) or (LONG_EXAMPLES if long_mode() else 25)
"""Per target (test function); 17 targets in the sweep: over 100,000 inputs in long mode."""
CONFIG_DIR = ROOT / "config"

# --- values -----------------------------------------------------------------------------------

WEIRD_TEXT = st.sampled_from([
    "", " ", "\x00", "\n", "${", "${NOPE}", "${PITSTOP_SLACK_WEBHOOK_URL", "{{", "{%", "}}",
    "**", "*.*", "a..b", ".", "..", "/", "../../etc/passwd", "~", "-1", "0", "1e309", "nan",
    "-inf", "1s", "-5m", "0s", "99999999999d", "10x", "*/0 * * * *", "61 25 32 13 8", "@daily",
    "Europe/Nowhere", "UTC", "\u202e", "é", "😀", "a" * 300, "true", "null", "[", "]", ":", "- x",
    "http://", "https://example.invalid/hook", "ftp://x", "127.0.0.1:99999", "sh -c 'rm -rf /'",
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), WEIRD_TEXT,
)
VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), WEIRD_TEXT),
                                                    children, max_size=4)), max_leaves=12)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                         WEIRD_TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=15)


# --- mutations of a parsed document -----------------------------------------------------------

def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for step in path[:-1]:
        node = node[step]
    return node


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one to three random edits: a value replaced (by any YAML value, or a weird
    string), a key or item deleted, an unknown key added, a list item duplicated."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "duplicate"]))
        if not path:
            if op == "replace":
                doc = draw(VALUES)
            continue
        parent, last = _parent(doc, path), path[-1]
        if op == "replace":
            parent[last] = draw(VALUES)
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(st.text(max_size=12), WEIRD_TEXT))] = draw(VALUES)
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return doc


def shipped(name: str) -> Any:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, ValueError):  # a value YAML cannot write: write its text instead
        return str(doc)


def config_texts(name: str) -> st.SearchStrategy[str]:
    """Texts of ``config/<name>`` mutated, plus garbage: arbitrary text and broken YAML."""
    doc = shipped(name)
    text = (CONFIG_DIR / name).read_text()
    return st.one_of(
        mutated(doc).map(_dump),
        mutated(doc).map(_dump),
        mutated(doc).map(_dump),
        st.text(max_size=200),
        st.builds(lambda cut, junk: text[:cut] + junk + text[cut:],
                  st.integers(0, len(text)), st.sampled_from(
                      ["\t", ":", "- ", "&a", "*a", "!!python/object:os.system ''", "{", "'",
                       "\n  bad: [", "<<: *x", "%YAML 9.9\n", "? ", "\x00"])),
    )


# --- the judgement ----------------------------------------------------------------------------

def judge(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call``: fine when it returns or raises one of pitstop's own errors (a ConfigError
    naming where); anything else fails the test with the input hypothesis found."""
    try:
        call()
    except ConfigError as exc:
        assert exc.key_path or exc.line is not None, f"ConfigError names no field: {exc}"
        assert str(exc).strip(), "an empty message"
        return exc
    except PitstopError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
        return exc
    return None


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def write_config(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path
