"""The workstream catalog: loading, file:line:key errors, templates checked at load, sub-
workstreams, unavailable kinds, emitted event types; hypothesis configs raise only our errors."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitstop.kernel.errors import ConfigError, PitstopError, ValidationError
from pitstop.workstreams import WorkstreamCatalog, catalog
from pitstop.workstreams.templates import references, render
from tests.support import ROOT

pytestmark = pytest.mark.timeout(60)

GOOD = """\
workstreams:
  WS-A:
    params: {branch: main, sha: null}
    concurrency: {policy: queue, key: "{{ params.branch }}"}
    steps:
      - id: build
        kind: run
        params: {script: build.sh, args: ["{{ params.sha }}", 3]}
        retries: 2
      - parallel:
          - id: unit
            kind: run
            params: {script: unit.sh, env: {GIT_SHA: "{{ params.sha }}"}}
          - id: sub
            kind: workstream
            params: {workstream: WS-B, params: {tag: "{{ steps.build.exit_code }}"}}
      - id: done
        kind: emit
        params: {type: phase.2.completed, data: {unit: "{{ steps.unit.status }}"}}
    on_failure:
      - id: tell
        kind: emit
        params: {type: "ci.{{ run.failed_step }}.failed"}
  WS-B:
    params: {tag: x}
    steps:
      - {id: e, kind: emit, params: {type: b.done}}
"""


def _load(tmp_path: Path, text: str) -> WorkstreamCatalog:
    path = tmp_path / "workstreams.yaml"
    path.write_text(textwrap.dedent(text))
    return WorkstreamCatalog.load(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return str(caught.value)


def test_a_good_file_compiles(tmp_path: Path) -> None:
    found = _load(tmp_path, GOOD)
    assert found.ids() == ["WS-A", "WS-B"]
    assert len(found.version) == 12
    ws = found.get("WS-A")
    assert ws.available and ws.source.endswith("workstreams.yaml:2")
    assert [[s.id for s in stage] for stage in ws.spec.stages] == [["build"], ["unit", "sub"],
                                                                   ["done"]]
    assert ws.spec.step("build").retries == 2
    assert ws.spec.policy == "queue"
    assert found.launch_spec("WS-A").subs.keys() == {"WS-B"}
    assert found.emitted_event_types("WS-A") == {
        "workstream.ws-a.completed", "workstream.ws-a.failed", "phase.2.completed",
        "workstream.ws-b.completed", "workstream.ws-b.failed", "b.done"}
    assert _load(tmp_path, GOOD).version == found.version
    assert _load(tmp_path, GOOD + "\n# edited\n").version != found.version


def test_unknown_ids_name_the_known_ones(tmp_path: Path) -> None:
    found = _load(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"unknown workstream 'ws-a' \(did you mean WS-A\?\); "
                                          r"known: WS-A, WS-B"):
        found.get("ws-a")


def test_a_missing_file_is_an_empty_catalog(tmp_path: Path) -> None:
    assert WorkstreamCatalog.load(tmp_path / "nope.yaml").ids() == []


def test_the_shipped_file_loads() -> None:
    shipped = WorkstreamCatalog.load(ROOT / "config" / "workstreams.yaml")
    assert {"WS-PHASE-2", "WS-PHASE-3", "WS-PHASE-4", "WS-NIGHTLY", "WS-SCHEMA-CHECK",
            "WS-ERROR-RECOVERY"} <= set(shipped.ids())
    assert "workstream.ws-phase-2.completed" in shipped.emitted_event_types("WS-PHASE-2")


BAD = [
    ("""\
workstreams:
  A:
    steps:
      - id: x
        kind: run
        params: {script: a.sh}
        retries: lots
""", "workstreams.yaml:7 at workstreams.A.steps[0].retries: Input should be a valid integer"),
    ("""\
workstreams:
  A:
    steps:
      - {id: x, kind: rnu}
""", "workstreams.yaml:4 at workstreams.A.steps[0].kind: unknown step kind 'rnu' (known:"),
    ("""\
workstreams:
  A:
    steps:
      - {id: x, kind: emit, params: {type: a}}
      - {id: x, kind: emit, params: {type: b}}
""", "workstreams.yaml:5 at workstreams.A.steps[1].id: duplicate step id 'x'"),
    ("""\
workstreams:
  A:
    steps:
      - id: x
        kind: emit
        params:
          type: "{{ event.data.x"
""", "workstreams.yaml:7 at workstreams.A.steps[0].params.type: template syntax error"),
    ("""\
workstreams:
  A:
    steps:
      - parallel:
          - {id: x, kind: emit, params: {type: a}}
          - {id: y, kind: emit, params: {type: "{{ steps.x.event_id }}"}}
""", "at workstreams.A.steps[0].parallel[1].params.type: template refers to step 'x', which "
     "has not finished"),
    ("""\
workstreams:
  A:
    steps:
      - {id: x, kind: emit, params: {type: "{{ steps.nope.status }}"}}
""", "template refers to step 'nope', which this workstream does not have"),
    ("""\
workstreams:
  A:
    steps:
      - {id: x, kind: emit, params: {type: "{{ evnt.type }}"}}
""", "template uses unknown name evnt"),
    ("""\
workstreams:
  A:
    params: {branch: main}
    steps:
      - {id: x, kind: emit, params: {type: "{{ params.brnch }}"}}
""", "template uses param brnch, which this workstream does not declare"),
    ("""\
workstreams:
  A:
    concurrency: {policy: queue, key: "{{ steps.x.status }}"}
    steps:
      - {id: x, kind: emit, params: {type: a}}
""", "workstreams.yaml:3 at workstreams.A.concurrency.key: a concurrency key is rendered at "
     "launch"),
    ("""\
workstreams:
  A:
    concurrency: {policy: sometimes}
    steps:
      - {id: x, kind: emit, params: {type: a}}
""", "at workstreams.A.concurrency.policy: Input should be 'allow', 'skip', 'queue' or "
     "'cancel_previous'"),
    ("""\
workstreams:
  A:
    steps:
      - {id: x, kind: workstream, params: {workstream: B}}
  B:
    steps:
      - {id: y, kind: workstream, params: {workstream: A}}
""", "workstreams call each other in a cycle: A -> B -> A"),
    ("""\
workstreams:
  A:
    params: {w: B}
    steps:
      - {id: x, kind: workstream, params: {workstream: "{{ params.w }}"}}
""", "must name a workstream of this file literally"),
    ("""\
workstreams:
  A:
    steps:
      - {id: x, kind: run, params: {script: a.sh, env: {LD_PRELOAD: evil.so}}}
""", "workstreams.yaml:4 at workstreams.A.steps[0].params.env: --env LD_PRELOAD: may not be set"),
    ("""\
workstreams:
  A:
    steps:
      - {id: x, kind: emit, params: {type: "bad..type"}}
""", "at workstreams.A.steps[0].params.type: event type 'bad..type' has an empty segment"),
    ("""\
workstreams:
  A:
    steps: []
""", "workstreams.yaml:3 at workstreams.A.steps: List should have at least 1 item"),
    ("""\
workstreams:
  A b:
    steps:
      - {id: x, kind: emit, params: {type: a}}
""", "workstreams.yaml:2 at workstreams.A b: workstream id 'A b' must be letters"),
    ("""\
workstreams:
  A:
    stepz: []
""", "unknown key"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_mistakes_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _error(tmp_path, text)


def test_templated_values_are_checked_when_the_step_starts_not_at_load(tmp_path: Path) -> None:
    # `data` wants a mapping: a template there is fine at load (it is checked once rendered)
    _load(tmp_path, """\
workstreams:
  A:
    params: {payload: "{}"}
    steps:
      - {id: x, kind: emit, params: {type: a, data: "{{ params.payload }}"}}
""")
    with pytest.raises(ConfigError, match="data: Input should be a valid dictionary"):
        _load(tmp_path, """\
workstreams:
  A:
    steps:
      - {id: x, kind: emit, params: {type: a, data: "not a template"}}
""")


def test_a_kind_still_to_come_makes_its_workstream_unavailable_not_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "PLANNED_STEP_KINDS", ("teleport",))
    found = _load(tmp_path, """\
workstreams:
  FUTURE:
    steps:
      - {id: go, kind: teleport, params: {anything: "{{ event.data.x }}"}}
  USES-FUTURE:
    steps:
      - {id: sub, kind: workstream, params: {workstream: FUTURE}}
  FINE:
    steps:
      - {id: e, kind: emit, params: {type: a}}
""")
    assert found.get("FINE").available
    reason = found.unavailable()["FUTURE"]
    assert "step 'go' needs step kind 'teleport', which is not installed yet" in reason
    assert found.unavailable()["USES-FUTURE"].startswith("sub-workstream FUTURE is unavailable")


def test_the_cli_reports_a_bad_file_in_one_line_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "workstreams.yaml").write_text(BAD[1][0])
    env = {"PITSTOP_CONFIG_DIR": str(config), "PITSTOP_STATE_DIR": str(tmp_path / ".state"),
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "pitstop", "workstreams"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "workstreams.yaml:4 at workstreams.A.steps[0].kind: unknown step kind" in line


# --- templates ------------------------------------------------------------------------------------

def test_templates_render_strictly_and_in_a_sandbox() -> None:
    context = {"event": {"data": {"branch": "main"}}, "steps": {"b": {"exit_code": 0}}}
    assert render({"a": ["{{ event.data.branch }}", 3], "b": "{{ steps.b.exit_code }}"},
                  context) == {"a": ["main", 3], "b": "0"}
    assert render("{{ event.data.nope | default('x') }}", context) == "x"
    with pytest.raises(ValidationError, match="has no attribute 'nope'"):
        render("{{ event.data.nope }}", context)
    with pytest.raises(ValidationError, match=r"sandbox|unsafe|not safely"):
        render("{{ ''.__class__.__mro__ }}", context)
    with pytest.raises(ValidationError, match="over the limit"):
        render("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", context)
    event_data = {"data": {"x": "{{ 7 * 7 }}"}}  # event data is a value, never a template
    assert render("{{ event.data.x }}", {"event": event_data}) == "{{ 7 * 7 }}"


def test_references_see_steps_and_params_by_attribute_and_by_key() -> None:
    refs = references("{{ steps.build.exit_code }} {{ steps['unit-tests'].status }} "
                      "{{ params.sha }} {% set y = 1 %}{{ y }}")
    assert refs.steps == {"build", "unit-tests"}
    assert refs.params == {"sha"}
    assert refs.names == {"steps", "params"}


# --- hypothesis -----------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                     st.sampled_from(["run", "emit", "workstream", "parallel", "A", "x", "{{",
                                      "{{ steps.x.y }}", "{{ params.p }}", "{% for %}", "a.b",
                                      "allow", "queue", "script.sh", "-x", "LD_PRELOAD"]),
                     st.text(max_size=8))
_keys = st.sampled_from(["workstreams", "steps", "on_failure", "parallel", "id", "kind",
                         "params", "queue", "timeout", "retries", "backoff", "concurrency",
                         "policy", "key", "script", "type", "data", "workstream", "env", "A", "B",
                         "x", "y"])
_values: Any = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)


@given(st.dictionaries(_keys, _values, max_size=4))
def test_generated_configs_raise_only_pitstop_errors(data: dict[str, Any]) -> None:
    with contextlib.suppress(PitstopError):
        WorkstreamCatalog.from_mapping(data)


_step = st.fixed_dictionaries({
    "id": st.sampled_from(["a", "b", "c"]),
    "kind": st.sampled_from(["run", "emit", "workstream", "nope"]),
    "params": st.dictionaries(st.sampled_from(["script", "type", "workstream", "args", "data"]),
                              _scalars, max_size=3)})


@given(st.dictionaries(st.sampled_from(["A", "B", "C"]), st.fixed_dictionaries(
    {"steps": st.lists(st.one_of(_step, st.fixed_dictionaries(
        {"parallel": st.lists(_step, min_size=1, max_size=3)})), min_size=1, max_size=3)}),
    min_size=1, max_size=3))
def test_generated_workstreams_load_or_fail_with_a_config_error(
        workstreams: dict[str, Any]) -> None:
    try:
        found = WorkstreamCatalog.from_mapping({"workstreams": workstreams})
    except ConfigError:
        return
    for ws_id in found.ids():
        found.emitted_event_types(ws_id)
        found.launch_spec(ws_id)


def test_a_catalog_from_text_has_the_version_of_the_file_holding_it(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "workstreams.yaml").read_text(
        encoding="utf-8")
    (tmp_path / "workstreams.yaml").write_text(text, encoding="utf-8")
    from_file = WorkstreamCatalog.load(tmp_path / "workstreams.yaml")
    from_text = WorkstreamCatalog.from_text(text, source="workstreams.yaml")
    assert from_text.version == from_file.version
    assert from_text.ids() == from_file.ids()
    assert WorkstreamCatalog.from_text("", source="x").version == WorkstreamCatalog.load(
        tmp_path / "missing.yaml").version


def test_the_cli_lists_workstreams_with_and_without_list(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "workstreams.yaml").write_text(
        "workstreams:\n  WS-ONE:\n    steps:\n      - {id: hi, kind: emit, params: {type: x.done}}\n")
    env = {"PITSTOP_CONFIG_DIR": str(config), "PITSTOP_STATE_DIR": str(tmp_path / ".state"),
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    outputs = []
    for argv in (["workstreams", "--json"], ["workstreams", "list", "--json"]):
        done = subprocess.run([sys.executable, "-m", "pitstop", *argv], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert '"id": "WS-ONE"' in outputs[0]
