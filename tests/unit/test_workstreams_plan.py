"""The workstream state machine, pure: stages, parallel groups, retries, on_failure, cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitstop.workstreams.plan import AttemptResult, Plan
from pitstop.workstreams.spec import StepSpec, WorkstreamSpec

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OK = AttemptResult("succeeded", {"exit_code": 0})


def _step(step_id: str, **extra: object) -> StepSpec:
    return StepSpec(id=step_id, kind="run", queue="linux", **extra)  # type: ignore[arg-type]


def _spec(**extra: object) -> WorkstreamSpec:
    """build -> (unit | lint) -> ship, on_failure: alert."""
    return WorkstreamSpec(id="WS", stages=((_step("build", retries=1, backoff=5),),
                                           (_step("unit"), _step("lint")), (_step("ship"),)),
                          on_failure=((_step("alert"),),), **extra)  # type: ignore[arg-type]


def _started(spec: WorkstreamSpec | None = None) -> Plan:
    plan = Plan(spec or _spec())
    plan.start(NOW)
    return plan


def _run(plan: Plan, step_id: str, result: AttemptResult = OK, host: str = "h", pid: int = 1):
    attempt = plan.steps[step_id].attempt
    assert plan.claim(step_id, attempt, host=host, pid=pid, now=NOW) == "claimed"
    return plan.finish(step_id, attempt, result, NOW + timedelta(seconds=2))


def test_stages_run_in_order_and_a_parallel_group_waits_for_all() -> None:
    plan = Plan(_spec())
    first = plan.start(NOW)
    assert [(d.step_id, d.attempt, d.queue) for d in first.dispatch] == [("build", 1, "linux")]
    assert plan.steps["unit"].status == "pending"
    advance = _run(plan, "build")
    assert sorted(d.step_id for d in advance.dispatch) == ["lint", "unit"]
    assert not _run(plan, "unit").dispatch  # lint still runs
    advance = _run(plan, "lint")
    assert [d.step_id for d in advance.dispatch] == ["ship"]
    done = _run(plan, "ship")
    assert done.ended is not None and done.ended.status == "succeeded"
    assert done.ended.exit_code == 0
    assert plan.steps["alert"].status == "skipped"  # on_failure never ran
    assert plan.steps["build"].duration == 2.0


def test_a_failed_attempt_is_retried_with_backoff_then_the_run_fails_into_on_failure() -> None:
    plan = _started()
    retry = _run(plan, "build", AttemptResult("failed", {"exit_code": 3}, "exit code 3"))
    assert [(d.step_id, d.attempt, d.countdown) for d in retry.dispatch] == [("build", 2, 5.0)]
    assert plan.steps["build"].status == "queued"
    assert plan.steps["build"].history[0]["status"] == "failed"
    # a late duplicate report of attempt 1 changes nothing
    assert not plan.finish("build", 1, OK, NOW).changed
    failed = _run(plan, "build", AttemptResult("failed", {"exit_code": 3}, "exit code 3"))
    assert [d.step_id for d in failed.dispatch] == ["alert"]
    assert plan.phase == "on_failure"
    assert plan.steps["unit"].status == "skipped"
    assert failed.ended is None
    end = _run(plan, "alert")
    assert end.ended is not None
    assert (end.ended.status, end.ended.exit_code, end.ended.failed_step) == ("failed", 3, "build")
    assert end.ended.error == "step build failed (exit code 3)"


def test_backoff_grows_and_is_capped() -> None:
    step = StepSpec(id="s", kind="run", retries=5, backoff=2, backoff_factor=3, max_backoff=10)
    assert [step.retry_delay(n) for n in (1, 2, 3)] == [2.0, 6.0, 10.0]


def test_a_failing_sibling_stops_the_running_one_and_its_late_result_changes_nothing() -> None:
    plan = _started()
    _run(plan, "build")
    assert plan.claim("lint", 1, host="h", pid=2, now=NOW) == "claimed"
    failed = _run(plan, "unit", AttemptResult("timed_out", {"exit_code": 124}, "timed out"))
    assert failed.stop == ["lint"]
    assert plan.steps["lint"].stop_requested
    assert plan.steps["ship"].status == "skipped"
    end = _run(plan, "alert")
    assert end.ended is not None and end.ended.status == "timed_out"
    assert end.ended.exit_code == 124
    late = plan.finish("lint", 1, AttemptResult("cancelled", message="stopped"), NOW)
    assert late.ended is None and not late.dispatch
    assert plan.steps["lint"].status == "cancelled"


def test_a_stopped_step_is_not_retried() -> None:
    spec = WorkstreamSpec(id="WS", stages=((_step("a"), _step("b", retries=3)),))
    plan = _started(spec)
    plan.claim("b", 1, host="h", pid=1, now=NOW)
    _run(plan, "a", AttemptResult("failed", message="boom"))
    after = plan.finish("b", 1, AttemptResult("failed", message="killed"), NOW)
    assert not after.dispatch
    assert plan.steps["b"].status == "failed"


def test_claims_skip_stale_messages_and_recognise_the_same_holder() -> None:
    plan = _started()
    assert plan.claim("build", 2, host="h", pid=1, now=NOW) == "skip"  # no such attempt yet
    assert plan.claim("build", 1, host="h", pid=1, now=NOW) == "claimed"
    assert plan.claim("build", 1, host="h", pid=1, now=NOW) == "again"
    assert plan.claim("build", 1, host="other", pid=9, now=NOW) == "held"
    assert plan.claim("unit", 1, host="h", pid=1, now=NOW) == "skip"  # not sent yet
    pending = Plan(_spec())
    assert pending.claim("build", 1, host="h", pid=1, now=NOW) == "skip"


def test_cancel_ends_the_run_stops_the_running_and_drops_the_rest() -> None:
    plan = _started()
    _run(plan, "build")
    plan.claim("unit", 1, host="h", pid=1, now=NOW)
    advance = plan.cancel("by hand", NOW)
    assert advance is not None and advance.ended is not None
    assert advance.ended.status == "cancelled"
    assert advance.stop == ["unit"]
    assert plan.steps["lint"].status == "cancelled"  # sent, never started
    assert plan.steps["ship"].status == "skipped"
    assert plan.steps["alert"].status == "skipped"  # no on_failure on cancel
    assert plan.claim("lint", 1, host="h", pid=1, now=NOW) == "skip"
    assert plan.cancel("again", NOW) is None


def test_a_waiting_step_is_completed_by_its_sub_run_and_cancelling_cancels_the_child() -> None:
    spec = WorkstreamSpec(id="WS", stages=((StepSpec(id="sub", kind="workstream"),),
                                           (_step("after"),)))
    plan = _started(spec)
    plan.claim("sub", 1, host="h", pid=1, now=NOW)
    assert plan.wait_for("sub", 1, "child-run")
    assert plan.steps["sub"].status == "waiting"
    advance = plan.cancel("stop", NOW)
    assert advance is not None and advance.stop_children == ["child-run"]
    again = _started(spec)
    again.claim("sub", 1, host="h", pid=1, now=NOW)
    again.wait_for("sub", 1, "child-run")
    assert [d.step_id for d in again.finish("sub", 1, OK, NOW).dispatch] == ["after"]


def test_a_run_timeout_ends_main_and_runs_on_failure() -> None:
    plan = _started(_spec(timeout=60))
    plan.claim("build", 1, host="h", pid=1, now=NOW)
    advance = plan.time_out(NOW)
    assert advance is not None and [d.step_id for d in advance.dispatch] == ["alert"]
    assert plan.outcome == "timed_out"
    assert plan.time_out(NOW) is None  # once
    end = _run(plan, "alert")
    assert end.ended is not None and end.ended.status == "timed_out"


def test_an_on_failure_step_failing_still_ends_the_run_failed_after_the_rest() -> None:
    spec = WorkstreamSpec(id="WS", stages=((_step("a"),),),
                          on_failure=((_step("x"),), (_step("y"),)))
    plan = _started(spec)
    _run(plan, "a", AttemptResult("failed", {"exit_code": 7}))
    advance = _run(plan, "x", AttemptResult("failed"))
    assert [d.step_id for d in advance.dispatch] == ["y"]
    end = _run(plan, "y")
    assert end.ended is not None and (end.ended.status, end.ended.exit_code) == ("failed", 7)


def test_state_round_trips_through_json() -> None:
    plan = _started()
    _run(plan, "build")
    again = Plan(plan.spec, plan.dump_steps(), phase=plan.phase)
    assert again.steps == plan.steps
    assert WorkstreamSpec.from_dict(plan.spec.to_dict()) == plan.spec
    context = again.template_steps()
    assert context["build"]["exit_code"] == 0 and context["build"]["status"] == "succeeded"
    assert context["ship"]["status"] == "pending"
