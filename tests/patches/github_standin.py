"""A local HTTP server standing in for the GitHub REST and GraphQL APIs (127.0.0.1 only)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class GitHubStandIn:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    allow_auto_merge: bool = True


@contextmanager
def github_standin(*, allow_auto_merge: bool = True) -> Iterator[GitHubStandIn]:
    state = GitHubStandIn(url="", allow_auto_merge=allow_auto_merge)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            state.requests.append(Recorded("POST", self.path, dict(self.headers.items()), body))
            if self.path.endswith("/pulls"):
                reply: Any = {"number": 7, "node_id": "PR_node7",
                              "html_url": "https://github.example/o/r/pull/7"}
                self._reply(201, reply)
            elif "/labels" in self.path:
                self._reply(200, [{"name": name} for name in body["labels"]])
            elif self.path == "/graphql":
                if state.allow_auto_merge:
                    self._reply(200, {"data": {"enablePullRequestAutoMerge": {"pullRequest": {
                        "number": 7, "autoMergeRequest": {"mergeMethod": "SQUASH"}}}}})
                else:
                    self._reply(200, {"errors": [{"message": "Auto merge is not allowed for "
                                                             "this repository"}]})
            else:
                self._reply(404, {"message": "Not Found"})

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
