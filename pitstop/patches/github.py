"""Opening a pull request on GitHub for a patch that scored between ``pr_at`` and ``auto_merge_at``.

REST: ``POST /repos/{owner}/{repo}/pulls`` (title, head, base, body with the check table) and
``POST /repos/{owner}/{repo}/issues/{number}/labels`` (``pitstop``). Auto-merge cannot be enabled
through the REST API; it is requested with the GraphQL mutation ``enablePullRequestAutoMerge``
on the pull request's ``node_id``. GitHub refuses it when the repository does not allow
auto-merge or the branch has no protection requiring checks: that is recorded as a note, and the
pull request stays open for a human.

The token comes from the environment (``github.token_env``, default ``GITHUB_TOKEN``) and is sent
only as the ``Authorization`` header; nothing here logs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from pitstop.kernel.errors import PatchError
from pitstop.patches.config import GitHubConfig

__all__ = ["GitHubClient", "PullRequest"]

_AUTO_MERGE = """mutation($id: ID!, $method: PullRequestMergeMethod!) {
  enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: $method}) {
    pullRequest { number autoMergeRequest { enabledAt mergeMethod } }
  }
}"""


@dataclass
class PullRequest:
    number: int
    url: str
    node_id: str
    auto_merge: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "url": self.url, "auto_merge": self.auto_merge,
                "notes": self.notes}


class GitHubClient:
    def __init__(self, config: GitHubConfig, token: str,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.graphql_url = config.graphql_url or config.api_url.rstrip("/") + "/graphql"
        self._http = httpx.Client(
            base_url=config.api_url.rstrip("/"), timeout=config.timeout, transport=transport,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "pitstop"})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, url: str, body: dict[str, Any]) -> Any:
        """The JSON reply (an object, or a list for the labels endpoint)."""
        try:
            response = self._http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise PatchError(f"GitHub API unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise PatchError(f"GitHub API {method} {url}: HTTP {response.status_code}: "
                             f"{response.text[:300]}")
        try:
            data = response.json()
        except ValueError:
            raise PatchError(f"GitHub API {url}: the reply is not JSON") from None
        return data

    def open_pull_request(self, repository: str, *, head: str, base: str, title: str,
                          body: str) -> PullRequest:
        """Open the PR, label it, request auto-merge; GitHub errors after the PR exists become
        notes on it."""
        created = self._call("POST", f"/repos/{repository}/pulls",
                             {"title": title, "head": head, "base": base, "body": body,
                              "maintainer_can_modify": True})
        if not isinstance(created, dict) or "number" not in created:
            raise PatchError("GitHub API: the pull request reply has no number")
        pr = PullRequest(int(created["number"]), str(created.get("html_url", "")),
                         str(created.get("node_id", "")))
        try:
            self._call("POST", f"/repos/{repository}/issues/{pr.number}/labels",
                       {"labels": [self.config.label]})
        except PatchError as exc:
            pr.notes.append(f"label not added: {exc}")
        try:
            reply = self._call("POST", self.graphql_url,
                               {"query": _AUTO_MERGE,
                                "variables": {"id": pr.node_id,
                                              "method": self.config.merge_method}})
            errors = reply.get("errors") if isinstance(reply, dict) else ["unexpected reply"]
            if errors:
                pr.notes.append("auto-merge not enabled: " + "; ".join(
                    str(e.get("message", e)) for e in errors if isinstance(e, dict))[:300])
            else:
                pr.auto_merge = True
        except PatchError as exc:
            pr.notes.append(f"auto-merge not enabled: {exc}")
        return pr
