"""Every public entry point swept with bad input: event payloads (built and decoded), webhook and
API bodies through the HTTP app, CLI arguments through ``pitstop.cli.main``, patches through the
diff parser, triage inputs through the parser and the classifier, and alert templates. Each
input is accepted or refused with pitstop's own error (naming what is wrong); never anything
else, never an HTTP 500, never the CLI's internal-error exit (70)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from pitstop.alerts.templates import DEFAULT_TEXT, render
from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event, make_event
from pitstop.cli import cli, main
from pitstop.kernel.errors import ExitCode
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.patches.diff import parse_diff
from pitstop.server.app import create_app
from pitstop.triage import TestTriage, parse_bytes
from tests.fuzz.sweep import CONFIG_DIR, EXAMPLES, JSON_VALUES, VALUES, WEIRD_TEXT, judge, mutated
from tests.support import ROOT

pytestmark = pytest.mark.timeout(3600)
SWEEP = settings(max_examples=EXAMPLES,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TYPES = st.one_of(st.text(max_size=40), WEIRD_TEXT,
                  st.lists(st.one_of(st.sampled_from(["build", "*", "**", "", "ÄÖ", "x" * 70]),
                                     st.text(max_size=8)), max_size=6).map(".".join))


# --- event payloads -----------------------------------------------------------------------------

@SWEEP
@given(TYPES, st.one_of(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6), VALUES),
       st.one_of(st.none(), st.text(max_size=300), WEIRD_TEXT),
       st.one_of(st.none(), st.text(max_size=80)))
def test_event_payloads_are_built_or_refused(event_type: str, data: Any, source: str | None,
                                             trace_id: str | None) -> None:
    judge(lambda: make_event(event_type, data, source=source, trace_id=trace_id,
                             max_data_bytes=4096))


VALID_ENVELOPE = make_event("build.linux.failed", {"sha": "abc", "n": 1}).to_dict()


@SWEEP
@given(st.one_of(mutated(VALID_ENVELOPE).map(lambda d: json.dumps(d, default=str)),
                 st.text(max_size=300), st.binary(max_size=300),
                 st.sampled_from(['{"id": 1}', "[]", "null", '{"data": NaN}', '{"hops": 1e999}',
                                  json.dumps(VALID_ENVELOPE).replace("1", "1" * 400)])))
def test_stream_entries_decode_or_are_refused(raw: str | bytes) -> None:
    judge(lambda: Event.from_json(raw))


# --- webhook and API bodies ---------------------------------------------------------------------

SECRET, TOKEN = "sweep-secret", "sweep-token"
PUSH = {"ref": "refs/heads/main", "before": "a" * 40, "after": "b" * 40,
        "commits": [{"id": "b" * 40, "added": ["x.py"], "removed": [], "modified": ["README.md"]}],
        "repository": {"full_name": "o/r"}, "pusher": {"name": "p"}}
PULL = {"action": "opened", "number": 3, "repository": {"full_name": "o/r"},
        "pull_request": {"number": 3, "head": {"sha": "c" * 40, "ref": "f"},
                         "base": {"ref": "main"}, "title": "t", "merged": False}}
BODIES = st.one_of(mutated(PUSH).map(lambda d: json.dumps(d, default=str).encode()),
                   mutated(PULL).map(lambda d: json.dumps(d, default=str).encode()),
                   st.binary(max_size=200), st.text(max_size=200).map(str.encode))
GITHUB_EVENTS = st.one_of(st.sampled_from(["push", "pull_request", "workflow_run", "release",
                                           "ping", "issues"]), st.text(max_size=20))


@pytest.fixture(scope="module")
def http(redis_server: ServerInfo) -> Iterator[TestClient]:
    client = redis.Redis.from_url(redis_server.url)
    app = create_app(bus=EventBus(client), client=client, webhook_secret=SECRET, api_token=TOKEN)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    client.close()


def _headers(body: bytes, event: str, signed: bool, content_type: str) -> dict[str, str]:
    headers = {"Content-Type": content_type, "X-GitHub-Delivery": str(uuid.uuid4())}
    if event.isascii() and event.isprintable():  # what an HTTP client can send at all
        headers["X-GitHub-Event"] = event
    if signed:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(SECRET.encode(), body,
                                                              hashlib.sha256).hexdigest()
    return headers


@settings(SWEEP, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(BODIES, GITHUB_EVENTS, st.booleans(),
       st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]))
def test_webhook_bodies_never_make_a_500(http: TestClient, body: bytes, event: str, signed: bool,
                                         content_type: str) -> None:
    response = http.post("/webhooks/github", content=body,
                         headers=_headers(body, event, signed, content_type))
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.text.strip()


@settings(SWEEP, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(st.fixed_dictionaries({"type": TYPES, "data": JSON_VALUES},
                                       optional={"source": st.text(max_size=40),
                                                 "trace_id": VALUES}).map(json.dumps),
                 st.text(max_size=200)),
       st.sampled_from([TOKEN, "wrong", ""]))
def test_api_event_bodies_never_make_a_500(http: TestClient, body: str, token: str) -> None:
    response = http.post("/events", content=body.encode(),
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"})
    assert response.status_code < 500, (response.status_code, response.text)


# --- CLI arguments ------------------------------------------------------------------------------

EXCLUDED = {"up", "worker", "beat", "flower", "serve", "watch", "redis", "web", "smoke"}
"""Long-running or server commands (their options are checked by their own tests)."""
NEVER = {"--wait", "--follow", "-f"}
"""Tokens that make a command wait for workers that this sweep does not run."""


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                              list[str]]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if not prefix and name in EXCLUDED:
            continue
        path = (*prefix, name)
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            options = [opt for param in command.params for opt in getattr(param, "opts", [])
                       if opt not in NEVER]
            found.append((path, options))
    return found


COMMANDS = _commands(cli)


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    path, options = draw(st.sampled_from(COMMANDS))
    tokens = st.one_of(st.sampled_from(options or ["--help"]), st.text(max_size=20), WEIRD_TEXT,
                       st.integers(-5, 5).map(str), st.sampled_from(["nan", "inf", "-1e309"]),
                       st.just("--"))
    rest = [t for t in draw(st.lists(tokens, max_size=6)) if t not in NEVER and "\x00" not in t]
    return [*path, *rest]


@pytest.fixture(scope="module")
def cli_env(redis_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("sweep-home")
    shutil.copytree(CONFIG_DIR, home / "config")
    (home / "scripts").mkdir()
    return {"PITSTOP_HOME": str(home), "PITSTOP_REDIS_URL": redis_server.url,
            "PITSTOP_CONFIG_DIR": str(home / "config"), "PITSTOP_STATE_DIR": str(home / ".state"),
            "PITSTOP_LOST_AFTER_SECONDS": "2", "PITSTOP_DEBUG": ""}


ALLOWED_EXITS = {int(code) for code in ExitCode} - {ExitCode.INTERNAL}
HANG_AFTER = 60
"""Seconds one command may take (numbers drawn are small: no option asks for a long wait)."""


class Hung(BaseException):
    """Raised by the alarm in the command's thread: past anything main() catches."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise Hung


@settings(SWEEP, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argvs())
def test_cli_arguments_exit_with_a_code_from_the_table(cli_env: dict[str, str],
                                                       argv: list[str]) -> None:
    runner = CliRunner()
    previous = signal.signal(signal.SIGALRM, _alarm)
    with runner.isolation(input="", env=cli_env) as (_out, err, *_):
        signal.alarm(HANG_AFTER)
        try:
            main(argv)
            code: Any = 0
        except SystemExit as exc:
            code = exc.code if exc.code is not None else 0
        except Hung:
            pytest.fail(f"{argv} still running after {HANG_AFTER}s")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    stderr = err.getvalue().decode(errors="replace")
    assert code in ALLOWED_EXITS, f"exit {code} for {argv}: {stderr[-500:]}"
    assert "Traceback" not in stderr, stderr


# --- patches, triage inputs, alert templates ----------------------------------------------------

SAMPLE_DIFF = (b"diff --git a/calc.py b/calc.py\nindex 1111111..2222222 100644\n--- a/calc.py\n"
               b"+++ b/calc.py\n@@ -1,3 +1,4 @@\n def add(a, b):\n-    return a + b\n"
               b"+    return b + a\n+\n \n")


@st.composite
def byte_edits(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        data[at:at + draw(st.integers(0, 8))] = draw(st.binary(max_size=8))
    return bytes(data)


@SWEEP
@given(st.one_of(byte_edits(SAMPLE_DIFF), st.binary(max_size=400),
                 st.lists(st.sampled_from([b"diff --git a/x b/x", b"--- a/x", b"+++ b/../y",
                                           b"@@ -1 +1 @@", b"@@ -0,0 +1,99999 @@", b"+x", b"-x",
                                           b" x", b"new file mode 120000",
                                           b"GIT binary patch", b"literal 999999999",
                                           b"rename from a", b"rename to /etc/x",
                                           b"\\ No newline at end of file"]),
                          max_size=12).map(b"\n".join)))
def test_patches_parse_or_are_refused(data: bytes) -> None:
    judge(lambda: parse_diff(data, binary_cap=4096))


CORPUS = sorted((ROOT / "tests" / "triage" / "corpus").glob("*.*"))


@SWEEP
@given(st.one_of(st.sampled_from(CORPUS).flatmap(lambda p: byte_edits(p.read_bytes()[:3000])),
                 st.binary(max_size=500), st.text(max_size=500).map(str.encode),
                 st.sampled_from([b"<?xml version='1.0'?><testsuites><testsuite>",
                                  b"<!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><x>&a;</x>",
                                  b"\x1b[31mFAILED\x1b[0m tests/x.py::t - AssertionError",
                                  b"\xff\xfe\x00\x00"])),
       st.sampled_from(["report.xml", "out.txt", "ci.log", "x"]))
def test_triage_inputs_parse_and_classify_or_are_refused(data: bytes, name: str) -> None:
    judge(lambda: parse_bytes(data, name, max_bytes=64 * 1024))
    text = data.decode("utf-8", errors="replace")
    judge(lambda: TestTriage().classify_failure(text))


TEMPLATE_BITS = st.sampled_from(["{{", "}}", "{%", "%}", "{{ alerts }}", "{{ title|upper }}",
                                 "{% for a in alerts %}{{ a.id }}{% endfor %}",
                                 "{{ ''.__class__.__mro__[1].__subclasses__() }}",
                                 "{{ range(10**9)|list }}", "{{ 1/0 }}", "{% include 'x' %}",
                                 "{{ alerts[99].nope.x }}", "{% macro m() %}{% endmacro %}",
                                 "<@channel>", "&lt;", "{#", "#}", "{{ self }}"])


@SWEEP
@given(st.lists(st.one_of(TEMPLATE_BITS, st.text(max_size=10)), max_size=6).map("".join),
       st.fixed_dictionaries({"alerts": st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES,
                                                                 max_size=5), max_size=3)},
                             optional={"title": JSON_VALUES, "receiver": JSON_VALUES,
                                       "more_alerts": JSON_VALUES}),
       st.booleans())
def test_alert_templates_render_or_fall_back(template: str, context: dict[str, Any],
                                             slack: bool) -> None:
    """The template is the user's; the context is pitstop's own (its alerts are a list)."""
    assert isinstance(render(template, DEFAULT_TEXT, context, slack=slack), str)


@SWEEP
@given(st.lists(st.one_of(TEMPLATE_BITS, st.text(max_size=10)), max_size=6).map("".join))
def test_alert_templates_in_alerts_yaml_are_checked_with_their_key(template: str) -> None:
    from pitstop.alerts.config import parse_alerts_config

    text = ("channels:\n  s:\n    type: slack\n    webhook_url: ${HOOK}\n    title: "
            + json.dumps(template) + "\nreceivers:\n  team: {channels: [s]}\n"
            "route: {receiver: team}\n")
    judge(lambda: parse_alerts_config(text, file="alerts.yaml",
                                      environ={"HOOK": "https://hooks.slack.invalid/x"}))


def test_the_sweep_reaches_every_cli_command_but_the_long_running_ones() -> None:
    names = {path[0] for path, _ in COMMANDS}
    assert {"emit", "run", "runs", "show", "events", "triggers", "triage", "alerts", "patch",
            "deploy", "doctor"} <= names
    assert not names & EXCLUDED
    assert os.environ.get("PITSTOP_DEBUG") in (None, "")
    assert tempfile.gettempdir()


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


FLOAT_OPTIONS = [(path, param.opts[0]) for path in [(name,) for name in sorted(cli.commands)
                                                    if name in EXCLUDED] + [p for p, _ in COMMANDS]
                 if not isinstance(_command(path), click.Group)
                 for param in _command(path).params if isinstance(param.type, click.FloatRange)]


@pytest.mark.parametrize(("path", "option"), FLOAT_OPTIONS or [(("doctor",), "--timeout")])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_number_of_seconds_is_a_usage_error(path: tuple[str, ...], option: str,
                                                         value: str) -> None:
    """Found by the sweep: click's FloatRange let nan and inf through (doctor --timeout nan
    was an internal error, --timeout inf waited forever)."""
    result = CliRunner().invoke(cli, [*path, option, value], catch_exceptions=False)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "finite" in result.output or "range" in result.output, result.output
