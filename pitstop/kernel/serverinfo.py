"""Where the project's embedded redis-server can be reached, as its ``server.json`` records it.

Kept in the kernel because settings must recognise the embedded server's URL without starting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["SERVER_INFO_FILE", "ServerInfo"]

SERVER_INFO_FILE = "server.json"


@dataclass
class ServerInfo:
    """What a client needs to reach a running private server (stored in ``server.json``)."""

    pid: int
    port: int
    password: str
    started: str | None = None
    """The start time of ``pid`` (:func:`pitstop.kernel.proc.start_time`): with the pid it names the
    server's process for good, pids being reused. None where unknown (no ``/proc``)."""

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"
