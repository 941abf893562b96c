"""What one script execution did: :class:`ExecutionResult`, and the exit codes pitstop gives it.

Exit codes follow the shell: :data:`EXIT_TIMEOUT` (124) on timeout, :data:`EXIT_CANCELLED` (130)
on cancellation, ``128 + n`` when killed by signal ``n``, :data:`EXIT_CANNOT_EXECUTE` (126) /
:data:`EXIT_NOT_FOUND` (127) when the program cannot be executed / found (then ``pid`` is
``None``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_CANNOT_EXECUTE",
    "EXIT_NOT_FOUND",
    "EXIT_TIMEOUT",
    "ExecutionResult",
]

EXIT_TIMEOUT = 124
EXIT_CANCELLED = 130
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


@dataclass(frozen=True)
class ExecutionResult:
    """What one script execution did. Every text field is already redacted."""

    run_id: str
    script: str
    args: list[str]
    exit_code: int
    succeeded: bool
    timed_out: bool
    cancelled: bool
    duration: float
    stdout_tail: str
    stderr_tail: str
    host: str
    started_at: str
    finished_at: str
    pid: int | None
    stdout_truncated: bool
    stderr_truncated: bool

    @property
    def status(self) -> str:
        """The run status this result ends in: succeeded, failed, timed_out or cancelled."""
        if self.timed_out:
            return "timed_out"
        if self.cancelled:
            return "cancelled"
        return "succeeded" if self.succeeded else "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
