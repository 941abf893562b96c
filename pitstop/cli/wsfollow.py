"""Following a workstream run from the CLI: its progress lines, its scripts' output, Ctrl-C.

``pitstop launch --wait`` and ``pitstop show --follow`` on a workstream run end here. The run's
own output stream carries its progress lines ("step build: started on …"); the output of each
``run`` step's script is followed alongside and printed with the step's name, and printed before
the line saying the step ended. While waiting, the follower also mends the run as the reaper
would, so a run is never left stuck where no Beat runs.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import time

import click

from pitstop.cli.common import Context
from pitstop.connection.outage import RedisOutage
from pitstop.kernel.errors import NothingToCancel, PitstopError, RunNotFound
from pitstop.runs.output import OutputEnd, OutputLine, RunOutput
from pitstop.runs.store import Run
from pitstop.workstreams import Orchestrator
from pitstop.workstreams.kinds import child_run_id
from pitstop.workstreams.repair import repair_run
from pitstop.workstreams.spec import KIND_RUN

__all__ = ["follow_workstream"]

POLL_SECONDS = 0.5
CHILD_JOIN_SECONDS = 2.0
"""How long a follower waits for a step's script output to end before saying the step ended."""
_STEP_ENDED = re.compile(r"step (\S+): (?:succeeded|failed|timed_out|cancelled)\b")


def follow_workstream(ctx: Context, driver: Orchestrator | None, run_id: str,
                      requests: list[int]) -> Run:
    """Print the run's progress and its scripts' output until it ends; a signal recorded in
    ``requests`` cancels it (pass a list nothing fills to never cancel). Returns the final run."""
    return _Follower(ctx, driver, run_id, requests).follow()


class _Follower:
    def __init__(self, ctx: Context, driver: Orchestrator | None, run_id: str,
                 requests: list[int]) -> None:
        self.ctx = ctx
        self.driver = driver
        self.run_id = run_id
        self.requests = requests
        self.store = ctx.run_store()
        self.output = RunOutput(ctx.redis())
        patience = ctx.settings.scripts.lost_after_seconds
        self.outage = RedisOutage(patience, what=f"lost Redis while following run {run_id}",
                                  on_down=lambda exc: _say(f"Redis unreachable, retrying… ({exc})"),
                                  on_up=lambda: _say(f"Redis is back; following run {run_id} on"))
        self.repair_every = max(2.0, patience / 2)
        self.lock = threading.Lock()
        self.children: dict[str, threading.Thread] = {}
        self.step_children: dict[str, str] = {}
        self.cancel_sent = False

    def follow(self) -> Run:
        last_check = last_repair = time.monotonic()
        current = self.outage.call(lambda: self.store.get_run(self.run_id))
        try:
            for item in self.output.follow(self.run_id, block_ms=200, outage=self.outage):
                if isinstance(item, OutputEnd):
                    break
                started = False
                if isinstance(item, OutputLine):
                    ended = _STEP_ENDED.match(item.line)
                    if ended:  # its script's last lines first, then that it ended
                        current = self.outage.call(lambda: self.store.get_run(self.run_id))
                        self._follow_children(current)
                        self._join_child(ended.group(1))
                    self._print(item.line, item.stream)
                    started = item.line.startswith("step ") and ": started on " in item.line
                if self.requests and not self.cancel_sent:
                    self._cancel()
                now = time.monotonic()
                if started or now - last_check >= POLL_SECONDS:
                    last_check = now
                    current = self.outage.call(lambda: self.store.get_run(self.run_id))
                    self._follow_children(current)
                    if now - last_repair >= self.repair_every and self.driver is not None:
                        last_repair = now
                        self.outage.call(functools.partial(repair_run, self.driver,
                                                           self.run_id))
        except KeyboardInterrupt:
            if self.requests and not self.cancel_sent:
                self._cancel()
            _say(f"stopped waiting for run {self.run_id}"
                 + ("" if self.cancel_sent else f"; it goes on (pitstop show {self.run_id})"))
            raise
        final = self.outage.call(lambda: self.store.get_run(self.run_id))
        self._follow_children(final)  # steps that started and ended between two looks
        for thread in list(self.children.values()):
            thread.join(3.0)
        return final

    def _print(self, line: str, stream: str) -> None:
        out = sys.stderr if stream == "stderr" else sys.stdout
        with self.lock:
            out.write(line + "\n")
            out.flush()

    def _cancel(self) -> None:
        self.cancel_sent = True
        _say(f"cancelling run {self.run_id} (again to stop waiting)")
        try:
            if self.driver is not None:
                self.driver.cancel_run(self.run_id, reason="cancelled from the command line")
            else:
                self.output.request_cancel(self.run_id)
        except NothingToCancel:
            pass

    def _follow_children(self, run: Run) -> None:
        """Stream the output of ``run`` steps' scripts as they start, prefixed with the step."""
        spec = run.orchestration.get("spec") or {}
        kinds = {step["id"]: step["kind"] for stage in [*spec.get("stages", []),
                                                          *spec.get("on_failure", [])]
                 for step in stage}
        for step_id, raw in run.steps.items():
            if kinds.get(step_id) != KIND_RUN or raw.get("status") not in (
                    "running", "succeeded", "failed", "timed_out", "cancelled"):
                continue
            if not raw.get("started_at"):
                continue
            child = child_run_id(run.run_id, step_id, int(raw.get("attempt") or 0))
            self.step_children[step_id] = child
            if child in self.children:
                continue
            thread = threading.Thread(target=self._child_lines, args=(step_id, child),
                                      name=f"pitstop-follow-{step_id}", daemon=True)
            self.children[child] = thread
            thread.start()

    def _join_child(self, step_id: str) -> None:
        thread = self.children.get(self.step_children.get(step_id, ""))
        if thread is not None:
            thread.join(CHILD_JOIN_SECONDS)

    def _child_lines(self, step_id: str, child: str) -> None:
        output = RunOutput(self.ctx.redis())
        quiet_since = time.monotonic()
        try:
            for item in output.follow(child, block_ms=500):
                if isinstance(item, OutputEnd):
                    return
                if isinstance(item, OutputLine):
                    quiet_since = time.monotonic()
                    self._print(f"[{step_id}] {item.line}", item.stream)
                elif time.monotonic() - quiet_since > 5.0:
                    try:
                        if self.store.get_run(child).terminal:
                            return
                    except RunNotFound:
                        return
        except PitstopError:
            return


def _say(message: str) -> None:
    click.echo(f"pitstop: {message}", err=True)
