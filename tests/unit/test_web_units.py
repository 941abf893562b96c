"""The web view's pure parts: password hashes, config/web.yaml errors, safe links, paths,
charts, reading the end of state logs, and the trace tree."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitstop.bus.events import make_event
from pitstop.bus.patterns import compile_pattern
from pitstop.kernel.errors import ConfigError
from pitstop.runs.store import Run
from pitstop.web.charts import bar_chart
from pitstop.web.config import load_web_config
from pitstop.web.eventview import _needle, event_ms, trace_tree
from pitstop.web.jsonltail import tail_records
from pitstop.web.passwords import check_hash_format, hash_password, verify_password
from pitstop.web.render import safe_href, ui

pytestmark = pytest.mark.timeout(30)


def test_scrypt_hashes_verify_only_their_password() -> None:
    stored = hash_password("s3cret pass")
    assert stored.startswith("scrypt$16384$8$1$") and check_hash_format(stored) is None
    assert verify_password("s3cret pass", stored)
    assert not verify_password("s3cret pasS", stored)
    assert not verify_password("", stored)
    assert not verify_password("x" * 5000, stored)
    assert hash_password("same") != hash_password("same")  # salted


def test_pbkdf2_hashes_from_elsewhere_are_accepted() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"pw-from-ldap", salt, 200_000)
    b64 = lambda raw: base64.b64encode(raw).decode().rstrip("=")  # noqa: E731
    stored = f"pbkdf2_sha256$200000${b64(salt)}${b64(digest)}"
    assert verify_password("pw-from-ldap", stored)
    assert not verify_password("pw-from-ldaP", stored)


@pytest.mark.parametrize("stored", [
    "hunter2", "md5$abc", "scrypt$1000$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!$AAAA",
    "pbkdf2_sha256$1000$AAAA$AAAA", "scrypt$16384$99$1$AAAA$AAAA", ""])
def test_what_is_not_a_usable_hash_is_refused(stored: str) -> None:
    assert check_hash_format(stored) is not None
    assert not verify_password("anything", stored)


def test_an_unknown_user_costs_a_hash_and_fails() -> None:
    assert not verify_password("whatever", None)


@pytest.mark.parametrize(("text", "key", "line"), [
    ("users:\n  - name: bob\n    password_hash: hunter2\n", "users[0].password_hash", 3),
    ("users:\n  - name: token\n    password_hash: x\n", "users[0].name", 2),
    ("session_hours: -1\n", "session_hours", 1),
    ("flower_url: javascript:alert(1)\n", "flower_url", 1),
    ("secure_cookies: sometimes\n", "secure_cookies", 1),
    ("surprise: 1\n", "surprise", 1),
])
def test_config_errors_name_file_key_and_line(tmp_path: Path, text: str, key: str,
                                              line: int) -> None:
    (tmp_path / "web.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_web_config(tmp_path)
    message = str(caught.value)
    assert "web.yaml" in message and key in message and f":{line}" in message


def test_a_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load_web_config(tmp_path)
    assert config.users == [] and config.token_login and config.secure_cookies == "auto"
    assert not config.token_can_act  # a token login only looks unless web.yaml says otherwise


@pytest.mark.parametrize(("value", "expected"), [
    ("/ui/runs/abc", "/ui/runs/abc"),
    ("https://ci.example.com/run/1?x=2", "https://ci.example.com/run/1?x=2"),
    ("http://127.0.0.1:5555", "http://127.0.0.1:5555"),
    ("javascript:alert(1)", None), ("JAVASCRIPT:alert(1)", None), (" javascript:x", None),
    ("java\tscript:alert(1)", None), ("data:text/html,<b>", None), ("vbscript:x", None),
    ("//evil.example/x", None), ("https://", None), ("https://a.b/<script>", None),
    ('https://a.b/" onmouseover="x', None), ("ftp://a.b/", None), ("relative/path", None),
    ("", None), (None, None), (42, None), ("https://a.b/" + "x" * 3000, None),
])
def test_only_own_paths_and_http_urls_become_links(value: object, expected: str | None) -> None:
    assert safe_href(value) == expected


def test_ui_paths_quote_every_part() -> None:
    assert ui("runs", "a/b?c") == "/ui/runs/a%2Fb%3Fc"
    assert ui("events", pattern="**.failed", since=None) == "/ui/events?pattern=%2A%2A.failed"


def test_charts_scale_to_the_largest_value() -> None:
    chart = bar_chart("t", [("a", 10), ("b", None), ("c", 5)], width=300, height=100)
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 98 and heights[1] == 0 and heights[2] == 49
    assert chart.bars[1].shown == "\u2013" and not chart.empty
    assert bar_chart("t", [("a", None)]).empty


def test_tail_records_reads_the_newest_lines_and_skips_torn_ones(tmp_path: Path) -> None:
    lines = [f'{{"n": {i}, "tag": "{"x" if i % 2 else "y"}"}}' for i in range(5000)]
    (tmp_path / "log.1.jsonl").write_text("\n".join(lines[:2000]) + "\n")
    (tmp_path / "log.jsonl").write_text("\n".join(lines[2000:]) + "\n{torn\n\n[1]\n")
    newest = tail_records("log", tmp_path, limit=3)
    assert [r["n"] for r in newest] == [4997, 4998, 4999]
    assert [r["n"] for r in tail_records("log", tmp_path, limit=4000)][:2] == [1000, 1001]
    odd = tail_records("log", tmp_path, limit=10, needle=b'"x"')
    assert all(r["n"] % 2 for r in odd) and odd[-1]["n"] == 4999
    assert len(tail_records("log", tmp_path, limit=10**6, max_bytes=1000)) < 60
    assert tail_records("none", tmp_path, limit=5) == []


def test_needles_are_substrings_of_every_matching_envelope() -> None:
    for pattern, kind in [("phase.*.completed", "phase.7.completed"), ("**.failed", "x.y.failed"),
                          ("**.failed", "failed"), ("deploy.**", "deploy")]:
        event = make_event(kind, {"k": 1}, source="s")
        needle = _needle(compile_pattern(pattern))
        assert needle and needle in event.to_json(), (pattern, kind)
    assert _needle(compile_pattern("**")) == ""
    event = make_event("a.b", {})
    assert event_ms(event.id) is not None and event_ms("not-an-id") is None


def _run(run_id: str, event_id: str | None = None, parent: str | None = None) -> Run:
    now = datetime.now(UTC)
    return Run(run_id=run_id, kind="workstream", status="succeeded", created_at=now,
               updated_at=now, event={"id": event_id} if event_id else None,
               parent_run_id=parent)


def test_the_trace_tree_hangs_runs_and_events_under_their_causes() -> None:
    root = make_event("phase.1.completed", {})
    child = make_event("ws.done", {"run_id": "R1"}, parent=root)
    loose = make_event("tool.invoked", {"run_id": "R2"}, trace_id=root.trace_id)
    runs = {"R1": _run("R1", event_id=root.id), "R2": _run("R2", parent="R1")}
    decisions = [{"event_id": root.id, "rule": "r", "decision": "launched", "run_id": "R1"}]
    roots = trace_tree([root, child, loose], runs, decisions)
    assert [n.kind for n in roots] == ["event"]
    top = roots[0]
    assert [n.kind for n in top.children] == ["decision", "run"]
    run1 = top.children[1]
    assert {(n.kind, n.run.run_id if n.run else n.event.id if n.event else "")
            for n in run1.children} == {("run", "R2"), ("event", child.id)}
    run2 = next(n for n in run1.children if n.kind == "run")
    assert [n.event.id for n in run2.children if n.event] == [loose.id]


def test_a_looping_chain_still_shows_every_node_once() -> None:
    first = make_event("a.b", {"run_id": "R1"})
    runs = {"R1": _run("R1", event_id=first.id)}  # the run launched by the event reporting on it
    roots = trace_tree([first], runs, [])
    seen: list[str] = []

    def walk(nodes: list) -> None:  # type: ignore[type-arg]
        for node in nodes:
            seen.append(node.kind)
            walk(node.children)

    walk(roots)
    assert sorted(seen) == ["event", "run"]
