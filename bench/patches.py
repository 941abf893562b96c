"""Patch validation wall time against its checks run one at a time, in the same run.

    python bench/patches.py [ROUNDS]

On a tiny sample repository (a module, its tests, ruff/pytest config) with a bare remote, each
round:

1. validates a correct patch end to end (``PatchValidator.validate``, dry run: safety, fresh
   worktree, apply, the five shipped checks in parallel, score; no landing), timing the wall;
2. runs each of the five checks alone, one after the other, in a worktree with the patch
   applied: the individual check times, whose sum is what a sequential validation would cost and
   whose max is the floor of a parallel one.

Goal: validation wall time within 1.2x of the slowest check plus 1 s
(``wall <= 1.2 * max + 1``). Medians over the rounds are printed, with the ratios.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from pitstop.patches import ChangedFiles, CheckRunner, PatchApplier, PatchRequest, PatchValidator
from pitstop.patches.git import Git
from pitstop.patches.worktree import WorktreeManager
from tests.patches.sample import CALC, make_sample, patches_config

MUL = CALC + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
MUL_TEST = "from calc import mul\n\n\ndef test_mul() -> None:\n    assert mul(2, 3) == 6\n"


def one_round(root: Path, n: int) -> tuple[float, dict[str, float]]:
    work = root / f"round-{n}"
    work.mkdir()
    sample = make_sample(work)
    config = patches_config(sample)
    patch = sample.patch({"calc.py": MUL, "tests/test_mul.py": MUL_TEST}, scratch=work)
    validator = PatchValidator(config, state_dir=work / "state", redis_client=None)

    started = time.monotonic()
    outcome = validator.validate(PatchRequest(repo="sample", patch=patch, dry_run=True))
    wall = time.monotonic() - started
    assert outcome.result == "would_merge", outcome.reasons

    checks = config.resolved(config.repos["sample"]).checks
    runner = CheckRunner()
    git = Git(sample.path)
    base = sample.head()
    individual: dict[str, float] = {}
    patch_file = work / "patch.diff"
    patch_file.write_bytes(patch)
    parsed = PatchApplier().safety.inspect_diff(patch).parsed
    with WorktreeManager(work / "alone").checkout(git, base) as tree:
        PatchApplier().apply(tree, patch_file, parsed, "bench", ("bench", "bench@localhost"))
        changed = ChangedFiles(parsed.paths, parsed.added_lines())
        for name, spec in checks.items():
            result = runner.run_one(name, spec, tree, changed, work / "scratch" / name)
            assert result.status == "passed", (name, result.summary)
            individual[name] = result.duration
    return wall, individual


def main(rounds: int = 3) -> int:
    walls: list[float] = []
    per_check: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-patches-") as tmp:
        one_round(Path(tmp), -1)  # warm the page cache and imports
        for n in range(rounds):
            wall, individual = one_round(Path(tmp), n)
            walls.append(wall)
            for name, duration in individual.items():
                per_check.setdefault(name, []).append(duration)
    medians = {name: statistics.median(values) for name, values in per_check.items()}
    wall = statistics.median(walls)
    total, slowest = sum(medians.values()), max(medians.values())
    bound = 1.2 * slowest + 1.0
    print(f"patch validation on a sample repository, median of {rounds} rounds")
    for name, value in medians.items():
        print(f"  {name:10s} alone {value:6.2f} s")
    print(f"  sum of checks          {total:6.2f} s   (sequential validation)")
    print(f"  slowest check          {slowest:6.2f} s")
    print(f"  validation wall time   {wall:6.2f} s   (safety, worktree, apply, checks, score)")
    print(f"  wall / sum             {wall / total:6.2f}x")
    print(f"  wall / slowest         {wall / slowest:6.2f}x")
    verdict = "met" if wall <= bound else "NOT met"
    print(f"  goal wall <= 1.2 x slowest + 1 s = {bound:.2f} s: {verdict}")
    return 0 if wall <= bound else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
