"""An example step for the shipped workstreams (config/workstreams.yaml).

    ws_check.py NAME [KEY=VALUE ...] [--sleep SECONDS] [--fail]

Prints what it checks and exits 0, or 1 with --fail. Replace it with your real build and test
scripts: any script under scripts/ (scripts.allowed_roots) can be a workstream's `run` step.
"""

import sys
import time

args = sys.argv[1:]
fail = "--fail" in args
pause = 0.0
if "--sleep" in args:
    at = args.index("--sleep")
    pause = float(args[at + 1])
    del args[at:at + 2]
args = [a for a in args if a != "--fail"]
name = args[0] if args else "check"
print(f"{name}: {' '.join(args[1:]) or '(no details)'}", flush=True)
time.sleep(pause)
if fail:
    print(f"{name}: failed", file=sys.stderr, flush=True)
    sys.exit(1)
print(f"{name}: ok", flush=True)
