"""config/alerts.yaml: validation errors name file, key and line; secrets only from ${ENV}."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pitstop.alerts.config import parse_alerts_config, parse_duration
from pitstop.kernel.errors import ConfigError
from tests.support import run_cli

GOOD = """
channels:
  slack:
    type: slack
    webhook_url: ${SLACK_URL}
  mail:
    type: email
    host: smtp.example.com
    security: starttls
    username: me
    password: ${SMTP_PASSWORD}
    from: pitstop@example.com
    to: oncall@example.com
    fallback: slack
receivers:
  team: {channels: [slack, mail]}
route:
  receiver: team
  group_wait: 10s
  routes:
    - match: {type: "deploy.**", severity: critical, data: {branch: main}}
      receiver: team
      escalate_after: 15m
      escalate_to: team
"""
ENV = {"SLACK_URL": "https://hooks.slack.com/services/T/B/x", "SMTP_PASSWORD": "s3cret-pw"}


def test_a_good_file_compiles_its_routing_tree_and_knows_its_secrets() -> None:
    config = parse_alerts_config(GOOD, file="alerts.yaml", environ=ENV)
    assert config.root.group_wait == 10.0
    child = config.root.routes[0]
    assert child.group_wait == 10.0 and child.escalate_after == 900.0  # inherited, own
    assert set(config.secrets) == {ENV["SLACK_URL"], ENV["SMTP_PASSWORD"]}


@pytest.mark.parametrize(("text", "key", "line", "words"), [
    (GOOD.replace("channels: [slack, mail]", "channels: [slack, pager]"),
     "receivers.team.channels[1]", 16, "unknown channel 'pager'"),
    (GOOD.replace('type: "deploy.**"', 'type: "deploy.*x"'), "route.routes[0].match.type", 21,
     "'*' must stand alone"),
    (GOOD.replace("severity: critical", "severity: urgent"), "route.routes[0].match.severity",
     21, "unknown severity"),
    (GOOD.replace("group_wait: 10s", "group_wait: soon"), "route.group_wait", 19,
     "not a duration"),
    (GOOD.replace("${SMTP_PASSWORD}", "${NOT_SET_ANYWHERE}"), "channels.mail.password", 11,
     "NOT_SET_ANYWHERE is not set"),
    (GOOD.replace("${SMTP_PASSWORD}", "hunter2"), "channels.mail.password", 11,
     "${ENV_NAME} reference"),
    (GOOD.replace("to: oncall@example.com", 'to: "a@b.c\\r\\nBcc: x@evil"'), "channels.mail.to[0]",
     13, "CR or LF"),
    (GOOD.replace("fallback: slack", "fallback: mail"), "channels.mail.fallback", 14,
     "loop back"),
    (GOOD.replace("escalate_to: team", "escalate_to: bosses"),
     "route.routes[0].escalate_to", 24, "unknown receiver"),
])
def test_mistakes_name_file_key_and_line(text: str, key: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_alerts_config(text, file="config/alerts.yaml", environ=ENV)
    error = caught.value
    assert (error.file, error.key_path, error.line) == ("config/alerts.yaml", key, line), error
    assert words in str(error)
    assert "\n" not in str(error)
    assert "s3cret-pw" not in str(error)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800), (12, 12),
    ("1.5h", 5400)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["soon", "", "5 parsecs", "-1s", True, "10y"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(("edit", "key"), [
    ("channels: [slack, pager]", "receivers.team.channels[1]"),
    ('type: "deploy.**.x*"', "route.routes[0].match.type"),
    ("group_wait: 1 fortnight", "route.group_wait"),
    ("${UNSET_ALERTS_VARIABLE}", "channels.mail.password"),
])
def test_pitstop_alerts_check_exits_2_with_one_line(tmp_path: Path, edit: str, key: str) -> None:
    original = {"channels: [slack, pager]": "channels: [slack, mail]",
                'type: "deploy.**.x*"': 'type: "deploy.**"',
                "group_wait: 1 fortnight": "group_wait: 10s",
                "${UNSET_ALERTS_VARIABLE}": "${SMTP_PASSWORD}"}[edit]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "alerts.yaml").write_text(GOOD.replace(original, edit))
    env = {"PATH": "/usr/bin:/bin", "PITSTOP_HOME": str(tmp_path), **ENV}
    result = run_cli(["alerts", "check"], env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pitstop: error: config/alerts.yaml:")
    assert f" at {key}: " in lines[0]
    assert isinstance(result, subprocess.CompletedProcess)
