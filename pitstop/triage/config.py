"""``config/triage.yaml``: the known-flaky list, flaky history, actions, input limits (all optional)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pitstop.kernel.configfile import load_model
from pitstop.kernel.constants import TRIAGE_CONFIG_FILE
from pitstop.triage.model import Action, Category


class FlakySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(20, ge=2, le=1000)
    """Results kept per test id; the flip rate is measured over them."""
    ttl_days: float = Field(30, gt=0, le=365)
    """History of a test not run for this long is forgotten."""


class TriageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    known_flaky: list[str] = Field(default_factory=list)
    """Test ids (shell-style globs: ``tests/test_net.py::test_*``) known to be flaky."""
    actions: dict[Category, Action] = Field(default_factory=dict)
    """Override the action of a category (``type_error: manual_review``)."""
    flaky: FlakySettings = FlakySettings()
    max_input_mb: float = Field(256, gt=0, le=4096)
    """Largest input file triaged; a larger one is refused with a clear error."""
    allowed_roots: list[Path] = Field(default_factory=list)
    """Where the ``triage`` task and step may read files, besides the project directory and
    ``scripts.allowed_roots`` (relative ones are the project's)."""

    @field_validator("known_flaky")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not pattern.strip() for pattern in value):
            raise ValueError("a known-flaky pattern must not be empty")
        return value

    def is_known_flaky(self, test_id: str | None) -> bool:
        if not test_id or not self.known_flaky:
            return False
        candidates = {test_id, canonical_test_id(test_id)}
        return any(fnmatch.fnmatchcase(candidate, pattern)
                   for pattern in self.known_flaky for candidate in candidates)


def load_triage_config(config_dir: Path) -> TriageConfig:
    """``<config_dir>/triage.yaml``, or the defaults when there is none."""
    return load_model(config_dir / TRIAGE_CONFIG_FILE, TriageConfig)


_PY_FILE = re.compile(r"\.py$")


def canonical_test_id(test_id: str) -> str:
    """One spelling per test whatever reported it: pytest's ``tests/test_a.py::TestX::test_y[1]``
    and JUnit's ``tests.test_a.TestX.test_y[1]`` are both ``tests.test_a.TestX.test_y[1]``."""
    head, bracket, params = test_id.partition("[")
    if "::" in head or head.endswith(".py"):
        path, _, rest = head.partition("::")
        path = _PY_FILE.sub("", path).replace("\\", "/").strip("/").replace("/", ".")
        head = ".".join(part for part in (path, rest.replace("::", ".")) if part)
    return head + bracket + params
