"""The condition language, path globs and templates of triggers: tables of cases, no broker."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitstop.kernel.configfile import FieldProblem
from pitstop.kernel.errors import PitstopError, ValidationError
from pitstop.triggers.conditions import parse_condition
from pitstop.triggers.pathglob import GlobSet
from pitstop.triggers.templates import Template, compile_value, render_value

pytestmark = pytest.mark.timeout(60)

EVENT = {"id": "e1", "type": "git.push", "source": "ci", "hops": 2,
         "data": {"branch": "main", "count": 5, "ratio": 0.5, "flag": True, "none": None,
                  "files": ["schema/a.sql", "docs/readme.md"], "tags": ["x", "y"],
                  "nested": {"deep": {"value": "ok"}}}}


@pytest.mark.parametrize(("condition", "holds"), [
    ({"field": "data.branch", "equals": "main"}, True),
    ({"field": "data.branch", "equals": "dev"}, False),
    ({"field": "data.flag", "equals": 1}, False),           # true is not 1
    ({"field": "data.count", "equals": 5.0}, True),
    ({"field": "data.branch", "not_equals": "dev"}, True),
    ({"field": "data.missing", "not_equals": "dev"}, True),
    ({"field": "data.branch", "in": ["main", "release"]}, True),
    ({"field": "data.branch", "in": ["dev"]}, False),
    ({"field": "data.branch", "not_in": ["dev"]}, True),
    ({"field": "data.branch", "exists": True}, True),
    ({"field": "data.none", "exists": True}, False),
    ({"field": "data.missing", "exists": False}, True),
    ({"field": "data.count", "gt": 4}, True),
    ({"field": "data.count", "gte": 5}, True),
    ({"field": "data.count", "lt": 5}, False),
    ({"field": "data.ratio", "lte": 0.5}, True),
    ({"field": "data.branch", "gt": 1}, False),             # not a number
    ({"field": "data.branch", "matches": "^ma"}, True),
    ({"field": "data.branch", "matches": "^dev"}, False),
    ({"field": "data.count", "matches": "5"}, False),       # not a string
    ({"field": "data.branch", "glob": "ma*"}, True),
    ({"field": "data.branch", "glob": ["*", "!main"]}, False),
    ({"field": "data.files", "paths": ["schema/**"]}, True),
    ({"field": "data.files", "paths": ["schema/**", "!schema/*.sql"]}, False),
    ({"field": "data.files", "paths": ["!docs/**"]}, True),  # only exclusions: the rest is in
    ({"field": "data.files", "paths": ["src/**"]}, False),
    ({"field": "data.nested.deep.value", "equals": "ok"}, True),
    ({"field": "data.tags.1", "equals": "y"}, True),
    ({"field": "type", "equals": "git.push"}, True),
    ({"field": "hops", "lt": 3}, True),
    ({"all": [{"field": "data.branch", "equals": "main"}, {"field": "data.count", "gt": 1}]}, True),
    ({"any": [{"field": "data.branch", "equals": "dev"}, {"field": "data.count", "gt": 1}]}, True),
    ({"any": [{"field": "data.branch", "equals": "dev"}, {"field": "data.count", "gt": 9}]}, False),
    ({"not": {"field": "data.branch", "equals": "main"}}, False),
    ([{"field": "data.branch", "equals": "main"}, {"field": "data.flag", "equals": True}], True),
    ({"any": []}, False),
    ({"all": []}, True),
])
def test_condition_table(condition: Any, holds: bool) -> None:
    assert parse_condition(condition).holds(EVENT) is holds


def test_the_failure_names_the_condition_and_the_value() -> None:
    condition = parse_condition([{"field": "data.branch", "equals": "main"},
                                 {"field": "data.count", "gt": 10}])
    assert condition.failure(EVENT) == "data.count gt 10: got 5"
    assert parse_condition({"field": "data.nope", "equals": 1}).failure(EVENT) == \
        "data.nope equals 1: it is not set"


@pytest.mark.parametrize(("condition", "path", "message"), [
    ({"field": "data.x", "equal": 1}, ("equal",), "unknown operator 'equal'"),
    ({"field": "data.x", "matches": "("}, ("matches",), "bad regular expression"),
    ({"field": "data.x", "gt": "3"}, ("gt",), "expected a number"),
    ({"field": "data.x", "in": "abc"}, ("in",), "expected a list"),
    ({"field": "data.x", "exists": "yes"}, ("exists",), "true or false"),
    ({"field": "payload.x", "equals": 1}, ("field",), "unknown field 'payload'"),
    ({"field": "data.x"}, (), "exactly one test"),
    ({"field": "data.x", "equals": 1, "in": [1]}, (), "exactly one test"),
    ({"all": [{"field": "data.x", "glob": "[a"}]}, ("all", 0, "glob"), "without a closing"),
    ({"any": "x"}, ("any",), "expected a list"),
    ({"nope": 1}, (), "expected 'field'"),
    ("data.x == 1", (), "must be a mapping"),
])
def test_bad_conditions_name_the_key(condition: Any, path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(FieldProblem) as caught:
        parse_condition(condition)
    assert caught.value.key_path == path
    assert message in str(caught.value)


@pytest.mark.parametrize(("patterns", "path", "included"), [
    (["schema/**"], "schema/a/b.sql", True),
    (["schema/**"], "schemas/a.sql", False),
    (["*.js"], "app.js", True),
    (["*.js"], "src/app.js", False),       # '*' does not cross '/' (GitHub's paths)
    (["**.js"], "src/app.js", True),
    (["**/*.js"], "app.js", True),
    (["src/**/test_*.py"], "src/a/b/test_x.py", True),
    (["docs/?.md"], "docs/a.md", True),
    (["docs/[ab].md"], "docs/c.md", False),
    (["docs/[!ab].md"], "docs/c.md", True),
    (["**", "!docs/**"], "docs/x.md", False),
    (["**", "!docs/**", "docs/keep.md"], "docs/keep.md", True),  # last match wins
])
def test_path_globs(patterns: list[str], path: str, included: bool) -> None:
    assert GlobSet(patterns).matches(path) is included


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ event.data.branch }}", "main"),
    ("{{ event.data.count }}", 5),                       # one tag keeps the JSON type
    ("build {{ event.data.branch }} #{{ event.data.count }}", "build main #5"),
    ("{{ event.data.nope | default('dev') }}", "dev"),
    ("{{ event.data.nope | default(3) }}", 3),
    ("plain", "plain"),
])
def test_templates_render(text: str, expected: Any) -> None:
    assert Template(text, roots=frozenset({"event"})).render({"event": EVENT}) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("{{ steps.build }}", "unknown name 'steps'"),
    ("{{ event.data.x + 1 }}", "dotted path"),
    ("{{ event.data.x | upper }}", "unknown filter"),
    ("{{ event.data.x", "unbalanced"),
    ("{% if x %}", "unsupported"),
])
def test_bad_templates_are_refused_at_load(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Template(text, roots=frozenset({"event"}))


def test_a_missing_value_is_an_error_at_render() -> None:
    compiled = compile_value({"b": ["{{ event.data.nope }}"]}, roots=frozenset({"event"}))
    with pytest.raises(ValidationError, match=r"event\.data\.nope is not set"):
        render_value(compiled, {"event": EVENT})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20)
operators = st.sampled_from(["equals", "not_equals", "in", "not_in", "exists", "gt", "gte",
                             "lt", "lte", "matches", "glob", "paths", "bogus"])
fields = st.sampled_from(["data.branch", "data.files", "data.a.b", "type", "hops", "data.0",
                          "bad path", "nothing.x", ""])


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> Any:
    if depth < 3 and draw(st.booleans()):
        kind = draw(st.sampled_from(["all", "any", "not", "list"]))
        parts = draw(st.lists(conditions(depth + 1), max_size=3))
        if kind == "list":
            return parts
        if kind == "not":
            return {"not": parts[0] if parts else {}}
        return {kind: parts}
    return {"field": draw(fields), draw(operators): draw(json_values)}


@given(conditions(), st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_any_condition_on_any_payload_raises_only_our_errors(condition: Any,
                                                             data: dict[str, Any]) -> None:
    try:
        compiled = parse_condition(condition)
    except (FieldProblem, PitstopError):
        return
    compiled.failure({"type": "x.y", "data": data, "hops": 0})


@pytest.mark.timeout(10)
def test_a_backtracking_regex_on_hostile_data_fails_fast_instead_of_stalling_the_router() -> None:
    import time

    cond = parse_condition({"field": "data.branch", "matches": r"^(\w+\s?)*$"})
    started = time.monotonic()
    why = cond.failure({"data": {"branch": "a" * 5000 + "!"}})  # re: past 40, hours
    assert time.monotonic() - started < 2
    assert why is not None and "took longer than" in why
    assert cond.holds({"data": {"branch": "feature branch"}})


def test_matches_keeps_pythons_regex_syntax() -> None:
    assert parse_condition({"field": "data.b", "matches": r"^release/(?P<v>\d+)\.x$"}).holds(
        {"data": {"b": "release/12.x"}})
    with pytest.raises(FieldProblem, match="bad regular expression"):
        parse_condition({"field": "data.b", "matches": r"\p{L}+"})  # regex-only syntax: refused
