"""Fault tests report figures (recovery times, losses) as well as asserting on them: printed, and
appended as one JSON line per test to ``$PITSTOP_FAULTS_REPORT`` when that is set
(``bench/run_all.py`` sets it and puts the figures in docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
from typing import Any

REPORT_ENV = "PITSTOP_FAULTS_REPORT"
LONG_ENV = "PITSTOP_FAULTS_LONG"


def long_mode() -> bool:
    """``PITSTOP_FAULTS_LONG=1``: the issue's full sizes (minutes), not CI's short ones."""
    return os.environ.get(LONG_ENV, "") not in ("", "0")


def scale(short: int, long: int) -> int:
    return long if long_mode() else short


def record(name: str, figures: dict[str, Any]) -> None:
    figures = {"test": name, "mode": "long" if long_mode() else "short", **figures}
    print(f"\n[faults] {json.dumps(figures, sort_keys=True)}")
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(figures, sort_keys=True) + "\n")
