"""Loading YAML into pydantic models: whatever a file holds, the loader raises ConfigError naming
the file, the key path and the line (exit 2), never anything else."""

from __future__ import annotations

import os
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop.kernel.configfile import MAX_ALIAS_NODES, MAX_DEPTH, load_model, parse_yaml
from pitstop.kernel.errors import ConfigError
from pitstop.kernel.settings import load_settings


class Inner(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = "x"
    weight: float = 1.0


class Everything(pydantic.BaseModel):
    """A model with a field of every common kind, as components' YAML files will have."""

    model_config = pydantic.ConfigDict(extra="forbid")
    count: int = 0
    ratio: float = 0.5
    enabled: bool = False
    label: str = ""
    when: datetime | None = None
    day: date | None = None
    blob: bytes = b""
    kind: Literal["a", "b"] = "a"
    numbers: list[int] = []
    weights: dict[str, float] = {}
    inner: Inner = Inner()
    items: list[Inner] = []
    anything: Any = None


MODELS: list[type[pydantic.BaseModel]] = [Everything, Inner]


def _load(tmp_path: Path, text: str, model: type[pydantic.BaseModel] = Everything) -> Any:
    path = tmp_path / "component.yaml"
    path.write_text(text, encoding="utf-8")
    return load_model(path, model, environ={})


def _settings_error(tmp_path: Path, text: str) -> ConfigError:
    (tmp_path / "pitstop.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    return caught.value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001-02-30", "'2001-02-30' is not a valid !!timestamp value: day is out of range"),
        ("!!float x", "'x' is not a valid !!float value"),
        ("!!int x", "'x' is not a valid !!int value"),
        ("!!timestamp x", "'x' is not a valid !!timestamp value"),
        ("!!binary zz", "'zz' is not a valid !!binary value"),
        ("!!bool maybe", "'maybe' is not a valid !!bool value"),
        ("!!value x", "'x' is not a valid !!value value"),
        ("!custom x", "'x' is not a valid !custom value"),
        (".inf", "'.inf' is not a finite number"),
        ("-.inf", "'-.inf' is not a finite number"),
        (".nan", "'.nan' is not a finite number"),
        ("1.0e+400", "'1.0e+400' is not a finite number"),
        ("1.0e400", "'1.0e400' is not a finite number"),
        ("-1e999", "'-1e999' is not a finite number"),
        ("1" + "0" * 5000, "is not a valid !!int value"),
        ("!!set {a, b}", "unsupported YAML tag tag:yaml.org,2002:set"),
        ("!!omap [{a: 1}]", "unsupported YAML tag tag:yaml.org,2002:omap"),
        ("!!python/object:os.system {}", "unsupported YAML tag"),
        ("!custom [1]", "unsupported YAML tag !custom"),
    ],
)
def test_values_the_safe_constructors_reject_name_file_line_and_key(tmp_path: Path, value: str,
                                                                    message: str) -> None:
    error = _settings_error(tmp_path, f"# comment\nscripts:\n  default_timeout: {value}\n")
    assert error.file == str(tmp_path / "pitstop.yaml")
    assert error.line == 3
    assert error.key_path == "scripts.default_timeout"
    assert message in str(error)
    assert error.exit_code == 2


@pytest.mark.parametrize(
    ("text", "line", "key_path"),
    [
        ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", 1, "a[0][0]…"),
        ("a: " + "{b: " * 500 + "1" + "}" * 500 + "\n", 1, "a.b.b…"),
        ("top:\n" + "".join("  " * depth + f"k{depth}:\n" for depth in range(1, 200)) + "\n",
         MAX_DEPTH + 1, "top.k1.k2…"),
        ("x: 1\nlist:\n" + "- " * 300 + "end\n", 3, "list[0][0]…"),
    ],
)
def test_deep_nesting_is_an_error_at_its_line(tmp_path: Path, text: str, line: int,
                                              key_path: str) -> None:
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH} levels") as caught:
        _load(tmp_path, text)
    assert caught.value.line == line
    assert caught.value.key_path == key_path


def test_nesting_up_to_the_limit_loads(tmp_path: Path) -> None:
    text = "anything: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert _load(tmp_path, text).anything is not None


def test_a_billion_laughs_stops_at_once(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, 10):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"aliases repeat more than {MAX_ALIAS_NODES} nodes"):
        parse_yaml("\n".join(lines) + "\n", file="laughs.yaml")
    assert time.monotonic() - started < 5


def test_a_recursive_alias_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refers to a node that contains it") as caught:
        _load(tmp_path, "x: 1\nanything: &loop [1, *loop]\n")
    assert caught.value.line == 2


def test_plain_aliases_still_work(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "inner: &base {name: n, weight: 2}\nitems: [*base, *base]\n")
    assert loaded.items == [Inner(name="n", weight=2), Inner(name="n", weight=2)]


def test_model_errors_name_key_and_line_for_any_model(tmp_path: Path) -> None:
    text = "count: 1\nitems:\n  - name: ok\n  - name: bad\n    weight: heavy\n"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.key_path == "items[1].weight"
    assert caught.value.line == 5
    assert str(caught.value).startswith(f"{tmp_path / 'component.yaml'}:5 at items[1].weight: ")


# --- fuzzing: only ConfigError, always naming the file -----------------------------------------
def _check(tmp_path: Path, text: str) -> None:
    for model in MODELS:
        try:
            _load(tmp_path, text, model)
        except ConfigError as exc:
            assert exc.file == str(tmp_path / "component.yaml")
            assert exc.exit_code == 2
            if exc.line is not None:
                assert 1 <= exc.line <= text.count("\n") + 2


# FUZZ_EXAMPLES=5000 for a longer hunt.
fuzz = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
                suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.characters(exclude_categories=["Cs"])
TAGS = ["", "!!str ", "!!int ", "!!float ", "!!bool ", "!!null ", "!!timestamp ", "!!binary ",
        "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ", "!!merge ", "!!value ", "!custom ",
        "!!python/object:os.system ", "!!python/name:os.system "]
SCALARS = st.sampled_from(["1", "-0", "0x1F", "0o17", "1_000", "1e400", ".inf", ".nan", "1.5",
                           "2001-02-30", "2001-12-14t21:59:43.10-05:00", "0001-01-01", "yes",
                           "maybe", "~", "null", "zz", "aGVsbG8=", "1" + "0" * 400,
                           "9" * 400 + ".5", "'${HOME}'", "${UNSET}",
                           "'quoted'", '"\\x00"', "a", "b", "x: y", "<<", "&a 1", "*a"]) \
    | st.text(alphabet=TEXT, max_size=12)
KEYS = st.sampled_from(["count", "ratio", "enabled", "label", "when", "day", "blob", "kind",
                        "numbers", "weights", "inner", "items", "anything", "name", "weight",
                        "unknown", "<<", "? x"])


def _yaml_value(draw: st.DrawFn, depth: int) -> str:
    tag = draw(st.sampled_from(TAGS))
    kind = draw(st.integers(0, 3 if depth < 4 else 0))
    if kind <= 1:
        return tag + draw(SCALARS)
    if kind == 2:
        items = [_yaml_value(draw, depth + 1) for _ in range(draw(st.integers(0, 3)))]
        return tag + "[" + ", ".join(items) + "]"
    pairs = [f"{draw(KEYS)}: {_yaml_value(draw, depth + 1)}" for _ in range(draw(st.integers(0, 3)))]
    return tag + "{" + ", ".join(pairs) + "}"


@st.composite
def yaml_documents(draw: st.DrawFn) -> str:
    lines = [f"{draw(KEYS)}: {_yaml_value(draw, 0)}" for _ in range(draw(st.integers(1, 5)))]
    return "\n".join(lines) + "\n"


@fuzz
@given(text=yaml_documents())
def test_fuzz_yaml_documents_give_only_config_errors(tmp_path: Path, text: str) -> None:
    _check(tmp_path, text)


@fuzz
@given(text=st.text(alphabet=TEXT, max_size=200))
def test_fuzz_arbitrary_text_gives_only_config_errors(tmp_path: Path, text: str) -> None:
    _check(tmp_path, text)


@fuzz
@given(text=yaml_documents())
def test_fuzz_settings_files_give_only_config_errors(tmp_path: Path, text: str) -> None:
    text = text.replace("count", "scripts").replace("inner", "bus").replace("items", "celery")
    (tmp_path / "pitstop.yaml").write_text(text)
    try:
        load_settings(tmp_path, environ={})
    except ConfigError as exc:
        assert exc.file == str(tmp_path / "pitstop.yaml")
