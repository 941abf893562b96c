"""Script execution overhead, measured against baselines in the same run.

    python bench/scripts.py [N]

1. ``CLIWrapper.wrap`` vs bare ``subprocess.run`` of the same trivial script.
   Goal: < 5 ms overhead per call.
2. ``pitstop run --wait`` end to end (enqueue, a real worker runs it, output streamed back, run
   record final) vs a raw Celery round trip (``apply_async(...).get()`` of a task that runs the
   same script with ``subprocess.run``), both through one private redis-server and real workers.
   Goal: under 1.5x the raw round trip. The in-process path is timed (what ``pitstop run`` does
   after its interpreter has started); one timing of the whole CLI process is printed for scale.

Calls alternate between the ways compared so that drift of a shared machine hits both alike.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from bench import _harness
from pitstop.scripts.cliwrapper import CLIWrapper

GOAL_MS = 5.0
TRIVIAL_SCRIPT = "x = 1\n"


def _summary(samples: list[float]) -> dict[str, float]:
    return {"mean_ms": statistics.fmean(samples) * 1000,
            "median_ms": statistics.median(samples) * 1000}


def bench_wrapper(n: int = 200) -> dict[str, Any]:
    """Time ``n`` bare runs and ``n`` wrapped runs of a trivial Python script (no bus)."""
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-") as tmp:
        script = Path(tmp, "trivial.py")
        script.write_text(TRIVIAL_SCRIPT)
        wrapper = CLIWrapper(allowed_roots=[tmp], project=False)  # the wrapper alone
        bare: list[float] = []
        wrapped: list[float] = []
        for _ in range(3):  # warm the page cache and imports for both
            subprocess.run([sys.executable, str(script)], check=True)
            wrapper.wrap(script)
        for _ in range(n):
            start = time.perf_counter()
            subprocess.run([sys.executable, str(script)], check=True)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = wrapper.wrap(script)
            wrapped.append(time.perf_counter() - start)
            assert result.succeeded, result
    bare_s, wrapped_s = _summary(bare), _summary(wrapped)
    overhead_ms = wrapped_s["median_ms"] - bare_s["median_ms"]
    return {
        "n": n,
        "bare": bare_s,
        "wrapper": wrapped_s,
        "overhead_ms": overhead_ms,
        "overhead_mean_ms": wrapped_s["mean_ms"] - bare_s["mean_ms"],
        "ratio": wrapped_s["median_ms"] / bare_s["median_ms"],
        "goal_ms": GOAL_MS,
        "goal_met": overhead_ms < GOAL_MS,
    }


def _print_timings(stats: dict[str, Any], *rows: tuple[str, str]) -> str:
    """Print each ``(label, key)`` row of ``stats``'s timings; the goal's verdict."""
    for label, key in rows:
        row = stats[key]
        print(f"  {label:<22} mean {row['mean_ms']:7.2f} ms   median {row['median_ms']:7.2f} ms")
    return "met" if stats["goal_met"] else "NOT met"


def _print_wrapper(stats: dict[str, Any]) -> None:
    print(f"script execution, {stats['n']} calls of a trivial Python script")
    verdict = _print_timings(stats, ("bare subprocess.run", "bare"), ("CLIWrapper.wrap", "wrapper"))
    print(f"  overhead {stats['overhead_ms']:+.2f} ms median ({stats['overhead_mean_ms']:+.2f} ms "
          f"mean), ratio {stats['ratio']:.3f}; goal < {stats['goal_ms']:.0f} ms: {verdict}")


E2E_GOAL_RATIO = 1.5


def bench_end_to_end(n: int = 50) -> dict[str, Any]:
    """Time ``n`` raw Celery round trips and ``n`` ``pitstop run --wait`` paths, alternating."""
    import os

    from pitstop.cli.common import Context
    from pitstop.cli.follow import follow_run
    from pitstop.cli.runs import enqueue_script

    with tempfile.TemporaryDirectory(prefix="pitstop-bench-") as tmp:
        home = Path(tmp)
        (home / "scripts").mkdir()
        script = home / "scripts" / "trivial.py"
        script.write_text(TRIVIAL_SCRIPT)
        with _harness.redis_server(home / "redis") as url:
            env = _harness.worker_env(PITSTOP_REDIS_URL=url, BENCH_REDIS_URL=url,
                                      PITSTOP_STATE_DIR=str(home / ".state"),
                                      PITSTOP_CONFIG_DIR=str(home),
                                      PITSTOP_ALLOWED_ROOTS=str(home / "scripts"))
            with _harness.Processes(env) as workers:
                workers.start(_harness.pitstop_worker("-Q", "bench", "-c", "1"),
                              home / "pitstop.log")
                workers.start(_harness.celery_worker("bench._raw_celery", "-Q", "bench-raw",
                                                     "-c", "1", "-E", "-l", "INFO",
                                                     "--without-mingle", "--without-gossip"),
                              home / "raw.log")
                os.environ.update({k: env[k] for k in ("PITSTOP_REDIS_URL", "PITSTOP_STATE_DIR",
                                                       "PITSTOP_CONFIG_DIR", "PITSTOP_ALLOWED_ROOTS",
                                                       "BENCH_REDIS_URL")})
                from bench._raw_celery import app as raw_app

                ctx = Context()
                raw: list[float] = []
                ours: list[float] = []
                for index in range(n + 3):
                    start = time.perf_counter()
                    reply = raw_app.send_task("bench.run_subprocess",
                                              args=[[sys.executable, str(script)]],
                                              queue="bench-raw").get(timeout=30)
                    raw_time = time.perf_counter() - start
                    assert reply["exit_code"] == 0, reply
                    start = time.perf_counter()
                    run = enqueue_script(ctx, str(script), [], queue="bench")
                    final = follow_run(ctx, run.run_id)
                    our_time = time.perf_counter() - start
                    assert final.status == "succeeded", final
                    if index >= 3:  # the first calls warm imports and connections
                        raw.append(raw_time)
                        ours.append(our_time)
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pitstop", "run", str(script), "--queue",
                                "bench", "--wait"], env=env, check=True, capture_output=True)
                cli_process = time.perf_counter() - start
    raw_s, ours_s = _summary(raw), _summary(ours)
    ratio = ours_s["median_ms"] / raw_s["median_ms"]
    return {"n": n, "raw": raw_s, "pitstop": ours_s, "ratio": ratio,
            "cli_process_ms": cli_process * 1000, "goal_ratio": E2E_GOAL_RATIO,
            "goal_met": ratio < E2E_GOAL_RATIO}


def _print_end_to_end(stats: dict[str, Any]) -> None:
    print(f"\nend to end through a real worker, {stats['n']} runs of the same script")
    verdict = _print_timings(stats, ("raw Celery round trip", "raw"),
                             ("pitstop run --wait", "pitstop"))
    print(f"  ratio {stats['ratio']:.3f} (median); goal < {stats['goal_ratio']}x: {verdict}")
    print(f"  (one whole `pitstop run --wait` CLI process, interpreter start-up included: "
          f"{stats['cli_process_ms']:.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 200
    stats = bench_wrapper(n)
    _print_wrapper(stats)
    e2e = bench_end_to_end(max(10, n // 4))
    _print_end_to_end(e2e)
    return 0 if stats["goal_met"] and e2e["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
