"""Test triage: classify failures from real CI output, find flaky tests, group and summarize.

``TestTriage().classify_failure(test_output)`` is the seed's entry point; :class:`TriageService`
runs a batch (parse, history, classify, group, log, events) for the CLI, the task and the step.
"""

from pitstop.triage.batch import BatchReport, Group, group_results
from pitstop.triage.classifier import TestTriage
from pitstop.triage.config import TriageConfig, canonical_test_id, load_triage_config
from pitstop.triage.flaky import FlakyHistory, FlakyStats
from pitstop.triage.inputs import parse_bytes, parse_file
from pitstop.triage.model import PRECEDENCE, Action, Category, Location, TriageResult
from pitstop.triage.service import BatchOutcome, TriageService, configured_service, resolve_input

__all__ = [
    "PRECEDENCE", "Action", "BatchOutcome", "BatchReport", "Category", "FlakyHistory",
    "FlakyStats", "Group", "Location", "TestTriage", "TriageConfig", "TriageResult",
    "TriageService", "canonical_test_id", "configured_service", "group_results",
    "load_triage_config", "parse_bytes", "parse_file", "resolve_input",
]
