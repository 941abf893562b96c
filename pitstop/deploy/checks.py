"""The steps of a deployment: scripts through the supervisor, and HTTP smoke checks.

Every step ends as a :class:`StepOutcome` (name, exit code or HTTP status, duration, attempts,
one redacted line of detail): what the deployment record, ``deploy history`` and
``.state/deployments.jsonl`` show. A script step runs through :class:`pitstop.scripts.CLIWrapper`
(confined to ``scripts.allowed_roots``, timed, output redacted); one that cannot even start
(outside the roots, no interpreter) is a failed step with exit code 2, never an exception.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from pitstop.deploy.config import CommandConfig, HttpCheckConfig, SmokeCheckConfig, substitute
from pitstop.kernel.errors import PitstopError
from pitstop.kernel.redaction import Redactor
from pitstop.scripts.cliwrapper import CLIWrapper
from pitstop.scripts.result import ExecutionResult

__all__ = ["HttpProbe", "ScriptStep", "SmokeSuite", "StepKindName", "StepOutcome"]

StepKindName = Literal["deploy", "smoke", "rollback", "rollback_smoke"]
DETAIL_CHARS = 300
BODY_SHOWN = 120


@dataclass
class StepOutcome:
    """One step of a deployment, as recorded."""

    step: StepKindName
    name: str
    ok: bool
    duration: float
    exit_code: int | None = None
    http_status: int | None = None
    latency_ms: float | None = None
    attempts: int = 1
    detail: str = ""
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration"] = round(self.duration, 3)
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 1)
        return {key: value for key, value in out.items() if value not in (None, {}, "")}


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= DETAIL_CHARS else flat[:DETAIL_CHARS - 1] + "…"


WrapperFactory = Callable[[float], CLIWrapper]
"""Builds the supervisor for one script step, given its timeout in seconds."""


class ScriptStep:
    """Runs a configured script through the supervisor and says how it went."""

    def __init__(self, wrapper_for: WrapperFactory, *, redactor: Redactor,
                 timer: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.wrapper_for = wrapper_for
        self.redactor = redactor
        self.timer = timer
        self.sleep = sleep

    def run(self, step: StepKindName, name: str, command: CommandConfig,
            values: Mapping[str, str], default_timeout: float, *, retries: int = 0,
            retry_delay: float = 0.0, trace_id: str | None = None) -> StepOutcome:
        timeout = command.timeout or default_timeout
        args = [substitute(arg, dict(values)) for arg in command.args]
        env = {key: substitute(value, dict(values)) for key, value in command.env.items()}
        env.update({"PITSTOP_DEPLOY_ENV": values.get("env", ""),
                    "PITSTOP_DEPLOY_VERSION": values.get("version", ""),
                    "PITSTOP_DEPLOY_PREVIOUS": values.get("previous", "")})
        started = self.timer()
        outcome = self._once(step, name, command.script, args, env, timeout, trace_id)
        for attempt in range(2, retries + 2):
            if outcome.ok:
                break
            self.sleep(retry_delay)
            outcome = self._once(step, name, command.script, args, env, timeout, trace_id)
            outcome.attempts = attempt
        outcome.duration = self.timer() - started
        return outcome

    def _once(self, step: StepKindName, name: str, script: str, args: list[str],
              env: dict[str, str], timeout: float, trace_id: str | None) -> StepOutcome:
        started = self.timer()
        try:
            result = self.wrapper_for(timeout).wrap(script, args, env=env, timeout=timeout,
                                                    trace_id=trace_id)
        except PitstopError as exc:  # nothing ran: outside the roots, no interpreter …
            return StepOutcome(step, name, False, self.timer() - started, exit_code=2,
                               detail=_one_line(self.redactor.redact_text(str(exc))))
        return StepOutcome(step, name, result.succeeded, result.duration,
                           exit_code=result.exit_code, run_id=result.run_id,
                           detail=_script_detail(result))


def _script_detail(result: ExecutionResult) -> str:
    if result.timed_out:
        return f"timed out (exit {result.exit_code})"
    if result.succeeded:
        return "exit 0"
    tail = (result.stderr_tail or result.stdout_tail).strip().splitlines()
    last = tail[-1] if tail else ""
    return _one_line(f"exit {result.exit_code}" + (f": {last}" if last else ""))


class HttpProbe:
    """An HTTP smoke check: status, body pattern and latency bound, with retries."""

    def __init__(self, client: httpx.Client, *, redactor: Redactor,
                 timer: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.redactor = redactor
        self.timer = timer
        self.sleep = sleep

    def run(self, step: StepKindName, name: str, check: HttpCheckConfig,
            values: Mapping[str, str]) -> StepOutcome:
        url = substitute(check.url, dict(values))
        pattern = (re.compile(substitute(check.body_match, dict(values), literal=True))
                   if check.body_match else None)
        headers = {key: substitute(value, dict(values)) for key, value in check.headers.items()}
        started = self.timer()
        outcome = self._once(step, name, check, url, headers, pattern)
        for attempt in range(2, check.retries + 2):
            if outcome.ok:
                break
            self.sleep(check.retry_delay)
            outcome = self._once(step, name, check, url, headers, pattern)
            outcome.attempts = attempt
        outcome.duration = self.timer() - started
        return outcome

    def _once(self, step: StepKindName, name: str, check: HttpCheckConfig, url: str,
              headers: dict[str, str], pattern: re.Pattern[str] | None) -> StepOutcome:
        shown_url = self.redactor.redact_text(url)
        began = self.timer()
        try:
            response = self.client.request(check.method, url, headers=headers,
                                           timeout=check.timeout, follow_redirects=False)
        except httpx.TimeoutException:
            took = self.timer() - began
            return StepOutcome(step, name, False, took, latency_ms=took * 1000,
                               detail=f"{check.method} {shown_url}: no answer within "
                                      f"{check.timeout:g}s")
        except httpx.HTTPError as exc:
            took = self.timer() - began
            return StepOutcome(step, name, False, took, detail=_one_line(self.redactor.redact_text(
                f"{check.method} {shown_url}: {type(exc).__name__}: {exc}")))
        took = self.timer() - began
        latency = took * 1000
        problems: list[str] = []
        if response.status_code not in check.status:
            expected = "/".join(str(code) for code in check.status)
            problems.append(f"status {response.status_code}, expected {expected}")
        if check.max_latency_ms is not None and latency > check.max_latency_ms:
            problems.append(f"answered in {latency:.0f} ms, over {check.max_latency_ms:g} ms")
        if pattern is not None and not pattern.search(response.text):
            body = self.redactor.redact_text(" ".join(response.text.split()))[:BODY_SHOWN]
            problems.append(f"body does not match {pattern.pattern!r} (body: {body!r})")
        detail = (f"{check.method} {shown_url}: " + "; ".join(problems) if problems
                  else f"{check.method} {shown_url}: {response.status_code} in {latency:.0f} ms")
        return StepOutcome(step, name, not problems, took, http_status=response.status_code,
                           latency_ms=latency, detail=_one_line(detail))


class SmokeSuite:
    """Runs every smoke check of an environment (all of them, for a complete report)."""

    def __init__(self, scripts: ScriptStep, http: HttpProbe) -> None:
        self.scripts = scripts
        self.http = http

    def run(self, step: StepKindName, checks: list[SmokeCheckConfig], values: Mapping[str, str],
            default_timeout: float, *, trace_id: str | None = None,
            on_outcome: Callable[[StepOutcome], None] | None = None) -> list[StepOutcome]:
        outcomes: list[StepOutcome] = []
        for check in checks:
            if check.http is not None:
                outcome = self.http.run(step, check.name, check.http, values)
            else:
                outcome = self.scripts.run(step, check.name, check.command(), values,
                                           default_timeout, retries=check.retries,
                                           retry_delay=check.retry_delay, trace_id=trace_id)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
        return outcomes
