"""Every YAML config pitstop reads, swept with mutations of the shipped file and with garbage:
accepted, or refused with a ConfigError naming the key path or line; never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings

from pitstop.alerts.config import parse_alerts_config
from pitstop.alerts.templates import render
from pitstop.deploy.config import load_deployments
from pitstop.kernel.settings import load_settings
from pitstop.patches.config import load_patches_config
from pitstop.triage.config import load_triage_config
from pitstop.triggers.config import parse_triggers
from pitstop.web.config import load_web_config
from pitstop.workstreams.catalog import WorkstreamCatalog
from tests.fuzz.sweep import CONFIG_DIR, EXAMPLES, config_texts, judge, write_config

pytestmark = pytest.mark.timeout(3600)

SECRETS = {"PITSTOP_SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/services/T/B/x",
           "PITSTOP_ALERT_WEBHOOK_URL": "https://alerts.invalid/hook",
           "PITSTOP_ALERT_WEBHOOK_TOKEN": "t0ken", "PITSTOP_APPRISE_TEAMS_URL": "json://x.invalid",
           "PITSTOP_SMTP_PASSWORD": "pw", "NAME": "x", "ENV_NAME": "y"}
CATALOG = WorkstreamCatalog.load(CONFIG_DIR / "workstreams.yaml")


def _in_dir(name: str, text: str, load: object) -> None:
    with tempfile.TemporaryDirectory(prefix="pitstop-sweep-") as tmp:
        directory = Path(tmp) / "config"
        write_config(directory, name, text)
        judge(lambda: load(directory))  # type: ignore[operator]


@settings(max_examples=EXAMPLES)
@given(config_texts("pitstop.yaml"))
def test_pitstop_yaml(text: str) -> None:
    _in_dir("pitstop.yaml", text, lambda d: load_settings(d, environ={}))


@settings(max_examples=EXAMPLES)
@given(config_texts("triggers.yaml"))
def test_triggers_yaml(text: str) -> None:
    judge(lambda: parse_triggers(text, file="triggers.yaml", catalog=CATALOG, environ=SECRETS))


@settings(max_examples=EXAMPLES)
@given(config_texts("workstreams.yaml"))
def test_workstreams_yaml(text: str) -> None:
    judge(lambda: WorkstreamCatalog.from_text(text, source="workstreams.yaml", environ=SECRETS))


@settings(max_examples=EXAMPLES)
@given(config_texts("alerts.yaml"))
def test_alerts_yaml_and_its_templates(text: str) -> None:
    outcome: list[object] = []
    judge(lambda: outcome.append(parse_alerts_config(text, file="alerts.yaml", environ=SECRETS)))
    if not outcome:
        return
    config = outcome[0]
    context = {"alerts": [{"id": "a1", "type": "x.failed", "labels": {}, "count": 2}],
               "title": "t", "receiver": "team", "more_alerts": 1, "more_events": 2}
    for channel in config.file.channels.values():  # type: ignore[attr-defined]
        for key in ("title", "text"):
            source = getattr(channel, key, None)
            if source is not None:  # accepted templates render (or fall back), never raise
                assert isinstance(render(source, "{{ title }}", context, slack=True), str)


@settings(max_examples=EXAMPLES)
@given(config_texts("patches.yaml"))
def test_patches_yaml(text: str) -> None:
    _in_dir("patches.yaml", text, load_patches_config)


@settings(max_examples=EXAMPLES)
@given(config_texts("deployments.yaml"))
def test_deployments_yaml(text: str) -> None:
    _in_dir("deployments.yaml", text, load_deployments)


@settings(max_examples=EXAMPLES)
@given(config_texts("triage.yaml"))
def test_triage_yaml(text: str) -> None:
    _in_dir("triage.yaml", text, load_triage_config)


@settings(max_examples=EXAMPLES)
@given(config_texts("web.yaml"))
def test_web_yaml(text: str) -> None:
    _in_dir("web.yaml", text, load_web_config)


SWEPT = {"pitstop.yaml", "triggers.yaml", "workstreams.yaml", "alerts.yaml", "patches.yaml",
         "deployments.yaml", "triage.yaml", "web.yaml"}


def test_every_shipped_config_is_swept() -> None:
    assert {path.name for path in CONFIG_DIR.glob("*.yaml")} <= SWEPT
