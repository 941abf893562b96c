"""``smoke_canary``: ``pitstop smoke``'s round trip through a worker of each required queue."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Task, shared_task

from pitstop.kernel.constants import CANARY_TASK


@shared_task(name=CANARY_TASK, bind=True, acks_late=False, ignore_result=False, max_retries=0)
def smoke_canary(self: Task, nonce: str) -> dict[str, Any]:
    """Echo ``nonce``, saying which worker answered."""
    return {"nonce": nonce, "worker": self.request.hostname or socket.gethostname(),
            "pid": os.getpid()}
