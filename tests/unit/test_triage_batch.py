"""Batch triage: the acceptance report (5,000 cases, 500 failures, 7 root causes), grouping,
ordering, summary, the state log, and the CLI's --json being the same on every run."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitstop.kernel.statelog import StateLog, read_log
from pitstop.triage import TriageConfig, TriageService, parse_bytes
from tests.support import ROOT, run_cli
from tests.triage.junit_gen import CAUSES, junit_report

pytestmark = pytest.mark.timeout(90)


def _now() -> datetime:
    return datetime(2024, 5, 14, 9, 0, tzinfo=UTC)


def test_five_thousand_cases_seven_root_causes_seven_groups(tmp_path: Path) -> None:
    xml, causes = junit_report()

    service = TriageService(TriageConfig(), clock=_now, log=StateLog("test_triage", tmp_path))
    outcome = service.triage([parse_bytes(xml.encode(), "big.xml", max_bytes=1 << 30)])
    report = outcome.report
    assert len(report.groups) == 7
    assert {str(group.category): group.count for group in report.groups} == causes
    assert [str(group.category) for group in report.groups] == [
        "infrastructure", "timeout", "import_error", "fixture_error", "type_error",
        "attribute_error", "assertion_error"]  # precedence order
    summary = report.summary()
    assert summary["failures"] == 500 and summary["passed"] == 4500
    # the missing module is a third-party one (fix_environment): type and attribute errors only
    assert summary["auto_fixable_share"] == round((70 + 60) / 500, 3)
    records = list(read_log("test_triage", tmp_path))
    assert sum(record["kind"] == "result" for record in records) == 500
    assert records[-1]["kind"] == "batch" and records[-1]["summary"]["groups"] == 7


def test_cli_json_is_stable_and_ordered(tmp_path: Path) -> None:
    xml, _ = junit_report()
    report = tmp_path / "junit.xml"
    report.write_text(xml)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PITSTOP_")}
    env.update(PITSTOP_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    runs = [run_cli(["triage", str(report), "--json"], env, cwd=tmp_path) for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr
    assert runs[0].stdout == runs[1].stdout
    data = json.loads(runs[0].stdout)
    groups = data["groups"]
    assert len(groups) == len(CAUSES)
    for group in groups:
        assert {"category", "action", "auto_fixable", "count", "fingerprint", "tests",
                "evidence"} <= set(group)
        assert len(group["tests"]) == group["count"] and group["evidence"]
    assert (tmp_path / ".state" / "test_triage.jsonl").exists()
    table = run_cli(["triage", str(report)], env, cwd=tmp_path)
    lines = [line.split()[0] for line in table.stdout.splitlines()[1:] if line[:1].isalpha()]
    assert lines[:7] == [group["category"] for group in groups]  # same order as --json
    bad = run_cli(["triage", str(tmp_path / "nope.xml")], env, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no such file")
    assert "Traceback" not in bad.stderr
