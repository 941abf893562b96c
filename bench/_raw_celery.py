"""The baseline for bench/scripts.py: a bare Celery app whose task runs a script with subprocess.

Configured like pitstop's app (JSON, acks_late, prefetch 1, Redis result backend) so the ratio
shows what pitstop adds: run records, live output, events, redaction, state logs.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from celery import Celery

app = Celery("bench_raw", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue="bench-raw")


@app.task(name="bench.run_subprocess")
def run_subprocess(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return {"exit_code": done.returncode, "stdout": done.stdout}
