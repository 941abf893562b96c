"""docs/benchmarks.md and its plots from bench/results.json (``bench/run_all.py`` calls
:func:`render`; ``python bench/run_all.py --render-only`` re-renders)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def _ratio(fig: dict[str, Any]) -> str:
    ratio = fig.get("ratio")
    if not isinstance(ratio, float | int) or (isinstance(ratio, float) and math.isnan(ratio)):
        return "-"
    return f"{ratio:.2f}x"


# --- plots ------------------------------------------------------------------------------------------

def _plots(results: dict[str, Any], directory: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def save(fig: Any, name: str) -> None:
        path = directory / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made[name] = f"{directory.name}/{path.name}"

    curves = results.get("curves") or {}
    if curves.get("matching"):
        points = curves["matching"]
        fig, ax = plt.subplots(figsize=(6.4, 4))
        rules = [p["rules"] for p in points]
        ax.loglog(rules, [p["index_us"] for p in points], "o-", label="pitstop PatternIndex (warm)")
        ax.loglog(rules, [p["index_cold_us"] for p in points], "o:", label="PatternIndex (cold types)")
        ax.loglog(rules, [p["naive_us"] for p in points], "s--", label="baseline: fnmatch loop")
        ax.set_xlabel("rules")
        ax.set_ylabel("µs per event")
        ax.set_title("Matching cost against rule count")
        ax.grid(True, which="both", alpha=.3)
        ax.legend()
        save(fig, "matching")
    if curves.get("throughput"):
        points = curves["throughput"]
        fig, ax = plt.subplots(figsize=(6.4, 4))
        procs = [p["processes"] for p in points]
        ax.plot(procs, [p["ours_per_s"] for p in points], "o-",
                label="pitstop: event -> one-step workstream done")
        ax.plot(procs, [p["raw_per_s"] for p in points], "s--", label="baseline: raw Celery no-op task")
        ax.set_xlabel("worker processes (-c), one worker, 2 CPUs")
        ax.set_ylabel("per second")
        ax.set_xticks(procs)
        ax.set_title("End-to-end throughput against worker processes")
        ax.grid(True, alpha=.3)
        ax.legend()
        save(fig, "throughput")
    if curves.get("bus_latency"):
        points = curves["bus_latency"]
        fig, ax = plt.subplots(figsize=(6.4, 4))
        lengths = [max(1, p["length"]) for p in points]
        for key, style, label in (("group_bus_p50_us", "o-", "bus -> consumer group, p50"),
                                  ("group_bus_p99_us", "o:", "bus -> consumer group, p99"),
                                  ("group_raw_p50_us", "s--", "baseline XADD -> XREADGROUP, p50"),
                                  ("group_raw_p99_us", "s:", "baseline XADD -> XREADGROUP, p99"),
                                  ("live_bus_p50_us", "^-", "bus -> live subscriber, p50"),
                                  ("live_raw_p50_us", "v--", "baseline PUBLISH, p50")):
            ax.plot(lengths, [p[key] for p in points], style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entries already in the stream (0 plotted at 1)")
        ax.set_ylabel("latency, µs")
        ax.set_title("Bus latency against stream length")
        ax.grid(True, which="both", alpha=.3)
        ax.legend(fontsize=7)
        save(fig, "bus_latency")
    pcts = [p for bench in results.get("benchmarks", []) for p in bench.get("percentiles", [])]
    if pcts:
        fig, axes = plt.subplots(1, len(pcts), figsize=(3.2 * len(pcts), 3.8))
        axes = axes if len(pcts) > 1 else [axes]
        for ax, entry in zip(axes, pcts, strict=True):
            keys = list(entry["ours"])
            xs = range(len(keys))
            ax.bar([x - .2 for x in xs], [entry["ours"][k] for k in keys], .4, label="pitstop")
            ax.bar([x + .2 for x in xs], [entry["baseline"].get(k, 0) for k in keys], .4,
                   label=entry["baseline_name"])
            ax.set_xticks(list(xs), keys)
            ax.set_ylabel(entry["unit"])
            ax.set_title(entry["what"], fontsize=8)
            ax.legend(fontsize=6)
        fig.suptitle("Latency percentiles against their baselines", fontsize=10)
        save(fig, "latency_percentiles")
    soak = results.get("soak") or {}
    if soak.get("samples"):
        samples = soak["samples"]
        minutes = [s["t"] / 60 for s in samples]
        fig, left = plt.subplots(figsize=(6.4, 4))
        left.plot(minutes, [s["used_memory"] / 2**20 for s in samples], "o-",
                  label="Redis used_memory (MiB)")
        left.plot(minutes, [s["keys"]["other"] / 1000 for s in samples], "s-",
                  label="keys not retained history (thousands)")
        left.plot(minutes, [s["keys"]["retained"] / 1000 for s in samples], "s:",
                  label="retained run history keys (thousands)")
        left.set_xlabel("minutes")
        right = left.twinx()
        for n in range(len(samples[0]["rss_kib"])):
            right.plot(minutes, [s["rss_kib"][n] / 1024 for s in samples], "--",
                       label=f"worker {n} RSS (MiB, right)")
        right.set_ylim(bottom=0)
        lines = left.get_legend_handles_labels()
        more = right.get_legend_handles_labels()
        left.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
        left.set_title(f"Soak at half capacity ({soak.get('rate_per_s')}/s)")
        left.grid(True, alpha=.3)
        save(fig, "soak")
    faults = results.get("faults", {}).get("records", [])
    bars = _recovery_bars(faults)
    if bars:
        fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(bars) + 1.2))
        ax.barh([b[0] for b in bars], [b[1] for b in bars])
        ax.set_xlabel("seconds after the fault")
        mode = faults[0].get("mode", "short") if faults else "short"
        ax.set_title(f"Recovery after faults ({mode} mode)")
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=.3)
        save(fig, "recovery")
    return made


def _recovery_bars(records: list[dict[str, Any]]) -> list[tuple[str, float]]:
    bars: list[tuple[str, float]] = []
    for record in records:
        test = record.get("test")
        if test == "sentinel_failover":
            for key in ("promotion_s", "publish_resumed_s", "router_resumed_s", "worker_resumed_s"):
                if isinstance(record.get(key), int | float):
                    bars.append((f"sentinel: {key[:-2].replace('_', ' ')}", record[key]))
        elif test == "worker_kills" and isinstance(record.get("recovery_after_worker_kill_s"), int | float):
            bars.append(("worker SIGKILL: its runs ended", record["recovery_after_worker_kill_s"]))
        elif test == "redis_restarts" and record.get("canary_max_s") is not None:
            bars.append(("Redis restart: canary done (max)", record["canary_max_s"]))
        elif str(test).startswith("redis_kills_"):
            worst = max((r.get("router_resumed_s") or 0 for r in record.get("restarts", [])), default=0)
            bars.append((f"Redis SIGKILL ({record.get('appendfsync')}): router resumed (max)", worst))
        elif test == "beat_failover":
            for n, value in enumerate(record.get("takeover_s", []), 1):
                bars.append((f"Beat take-over #{n}", value))
    return bars


# --- markdown ---------------------------------------------------------------------------------------

def render(results: dict[str, Any], report: Path, plots_dir: Path) -> None:
    plots = _plots(results, plots_dir)
    info = results.get("machine", {})
    out: list[str] = [
        "# Benchmarks",
        "",
        "Every figure is a ratio to a baseline measured in the same run, on the same machine, at",
        "the same size. Produced by `python bench/run_all.py` (each benchmark's own command is named",
        "with its figures; `bench/results.json` holds everything, raw outputs included).",
        "",
        f"Run: {info.get('when', '?')}, commit `{info.get('commit', '?')}`, Python "
        f"{info.get('python', '?')}, {info.get('cpus', '?')} CPUs, load average before "
        f"{', '.join(str(x) for x in info.get('load_before', []))}"
        + (" — **quick mode (small sizes)**" if results.get("quick") else "") + ".",
        *[f"Updated later by a partial run: {', '.join(part.get('only', []))} at "
          f"{part.get('when', '?')}, commit `{part.get('commit', '?')}`, load average before "
          f"{', '.join(str(x) for x in part.get('load_before', []))}."
          for part in results.get("partial_runs", [])],
        "The machine is shared by several engineers working at the same time: absolute numbers move",
        "with its load; the ratios, each taken against a baseline measured alongside, are the figures",
        "to read.",
        "",
        "## All figures",
        "",
        "| benchmark | figure | pitstop | baseline | baseline value | ratio | goal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for bench in results.get("benchmarks", []):
        for fig in bench.get("figures", []):
            if bench.get("absolute"):
                out.append(f"| {bench['name']} | {fig['name']} | {_fmt(fig['value'])} {fig['unit']} "
                           f"| (absolute) | - | - | {fig.get('goal', '')} |")
                continue
            out.append(f"| {bench['name']} | {fig['name']} | {_fmt(fig['value'])} {fig['unit']} "
                       f"| {fig['baseline']} | {_fmt(fig['baseline_value'])} {fig['unit']} "
                       f"| {_ratio(fig)} ({fig.get('better', 'lower')} is better) "
                       f"| {fig.get('goal', '')} |")
    out += _curves_section(results.get("curves") or {}, plots)
    out += _percentiles_section(results, plots)
    out += _faults_section(results.get("faults") or {}, plots)
    out += _sweep_section(results.get("sweep"))
    out += _soak_section(results.get("soak"), plots)
    out += ["", "## Each benchmark's output", ""]
    for bench in results.get("benchmarks", []):
        out += [f"### {bench['title']}", "", f"`{bench['command']}` ({bench['seconds']} s, exit "
                f"{bench['returncode']})", "", "```text", bench.get("output", ""), "```", ""]
    report.write_text("\n".join(out).rstrip() + "\n")


def _curves_section(curves: dict[str, Any], plots: dict[str, str]) -> list[str]:
    if not curves:
        return []
    out = ["", "## Scale curves", "", f"`{curves.get('command', 'python bench/curves.py')}` "
           f"({curves.get('seconds', '?')} s).", ""]
    if curves.get("matching"):
        out += ["### Matching cost against rule count", "",
                "The compiled index's cost per event barely grows with the rule count; the naive loop's",
                "grows linearly.", "",
                "| rules | index µs/event (warm) | cold | baseline fnmatch loop µs/event | ratio |",
                "| --- | --- | --- | --- | --- |"]
        out += [f"| {p['rules']:,} | {_fmt(p['index_us'])} | {_fmt(p['index_cold_us'])} | "
                f"{_fmt(p['naive_us'])} | {p['ratio']:.4f}x ({p['speedup']:,.0f}x faster) |"
                for p in curves["matching"]]
        out += _img(plots, "matching")
    if curves.get("throughput"):
        out += ["### End-to-end throughput against worker processes", "",
                "Events through the router into one-step `emit` workstreams, completed per second, against",
                "raw Celery no-op tasks on a worker with the same settings and the same `-c` (2 CPUs: past",
                "2 processes the machine, not the worker, is the limit).", "",
                "| -c | pitstop /s | baseline raw Celery /s | ratio |", "| --- | --- | --- | --- |"]
        out += [f"| {p['processes']} | {_fmt(p['ours_per_s'])} | {_fmt(p['raw_per_s'])} | "
                f"{p['ratio']:.2f}x |" for p in curves["throughput"]]
        out += _img(plots, "throughput")
    if curves.get("bus_latency"):
        out += ["### Bus latency against stream length", "",
                "Publish -> a consumer group's blocking read, and publish -> a live subscriber, with that",
                "many entries already in the stream; baselines: raw `XADD` -> `XREADGROUP BLOCK` and raw",
                "`PUBLISH` at the same length.", "",
                "| entries | group p50 µs | group p99 | baseline p50 | baseline p99 | ratio p50 | "
                "live p50 | baseline PUBLISH p50 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {p['length']:,} | {_fmt(p['group_bus_p50_us'])} | {_fmt(p['group_bus_p99_us'])} | "
                f"{_fmt(p['group_raw_p50_us'])} | {_fmt(p['group_raw_p99_us'])} | {p['ratio']:.2f}x | "
                f"{_fmt(p['live_bus_p50_us'])} | {_fmt(p['live_raw_p50_us'])} |"
                for p in curves["bus_latency"]]
        out += _img(plots, "bus_latency")
    return out


def _percentiles_section(results: dict[str, Any], plots: dict[str, str]) -> list[str]:
    pcts = [(bench["command"], p) for bench in results.get("benchmarks", [])
            for p in bench.get("percentiles", [])]
    if not pcts:
        return []
    out = ["", "## Latency percentiles", "",
           "| latency | percentile | pitstop | baseline | ratio | command |",
           "| --- | --- | --- | --- | --- | --- |"]
    for command, p in pcts:
        for key, value in p["ours"].items():
            base = p["baseline"].get(key)
            ratio = f"{value / base:.2f}x" if base else "-"
            out.append(f"| {p['what']} | {key} | {_fmt(value)} {p['unit']} | {p['baseline_name']}: "
                       f"{_fmt(base)} {p['unit']} | {ratio} | `{command}` |")
    return out + _img(plots, "latency_percentiles")


FAULT_TITLES = {
    "worker_kills": "Random SIGKILLs of pool processes and a whole worker",
    "visibility_timeout": "A task outliving the visibility timeout",
    "redis_kills_always": "redis-server SIGKILLed three times, appendfsync always",
    "redis_kills_everysec": "redis-server SIGKILLed three times, appendfsync everysec",
    "redis_restarts": "Redis restarts: canary, and doctor on an idle consumer",
    "sentinel_failover": "Sentinel failover",
    "beat_failover": "Beat leader frozen, successor killed",
    "alerts_killed_midway": "Alert deliveries with the worker killed mid-stream",
    "patch_killed_mid_landing": "Patch landing with the worker killed mid-landing",
    "disk_full": ".state full (RLIMIT_FSIZE)",
}


def _faults_section(faults: dict[str, Any], plots: dict[str, str]) -> list[str]:
    if not faults:
        return []
    failures = faults.get("failures") or []
    out = ["", "## Fault injection", "", f"`{faults.get('command')}`: {faults.get('summary', '')} "
           f"({faults.get('seconds', '?')} s). What each test kills and promises: "
           "[operations.md](operations.md#what-the-fault-tests-prove). Long mode (the issue's "
           "sizes): `PITSTOP_FAULTS_LONG=1 python -m pytest tests/faults`."
           + (f" **Failed: {'; '.join(failures)}**" if failures else ""), ""]
    for record in faults.get("records", []):
        test = record.get("test", "?")
        if test == "sentinel_failover":
            out += ["### Sentinel failover", ""]
        else:
            out += [f"### {FAULT_TITLES.get(test, test)}", ""]
        out += ["| figure | value |", "| --- | --- |"]
        out += [f"| {key} | {json.dumps(value) if isinstance(value, list | dict) else value} |"
                for key, value in record.items() if key not in ("test",)]
        out.append("")
    return out + _img(plots, "recovery")


def _sweep_section(sweep: dict[str, Any] | None) -> list[str]:
    if not sweep:
        return []
    return ["", "## Bad-input sweep", "",
            f"`{sweep['command']}`: {sweep['summary']} ({sweep['seconds']} s); "
            f"{sweep['generated_targets']} generated targets (every YAML config, event payloads and "
            "stream entries, webhook and API bodies, CLI arguments, diffs, triage inputs, alert "
            f"templates) x up to {sweep['examples_per_target']:,} examples = up to "
            f"{sweep['generated_inputs_max']:,} generated inputs, each accepted or refused with "
            "pitstop's own error naming the field." + (
                f" Failures: {'; '.join(sweep['failures'])}" if sweep.get("failures") else "")]


def _soak_section(soak: dict[str, Any] | None, plots: dict[str, str]) -> list[str]:
    if not soak:
        return []
    out = ["", "## Soak", "", f"`{soak.get('command')}`: events at half the measured capacity "
           f"({soak.get('capacity_per_s')}/s) for {soak.get('minutes')} minutes"
           + (" (a short check of the script, not the 20-minute soak)"
              if float(soak.get("minutes") or 0) < 20 else "") + ".", "",
           "Run records, their launch keys and Celery results are history kept on purpose (30 days,"
           " a day), so Redis memory grows with the runs: `memory_kib_per_1000_runs` is that cost."
           " What must stay flat is everything else: `other_keys_min_max`, the queues, the router's"
           " lag, the stream (MAXLEN), and the workers' RSS (under 10% growth after warm-up).", "",
           "| figure | value |", "| --- | --- |"]
    out += [f"| {key} | {json.dumps(value) if isinstance(value, list | dict) else value} |"
            for key, value in soak.items() if key not in ("command", "samples")]
    return out + _img(plots, "soak")


def _img(plots: dict[str, str], name: str) -> list[str]:
    return ["", f"![{name}]({plots[name]})", ""] if name in plots else []
