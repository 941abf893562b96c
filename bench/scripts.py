"""Script execution overhead: bare ``subprocess.run`` vs ``CLIWrapper.wrap`` (and, later, Celery).

    python bench/scripts.py [N]

The goal is < 5 ms of wrapper overhead per call. Calls alternate between the two ways so that
drift of a shared machine hits both alike; compare figures only within one run.
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

from pitstop.cliwrapper import CLIWrapper

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
        wrapper = CLIWrapper(allowed_roots=[tmp])
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


def _print_wrapper(stats: dict[str, Any]) -> None:
    print(f"script execution, {stats['n']} calls of a trivial Python script")
    for label, key in (("bare subprocess.run", "bare"), ("CLIWrapper.wrap", "wrapper")):
        row = stats[key]
        print(f"  {label:<22} mean {row['mean_ms']:7.2f} ms   median {row['median_ms']:7.2f} ms")
    verdict = "met" if stats["goal_met"] else "NOT met"
    print(f"  overhead {stats['overhead_ms']:+.2f} ms median ({stats['overhead_mean_ms']:+.2f} ms "
          f"mean), ratio {stats['ratio']:.3f}; goal < {stats['goal_ms']:.0f} ms: {verdict}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 200
    stats = bench_wrapper(n)
    _print_wrapper(stats)
    return 0 if stats["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
