"""Where the project's embedded redis-server can be reached, as its ``server.json`` records it.

Kept in the kernel because settings must recognise the embedded server's URL without starting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["ADMIN_USER", "SERVER_INFO_FILE", "ServerInfo"]

SERVER_INFO_FILE = "server.json"
ADMIN_USER = "pitstop-admin"
"""The embedded server's ACL user allowed every command; the default user is not."""


@dataclass
class ServerInfo:
    """What a client needs to reach a running private server (stored in ``server.json``)."""

    pid: int
    port: int
    password: str
    started: str | None = None
    """The start time of ``pid`` (:func:`pitstop.kernel.proc.start_time`): with the pid it names the
    server's process for good, pids being reused. None where unknown (no ``/proc``)."""
    admin_password: str | None = None
    """Password of the server's admin user (:data:`ADMIN_USER`), kept only in ``server.json``:
    ``password`` (the default user, which every client shares) cannot run admin commands."""

    @property
    def url(self) -> str:
        """The URL every client uses (workers, Beat, CI): the default user, no admin commands."""
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def admin_url(self) -> str | None:
        """The admin user's URL (CONFIG, FLUSHALL …), for the local owner only; None when the
        server has no admin user (started by an older pitstop: then ``url`` is all-powerful)."""
        if self.admin_password is None:
            return None
        return (f"redis://{ADMIN_USER}:{quote(self.admin_password, safe='')}"
                f"@127.0.0.1:{self.port}/0")
