"""Run every benchmark, the scale curves and the fault tests; write bench/results.json and render
docs/benchmarks.md with its plots.

    python bench/run_all.py [--quick] [--only NAME,...] [--skip-faults] [--render-only]

Each benchmark in bench/ runs as its own command (the one the report names), on its own private
redis-server and workers, one after the other (they share the machine: run this when it is
quiet). Their printed figures are kept verbatim and the headline ones parsed into
``{name, value, baseline, baseline_value, ratio}``: every figure is a ratio to a baseline measured
in the same run. ``bench/curves.py`` adds the scale curves; ``pytest tests/faults`` (short mode)
adds the fault-injection figures (``PITSTOP_FAULTS_REPORT``). ``--render-only`` re-renders the
report from an existing results.json. Plots need matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results.json"
REPORT = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "benchmarks"

Figure = dict[str, Any]
NUM = r"([-\d.,]+)"


def _f(text: str) -> float:
    return float(text.replace(",", ""))


def figure(name: str, value: float, unit: str, baseline: str, baseline_value: float,
           better: str = "lower", goal: str = "") -> Figure:
    ratio = value / baseline_value if baseline_value else float("nan")
    return {"name": name, "value": round(value, 4), "unit": unit, "baseline": baseline,
            "baseline_value": round(baseline_value, 4), "ratio": round(ratio, 4),
            "better": better, "goal": goal}


def percentiles(what: str, unit: str, ours: dict[str, float], baseline_name: str,
                baseline: dict[str, float]) -> Figure:
    return {"what": what, "unit": unit, "ours": ours, "baseline_name": baseline_name,
            "baseline": baseline}


# --- parsers: the headline figures of each benchmark's output ------------------------------------

def parse_patterns(out: str) -> dict[str, Any]:
    figures = []
    for rules, _build, warm, _cold, naive in re.findall(
            rf"^\s*(\d+)\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+", out, re.M):
        figures.append(figure(f"match one event, {int(rules):,} rules", _f(warm), "us/event",
                              "naive fnmatch loop", _f(naive), goal="< 10 us and >= 300x at 10,000"))
    return {"figures": figures}


def parse_bus(out: str) -> dict[str, Any]:
    figures, pcts = [], []
    rows = dict((name.strip(), (raw, bus)) for name, raw, bus, _ in re.findall(
        rf"^(\S.*?)\s{{2,}}{NUM}\s+{NUM}\s+{NUM}\s*$", out, re.M))
    for name, better in (("publish->receive p50 (us)", "lower"), ("publish->receive p99 (us)", "lower"),
                         ("publish one at a time (calls/s)", "higher"),
                         ("group drain, batches of 100 (msg/s)", "higher")):
        if name in rows:
            raw, bus = rows[name]
            unit = name[name.index("(") + 1:-1]
            figures.append(figure(f"bus {name.split(' (')[0]}", _f(bus), unit, "raw redis-py",
                                  _f(raw), better, "p50 within 1.5x" if "p50" in name else ""))
    if "publish->receive p50 (us)" in rows and "publish->receive p99 (us)" in rows:
        p50, p99 = rows["publish->receive p50 (us)"], rows["publish->receive p99 (us)"]
        pcts.append(percentiles("bus publish -> subscriber", "us",
                                {"p50": _f(p50[1]), "p99": _f(p99[1])}, "raw PUBLISH",
                                {"p50": _f(p50[0]), "p99": _f(p99[0])}))
    return {"figures": figures, "percentiles": pcts}


def parse_triage(out: str) -> dict[str, Any]:
    ours = re.search(rf"^triage \(classify \+ group\)\s+{NUM}\s+{NUM}", out, re.M)
    base = re.search(rf"^re\.search per line\s+{NUM}\s+{NUM}", out, re.M)
    if not (ours and base):
        return {"figures": []}
    return {"figures": [figure("triage throughput", _f(ours.group(2)), "MB/s",
                               "re.search per line, same text", _f(base.group(2)), "higher",
                               ">= 20 MB/s, within 3x of re.search")]}


def parse_scripts(out: str) -> dict[str, Any]:
    def median(label: str) -> float | None:
        found = re.search(rf"{re.escape(label)}\s+mean\s+{NUM} ms\s+median\s+{NUM} ms", out)
        return _f(found.group(2)) if found else None

    figures = []
    wrap, bare = median("CLIWrapper.wrap"), median("bare subprocess.run")
    if wrap and bare:
        figures.append(figure("CLIWrapper.wrap, median", wrap, "ms", "bare subprocess.run", bare,
                              goal="< 5 ms overhead"))
    ours, raw = median("pitstop run --wait"), median("raw Celery round trip")
    if ours and raw:
        figures.append(figure("pitstop run --wait end to end, median", ours, "ms",
                              "raw Celery apply_async().get()", raw, goal="< 1.5x"))
    return {"figures": figures}


def parse_router(out: str) -> dict[str, Any]:
    figures, pcts = [], []
    ours = re.search(rf"pitstop\s+p50\s+{NUM} ms\s+p99\s+{NUM} ms", out)
    raw = re.search(rf"raw\s+p50\s+{NUM} ms\s+p99\s+{NUM} ms", out)
    if ours and raw:
        figures.append(figure("emit -> first step started, p50", _f(ours.group(1)), "ms",
                              "raw apply_async -> task", _f(raw.group(1)), goal="<= 2x"))
        figures.append(figure("emit -> first step started, p99", _f(ours.group(2)), "ms",
                              "raw apply_async -> task", _f(raw.group(2)), goal="<= 3x"))
        pcts.append(percentiles("emit -> first step started", "ms",
                                {"p50": _f(ours.group(1)), "p99": _f(ours.group(2))},
                                "raw apply_async -> task",
                                {"p50": _f(raw.group(1)), "p99": _f(raw.group(2))}))
    thr = re.search(rf"pitstop\s+{NUM}/s\s+raw Celery\s+{NUM}/s", out)
    if thr:
        figures.append(figure("events -> one-step workstreams completed", _f(thr.group(1)), "/s",
                              "raw Celery no-op tasks", _f(thr.group(2)), "higher", ">= 50%"))
    return {"figures": figures, "percentiles": pcts}


def _alert_line(out: str, label: str) -> tuple[float, float] | None:
    found = re.search(rf"{re.escape(label)}\s+n=\d+\s+p50\s+{NUM} ms\s+p99\s+{NUM} ms", out)
    return (_f(found.group(1)), _f(found.group(2))) if found else None


def parse_alerts(out: str) -> dict[str, Any]:
    figures, pcts = [], []
    burst, bare = _alert_line(out, "(c) alert burst: event -> Slack"), _alert_line(out, "(b) bare POST burst")
    celery = _alert_line(out, "(e) plain Celery POST task burst")
    one, one_bare = _alert_line(out, "(d) one alert: event -> Slack"), _alert_line(out, "one bare POST")
    if burst and bare:
        figures.append(figure("alert burst event -> Slack, p50", burst[0], "ms", "bare POST burst",
                              bare[0], goal="p99 < 2 s; p50 <= 5x (bare + bus)"))
        pcts.append(percentiles("alert burst: event -> Slack", "ms",
                                {"p50": burst[0], "p99": burst[1]}, "bare POST burst",
                                {"p50": bare[0], "p99": bare[1]}))
    if burst and celery:
        figures.append(figure("alert burst event -> Slack, p50", burst[0], "ms",
                              "plain Celery task that only POSTs", celery[0]))
    if one and one_bare:
        figures.append(figure("one alert event -> Slack, p50", one[0], "ms", "one bare POST",
                              one_bare[0]))
    return {"figures": figures, "percentiles": pcts}


def parse_patches(out: str) -> dict[str, Any]:
    wall = re.search(rf"validation wall time\s+{NUM} s", out)
    slowest = re.search(rf"slowest check\s+{NUM} s", out)
    total = re.search(rf"sum of checks\s+{NUM} s", out)
    figures = []
    if wall and slowest:
        figures.append(figure("patch validation wall time", _f(wall.group(1)), "s",
                              "slowest check alone", _f(slowest.group(1)),
                              goal="<= 1.2x slowest + 1 s"))
    if wall and total:
        figures.append(figure("patch validation wall time", _f(wall.group(1)), "s",
                              "the checks one after the other", _f(total.group(1))))
    return {"figures": figures}


def parse_flower(out: str) -> dict[str, Any]:
    off = re.search(rf"task events off \(baseline\)\s+{NUM} tasks/s", out)
    on = re.search(rf"task events on \(-E\)\s+{NUM} tasks/s", out)
    if not (off and on):
        return {"figures": []}
    return {"figures": [figure("no-op tasks with task events on (Flower)", _f(on.group(1)),
                               "tasks/s", "task events off", _f(off.group(1)), "higher")]}


def parse_memory(out: str) -> dict[str, Any]:
    runs = re.search(rf"-> {NUM} MiB per 1,000 runs", out)
    events = re.search(rf"-> {NUM} MiB per 1,000 events", out)
    figures = []
    if runs:
        figures.append(figure("Redis memory per 1,000 script runs", _f(runs.group(1)), "MiB",
                              "the server before (delta)", _f(runs.group(1))))
    if events:
        figures.append(figure("Redis memory per 1,000 events", _f(events.group(1)), "MiB",
                              "the server before (delta)", _f(events.group(1))))
    return {"figures": figures, "absolute": True}


def parse_web(out: str) -> dict[str, Any]:
    base = re.search(rf"baseline GET /healthz: p50 {NUM} ms", out)
    figures, pcts = [], []
    if base:
        for page, p50, _p95, _ratio in re.findall(rf"^(\S.*?)\s{{2,}}{NUM}\s+{NUM}\s+{NUM}\s*$",
                                                   out, re.M):
            figures.append(figure(f"web page: {page.strip()}, p50", _f(p50), "ms",
                                  "GET /healthz", _f(base.group(1)), goal="< 300 ms"))
    raw = re.search(rf"raw XREAD reader:.*?p50 {NUM} ms, p95 {NUM} ms", out)
    sse = re.search(rf"web feed \(SSE\):.*?p50 {NUM} ms, p95 {NUM} ms", out)
    if raw and sse:
        figures.append(figure("live feed publish -> browser, p50", _f(sse.group(1)), "ms",
                              "raw XREAD reader", _f(raw.group(1)), goal="p95 < 1 s"))
        pcts.append(percentiles("live feed publish -> browser (SSE)", "ms",
                                {"p50": _f(sse.group(1)), "p95": _f(sse.group(2))},
                                "raw XREAD reader", {"p50": _f(raw.group(1)), "p95": _f(raw.group(2))}))
    return {"figures": figures, "percentiles": pcts}


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    argv: tuple[str, ...]
    quick: tuple[str, ...]
    parse: Callable[[str], dict[str, Any]]
    timeout: float = 1800


BENCHES = [
    Bench("patterns", "Pattern index vs a naive loop", ("bench/patterns.py",),
          ("bench/patterns.py", "--rules", "10,1000", "--events", "2000"), parse_patterns),
    Bench("bus", "Event bus vs raw redis-py", ("bench/bus.py",),
          ("bench/bus.py", "--n", "200", "--throughput-n", "2000"), parse_bus),
    Bench("router", "Router: matching, emit -> first step, throughput", ("bench/router.py",),
          ("bench/router.py",), parse_router),
    Bench("scripts", "Script execution", ("bench/scripts.py",), ("bench/scripts.py", "10"),
          parse_scripts),
    Bench("triage", "Triage throughput", ("bench/triage.py",),
          ("bench/triage.py", "--mb", "5"), parse_triage),
    Bench("alerts", "Alerting latency", ("bench/alerts.py",),
          ("bench/alerts.py", "--n", "50"), parse_alerts),
    Bench("patches", "Patch validation", ("bench/patches.py",), ("bench/patches.py", "1"),
          parse_patches),
    Bench("flower_events", "Cost of Celery task events", ("bench/flower_events.py",),
          ("bench/flower_events.py", "300", "1"), parse_flower),
    Bench("redis_memory", "Redis memory", ("bench/redis_memory.py",),
          ("bench/redis_memory.py", "50", "1000"), parse_memory),
    Bench("web", "Web view", ("bench/web.py",),
          ("bench/web.py", "--runs", "1000", "--events", "10000", "--seconds", "2"), parse_web),
]


def run_bench(bench: Bench, quick: bool) -> dict[str, Any]:
    argv = bench.quick if quick else bench.argv
    command = "python " + " ".join(argv)
    print(f"== {command}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=bench.timeout, check=False)
        output, code = done.stdout + (f"\n[stderr]\n{done.stderr[-3000:]}" if done.returncode
                                      and done.stderr else ""), done.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"timed out after {bench.timeout:g}s\n{exc.stdout or ''}", -1
    seconds = time.monotonic() - started
    parsed = bench.parse(output)
    print(f"   {len(parsed.get('figures', []))} figures in {seconds:.0f}s (exit {code})", flush=True)
    return {"name": bench.name, "title": bench.title, "command": command, "returncode": code,
            "seconds": round(seconds, 1), "output": output.strip(), **parsed}


def run_faults(long: bool = False) -> dict[str, Any]:
    mode = {"PITSTOP_FAULTS_LONG": "1"} if long else {}
    command = ("PITSTOP_FAULTS_LONG=1 " if long else "") + \
        "PITSTOP_FAULTS_REPORT=<file> python -m pytest -q tests/faults"
    print(f"== {command}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/faults"], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **mode, "PITSTOP_FAULTS_REPORT": str(report)},
                              timeout=7200, check=False)
        records = [json.loads(line) for line in report.read_text().splitlines()] \
            if report.exists() else []
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"   {summary}", flush=True)
    return {"command": ("PITSTOP_FAULTS_LONG=1 " if long else "") + "python -m pytest "
                       f"tests/faults ({'long' if long else 'short'} mode; figures via "
                       "PITSTOP_FAULTS_REPORT)", "returncode": done.returncode,
            "failures": [line for line in done.stdout.splitlines()
                         if line.startswith(("FAILED", "ERROR"))],
            "summary": summary, "seconds": round(time.monotonic() - started, 1),
            "records": records}


def run_sweep(long: bool = False) -> dict[str, Any]:
    from tests.fuzz.sweep import EXAMPLES, LONG_EXAMPLES

    command = ("PITSTOP_FAULTS_LONG=1 " if long else "") + "python -m pytest tests/fuzz"
    print(f"== {command}", flush=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:logging", "tests/fuzz"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **({"PITSTOP_FAULTS_LONG": "1"} if long
                                                           else {})},
                          timeout=7200, check=False)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"   {summary}", flush=True)
    from tests.fuzz import test_configs_sweep, test_entry_points_sweep

    targets = sum(1 for module in (test_configs_sweep, test_entry_points_sweep)
                  for name in dir(module) if name.startswith("test_")
                  and hasattr(getattr(module, name), "hypothesis"))
    per_target = LONG_EXAMPLES if long else EXAMPLES
    return {"command": command, "returncode": done.returncode, "summary": summary,
            "seconds": round(time.monotonic() - started, 1), "generated_targets": targets,
            "examples_per_target": per_target, "generated_inputs_max": targets * per_target,
            "failures": [line for line in done.stdout.splitlines()
                         if line.startswith(("FAILED", "ERROR"))]}


def run_soak(minutes: float) -> dict[str, Any]:
    argv = ["bench/soak.py", "--minutes", f"{minutes:g}",
            "--sample-every", str(max(5, round(minutes * 60 / 60)))]
    print(f"== python {' '.join(argv)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "soak.json"
        done = subprocess.run([sys.executable, *argv, "--json", str(out)], cwd=ROOT,
                              capture_output=True, text=True, timeout=minutes * 60 + 900,
                              check=False)
        soak: dict[str, Any] = json.loads(out.read_text()) if out.exists() else \
            {"error": done.stdout[-2000:] + done.stderr[-2000:]}
    soak["command"] = "python " + " ".join(argv)
    soak["returncode"] = done.returncode
    return soak


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load],
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                     capture_output=True, text=True, check=False).stdout.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", help="comma-separated benchmark names (and 'curves', 'faults', "
                        "'soak' with --soak-minutes)")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--faults-long", action="store_true",
                        help="the fault tests and the bad-input sweep at the issue's sizes "
                             "(PITSTOP_FAULTS_LONG=1)")
    parser.add_argument("--sweep", action="store_true",
                        help="also run the bad-input sweep (tests/fuzz) and report it")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--soak-minutes", type=float, default=0.0,
                        help="also run bench/soak.py this long (the full soak is 20 minutes)")
    args = parser.parse_args(argv)
    from bench.report import render

    if args.render_only:
        render(json.loads(RESULTS.read_text()), REPORT, PLOTS)
        return 0
    only = set(args.only.split(",")) if args.only else None
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "benchmarks": []}
    if RESULTS.exists() and only:
        # A partial run updates the previous results; the header keeps the full run's machine
        # facts and lists each later partial run with its own.
        previous = json.loads(RESULTS.read_text())
        part = {**results["machine"], "only": sorted(only)}
        results = {**previous, "quick": previous.get("quick", False),
                   "partial_runs": [*previous.get("partial_runs", []), part]}
    done_names = set()
    for bench in BENCHES:
        if only is None or bench.name in only:
            entry = run_bench(bench, args.quick)
            results["benchmarks"] = [b for b in results.get("benchmarks", [])
                                     if b["name"] != bench.name] + [entry]
            done_names.add(bench.name)
    order = [b.name for b in BENCHES]
    results["benchmarks"].sort(key=lambda b: order.index(b["name"]) if b["name"] in order else 99)
    if only is None or "curves" in only:
        from bench import curves

        print("== python bench/curves.py", flush=True)
        started = time.monotonic()
        results["curves"] = {**curves.run(quick=args.quick), "command": "python bench/curves.py",
                             "seconds": round(time.monotonic() - started, 1)}
    if not args.skip_faults and (only is None or "faults" in only):
        results["faults"] = run_faults(long=args.faults_long)
    if args.sweep:
        results["sweep"] = run_sweep(long=args.faults_long)
    if args.soak_minutes:
        results["soak"] = run_soak(args.soak_minutes)
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    render(results, REPORT, PLOTS)
    print(f"wrote {RESULTS.relative_to(ROOT)} and {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
