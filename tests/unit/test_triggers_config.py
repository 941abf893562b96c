"""triggers.yaml: the shipped file loads, and each kind of mistake is one line naming the file,
the key and the line; generated configs raise nothing but pitstop's errors."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pitstop.kernel.errors import ConfigError, PitstopError
from pitstop.triggers.config import parse_triggers
from tests.trigger_fakes import FakeCatalog

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
CATALOG = FakeCatalog({"WS-A": [], "WS-B": ["build.done"], "WS-C": [],
                       "WS-PHASE-2": [], "WS-PHASE-3": [], "WS-PHASE-4": []})


def load(text: str, catalog: Any = CATALOG) -> Any:
    return parse_triggers(textwrap.dedent(text), file="config/triggers.yaml", catalog=catalog)


def test_a_good_config_compiles_into_one_index() -> None:
    config = load("""
        triggers:
          - id: a
            event: phase.*.completed
            workstream: WS-A
            conditions: [{field: data.ok, equals: true}]
            params: {branch: "{{ event.data.branch }}"}
            debounce: {window: 5s, key: "{{ event.data.branch }}"}
            throttle: {max: 3, per: 10m}
            dedupe: "{{ event.data.sha }}"
          - id: b
            event: "deploy.*.failed"
            workstream: WS-C
          - id: nightly
            schedule: {cron: "0 2 * * *", timezone: Europe/Berlin, catch_up: once}
            workstream: WS-A
    """)
    assert [rule.id for rule in config.candidates("phase.1.completed")] == ["a"]
    assert [rule.id for rule in config.candidates("deploy.prod.failed")] == ["b"]
    assert config.candidates("deploy.prod.canary.failed") == []
    assert [rule.id for rule in config.schedule_rules()] == ["nightly"]
    assert config.rules["a"].debounce is not None and config.rules["a"].debounce.window == 5
    assert len(config.version) == 12


def test_the_version_changes_with_either_file() -> None:
    text = "triggers: [{id: a, event: x, workstream: WS-A}]"
    assert load(text).version != load(text, FakeCatalog({"WS-A": []}, version="cat-2")).version
    assert load(text).version != load(text + "\n# edited").version


BAD = [
    ("unknown workstream", """
        triggers:
          - id: a
            event: x.y
            workstream: WS-NOPE
     """, "triggers[0].workstream", 5, "unknown workstream 'WS-NOPE'"),
    ("bad regex", """
        triggers:
          - id: a
            event: x.y
            workstream: WS-A
            conditions:
              - field: data.branch
                matches: "release/(["
     """, "triggers[0].conditions[0].matches", 8, "bad regular expression"),
    ("bad cron", """
        triggers:
          - id: a
            schedule:
              cron: "0 25 * * *"
            workstream: WS-A
     """, "triggers[0].schedule.cron", 5, "out of range"),
    ("bad zone", """
        triggers:
          - id: a
            schedule: {cron: "0 2 * * *", timezone: Europe/Atlantis}
            workstream: WS-A
     """, "triggers[0].schedule.timezone", 4, "unknown time zone"),
    ("unknown operator", """
        triggers:
          - id: a
            event: x.y
            workstream: WS-A
            conditions:
              any:
                - {field: data.count, greater: 3}
     """, "triggers[0].conditions.any[0].greater", 8, "unknown operator 'greater'"),
    ("duplicate id", """
        triggers:
          - id: a
            event: x.y
            workstream: WS-A
          - id: a
            event: x.z
            workstream: WS-A
     """, "triggers[1].id", 6, "duplicate rule id 'a' (first at line 3)"),
    ("template error", """
        triggers:
          - id: a
            event: x.y
            workstream: WS-A
            params:
              branch: "{{ steps.build.exit_code }}"
     """, "triggers[0].params.branch", 7, "unknown name 'steps'"),
    ("cycle", """
        triggers:
          - id: b_then_a
            event: workstream.ws-b.completed
            workstream: WS-A
          - id: a_then_b
            event: workstream.ws-a.completed
            workstream: WS-B
     """, "triggers[0].event", 4, "trigger cycle: b_then_a (WS-A) -> a_then_b (WS-B)"),
    ("bad pattern", """
        triggers:
          - id: a
            event: "phase.*x.completed"
            workstream: WS-A
     """, "triggers[0].event", 4, "must stand alone"),
    ("unknown key", """
        triggers:
          - id: a
            event: x.y
            workstream: WS-A
            debounse: 5s
     """, "triggers[0].debounse", 6, "unknown key"),
    ("event and schedule", """
        triggers:
          - id: a
            event: x.y
            schedule: {every: 1s}
            workstream: WS-A
     """, "triggers[0]", 3, "either event:"),
]


@pytest.mark.parametrize(("text", "key", "line", "message"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_config_is_one_line_with_file_key_and_line(text: str, key: str, line: int,
                                                        message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text)
    error = caught.value
    assert (error.file, error.key_path, error.line) == ("config/triggers.yaml", key, line)
    assert message in str(error)
    assert "\n" not in str(error)
    assert str(error).startswith(f"config/triggers.yaml:{line} at {key}: ")
    assert error.exit_code == 2


def test_a_marked_cycle_is_allowed() -> None:
    config = load("""
        triggers:
          - {id: b_then_a, event: workstream.ws-b.completed, workstream: WS-A, allow_cycle: true}
          - {id: a_then_b, event: workstream.ws-a.completed, workstream: WS-B}
    """)
    assert len(config) == 2


def test_a_rule_that_fires_on_its_own_failure_is_a_cycle() -> None:
    with pytest.raises(ConfigError, match=r"trigger cycle: alert \(WS-C\) -> alert again"):
        load("triggers: [{id: alert, event: '**.failed', workstream: WS-C}]")


def test_a_cycle_through_an_emit_step_is_found() -> None:
    with pytest.raises(ConfigError, match="trigger cycle"):
        load("""
            triggers:
              - {id: on_build, event: build.done, workstream: WS-B}
        """)


def test_the_shipped_config_loads_against_its_workstreams() -> None:
    text = (ROOT / "config" / "triggers.yaml").read_text()
    ids = {rule["workstream"] for rule in yaml.safe_load(text)["triggers"]}
    config = parse_triggers(text, file="config/triggers.yaml",
                            catalog=FakeCatalog({ws: [] for ws in ids}))
    assert {"phase1_to_phase2", "phase2_to_phase3", "phase3_to_phase4"} <= set(config.rules)


keys = st.sampled_from(["id", "event", "schedule", "workstream", "conditions", "params",
                        "debounce", "throttle", "dedupe", "enabled", "bogus"])
scalars = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=12) | \
    st.sampled_from(["5s", "1m", "x.y", "**.failed", "WS-A", "{{ event.data.x }}", "{{ nope }}",
                     "0 2 * * *", "Europe/Berlin", "[", "*/0 * * * *"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) |
                      st.dictionaries(st.sampled_from(["field", "equals", "matches", "cron",
                                                       "timezone", "every", "window", "key",
                                                       "max", "per", "all", "any", "not"]),
                                      inner, max_size=3), max_leaves=12)


@given(st.lists(st.dictionaries(keys, values, max_size=7), max_size=4))
def test_generated_configs_raise_only_config_errors(rules: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump({"triggers": rules})
    try:
        load(text)
    except PitstopError as exc:
        assert isinstance(exc, ConfigError)
        assert "\n" not in str(exc)


def test_a_github_push_feeds_the_shipped_file_change_triggers() -> None:
    from pitstop.bus.events import make_event
    from pitstop.server.webhooks import github_events
    from pitstop.triggers.replay import replay

    text = (ROOT / "config" / "triggers.yaml").read_text()
    ids = {rule["workstream"] for rule in yaml.safe_load(text)["triggers"]}
    config = parse_triggers(text, file="config/triggers.yaml",
                            catalog=FakeCatalog({ws: [] for ws in ids}))
    payload = {"ref": "refs/heads/main", "after": "abc", "commits": [
        {"added": ["schema/b.sql"], "modified": ["README.md"], "removed": []},
        {"added": [], "modified": ["plugins/errors/x.py"], "removed": ["schema/docs/old.md"]}]}
    [(event_type, data)] = github_events("push", payload, "delivery-1")
    assert data["changed_files"] == ["README.md", "plugins/errors/x.py", "schema/b.sql",
                                     "schema/docs/old.md"]
    result = replay(config, [make_event(event_type, data)])
    fired = {d.rule: d.decision for d in result.decisions}
    assert fired["schema_changed"] == "would_launch"
    assert fired["error_plugins_changed"] == "would_launch"  # its debounced burst, at the end


@pytest.mark.parametrize(("spec", "message"), [
    ("main", "expects BASE..HEAD"),
    ("--output=/tmp/x..HEAD", "is not a revision"),
    ("a..-b", "is not a revision"),
])
def test_changed_files_refuses_what_is_not_a_range(spec: str, message: str) -> None:
    from pitstop.kernel.errors import ValidationError
    from pitstop.triggers.gitchanges import changed_files

    with pytest.raises(ValidationError, match=message):
        changed_files(spec)
