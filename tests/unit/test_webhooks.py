"""GitHub signature verification and delivery -> event mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from pitstop.bus.patterns import normalize_type
from pitstop.kernel.errors import SignatureMismatch, WebhookError
from pitstop.server.webhooks import github_events, sanitize_segment, verify_github_signature
from tests.support import GITHUB_PUSH_HEAD, github_signature

SECRET = b"It's a Secret to Everybody"
BODY = b'{"zen":"Keep it logically awesome.","hook_id":1}'
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def sign(body: bytes, secret: bytes = SECRET, algo: str = "sha256") -> str:
    return github_signature(body, secret, algo)


# --- signatures ------------------------------------------------------------------------------


def test_github_documented_example_verifies() -> None:
    # The test vector from GitHub's "Validating webhook deliveries" documentation.
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    verify_github_signature(SECRET, b"Hello, World!", header)


def test_valid_signature_passes_with_surrounding_whitespace() -> None:
    verify_github_signature(SECRET, BODY, f"  {sign(BODY)} ")


@pytest.mark.parametrize(
    ("secret", "body", "header", "why"),
    [
        (SECRET, BODY, None, "missing"),
        (SECRET, BODY, "", "missing"),
        (SECRET, BODY, "   ", "missing"),
        (SECRET, BODY, sign(BODY, algo="sha1"), "sha-1 only"),
        (SECRET, BODY, sign(BODY).upper(), "prefix is case-sensitive"),
        (SECRET, BODY, sign(BODY)[len("sha256="):], "no prefix"),
        (SECRET, BODY, "sha256=", "empty digest"),
        (SECRET, BODY, "sha256=xyz" + "0" * 61, "not hex"),
        (SECRET, BODY, sign(BODY)[:-1], "odd length"),
        (SECRET, BODY, sign(BODY)[:-2], "truncated digest"),
        (SECRET, BODY, sign(BODY) + "00", "digest too long"),
        (SECRET, BODY + b" ", sign(BODY), "tampered body"),
        (SECRET, BODY.replace(b"1", b"2"), sign(BODY), "tampered body"),
        (b"wrong secret", BODY, sign(BODY), "wrong secret"),
        (b"", BODY, sign(BODY, secret=b""), "empty secret"),
    ],
)
def test_bad_signatures_are_refused(secret: bytes, body: bytes, header: str | None,
                                    why: str) -> None:
    with pytest.raises(SignatureMismatch) as caught:
        verify_github_signature(secret, body, header)
    message = str(caught.value)
    assert SECRET.decode() not in message, why
    assert hmac.new(SECRET, body, hashlib.sha256).hexdigest() not in message, why


def test_signature_mismatch_is_a_webhook_error() -> None:
    with pytest.raises(WebhookError):
        verify_github_signature(SECRET, BODY, None)


# --- payload fixtures (trimmed real GitHub deliveries) ---------------------------------------

REPOSITORY = {"id": 1296269, "full_name": "octo-org/pitstop", "name": "pitstop",
              "private": False, "html_url": "https://github.com/octo-org/pitstop"}

PUSH: dict[str, Any] = {
    **GITHUB_PUSH_HEAD,
    "forced": False,
    "base_ref": None,
    "commits": [
        {
            "id": "a10867b14bb761a232cd80139fbd4c0d33264240",
            "message": "Add router",
            "author": {"name": "Mona", "email": "mona@example.com", "username": "octocat"},
            "added": ["pitstop/router.py", "tests/unit/test_router.py"],
            "removed": [],
            "modified": ["README.md"],
        },
        {
            "id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "message": "Drop old runner, touch router",
            "author": {"name": "Mona", "email": "mona@example.com", "username": "octocat"},
            "added": [],
            "removed": ["legacy/runner.py"],
            "modified": ["pitstop/router.py", "README.md"],
        },
    ],
    "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"},
    "repository": REPOSITORY,
    "pusher": {"name": "octocat", "email": "octocat@example.com"},
    "sender": {"login": "octocat", "id": 583231},
}

WORKFLOW_RUN: dict[str, Any] = {
    "action": "completed",
    "workflow_run": {
        "id": 30433642,
        "name": "Build",
        "head_branch": "main",
        "head_sha": "acb5820ced9479c074f688cc328bf03f341a511d",
        "run_number": 562,
        "run_attempt": 2,
        "event": "push",
        "status": "completed",
        "conclusion": "failure",
        "workflow_id": 159038,
        "html_url": "https://github.com/octo-org/pitstop/actions/runs/30433642",
    },
    "workflow": {"id": 159038, "name": "Build"},
    "repository": REPOSITORY,
    "sender": {"login": "octocat"},
}

RELEASE: dict[str, Any] = {
    "action": "published",
    "release": {
        "id": 11248810,
        "tag_name": "v1.4.0-rc.1",
        "target_commitish": "main",
        "name": "1.4.0 release candidate",
        "draft": False,
        "prerelease": True,
        "html_url": "https://github.com/octo-org/pitstop/releases/tag/v1.4.0-rc.1",
    },
    "repository": REPOSITORY,
    "sender": {"login": "octocat"},
}

PULL_REQUEST: dict[str, Any] = {
    "action": "closed",
    "number": 1347,
    "pull_request": {
        "number": 1347,
        "state": "closed",
        "title": "Amazing new feature",
        "user": {"login": "hubot"},
        "merged": True,
        "html_url": "https://github.com/octo-org/pitstop/pull/1347",
        "head": {"ref": "new-topic", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
        "base": {"ref": "main", "sha": "9049f1265b7d61be4a8904a9a27120d2064dab3b"},
    },
    "repository": REPOSITORY,
    "sender": {"login": "hubot"},
}

ISSUES: dict[str, Any] = {
    "action": "opened",
    "issue": {"number": 7, "title": "Router drops events"},
    "repository": REPOSITORY,
}

PING: dict[str, Any] = {"zen": "Design for failure.", "hook_id": 42, "repository": REPOSITORY}


def only(events: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    assert len(events) == 1
    return events[0]


# --- mapping ---------------------------------------------------------------------------------


def test_push_to_branch() -> None:
    event_type, data = only(github_events("push", PUSH, DELIVERY))
    assert event_type == "github.push"
    assert data["repo"] == "octo-org/pitstop"
    assert data["ref"] == "refs/heads/main"
    assert (data["branch"], data["tag"]) == ("main", None)
    assert data["before"] == PUSH["before"] and data["after"] == PUSH["after"]
    assert data["pusher"] == "octocat"
    assert data["commit_count"] == 2
    assert data["changed_files"] == [
        "README.md", "legacy/runner.py", "pitstop/router.py", "tests/unit/test_router.py",
    ]
    assert data["added"] == ["pitstop/router.py", "tests/unit/test_router.py"]
    assert data["modified"] == ["README.md", "pitstop/router.py"]
    assert data["removed"] == ["legacy/runner.py"]
    assert (data["created"], data["deleted"], data["files_truncated"]) == (False, False, False)
    assert data["compare"] == PUSH["compare"]
    assert data["delivery_id"] == DELIVERY and data["github_event"] == "push"


@pytest.mark.parametrize(
    ("ref", "branch", "tag"),
    [
        ("refs/heads/feature/x-1", "feature/x-1", None),
        ("refs/tags/v2.0.0", None, "v2.0.0"),
        ("refs/notes/commits", None, None),
    ],
)
def test_push_ref_kinds(ref: str, branch: str | None, tag: str | None) -> None:
    _, data = only(github_events("push", {**PUSH, "ref": ref}, DELIVERY))
    assert (data["branch"], data["tag"]) == (branch, tag)


def test_push_deleting_a_branch_has_no_commits() -> None:
    payload = {**PUSH, "deleted": True, "after": "0" * 40, "commits": [], "head_commit": None}
    event_type, data = only(github_events("push", payload, DELIVERY))
    assert event_type == "github.push"
    assert data["deleted"] is True
    assert data["commit_count"] == 0
    assert data["changed_files"] == []


def test_huge_push_is_trimmed_to_fit_the_event_cap() -> None:
    commits = [{"added": [f"src/generated/module_{i:05d}.py" for i in range(3000)],
                "modified": [], "removed": []}]
    _, data = only(github_events("push", {**PUSH, "commits": commits}, DELIVERY,
                                 max_data_bytes=16 * 1024))
    assert data["files_truncated"] is True
    assert 0 < len(data["changed_files"]) < 3000
    assert data["commit_count"] == 1
    assert len(json.dumps(data, separators=(",", ":")).encode()) <= 16 * 1024


@pytest.mark.parametrize("action", ["requested", "in_progress", "completed"])
def test_workflow_run(action: str) -> None:
    event_type, data = only(github_events("workflow_run", {**WORKFLOW_RUN, "action": action},
                                          DELIVERY))
    assert event_type == f"github.workflow_run.{action}"
    assert data == {
        "delivery_id": DELIVERY,
        "github_event": "workflow_run",
        "repo": "octo-org/pitstop",
        "action": action,
        "name": "Build",
        "status": "completed",
        "conclusion": "failure",
        "head_branch": "main",
        "head_sha": "acb5820ced9479c074f688cc328bf03f341a511d",
        "run_id": 30433642,
        "run_attempt": 2,
        "html_url": "https://github.com/octo-org/pitstop/actions/runs/30433642",
    }


def test_release() -> None:
    event_type, data = only(github_events("release", RELEASE, DELIVERY))
    assert event_type == "github.release.published"
    assert data["tag"] == "v1.4.0-rc.1"
    assert data["name"] == "1.4.0 release candidate"
    assert (data["prerelease"], data["draft"]) == (True, False)
    assert data["html_url"].endswith("/releases/tag/v1.4.0-rc.1")
    assert data["repo"] == "octo-org/pitstop"


def test_pull_request() -> None:
    event_type, data = only(github_events("pull_request", PULL_REQUEST, DELIVERY))
    assert event_type == "github.pull_request.closed"
    assert data["number"] == 1347
    assert data["title"] == "Amazing new feature"
    assert (data["state"], data["merged"]) == ("closed", True)
    assert (data["base"], data["head"]) == ("main", "new-topic")
    assert data["head_sha"] == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert data["author"] == "hubot"
    assert data["html_url"] == "https://github.com/octo-org/pitstop/pull/1347"


def test_ping_publishes_nothing() -> None:
    assert github_events("ping", PING, DELIVERY) == []


@pytest.mark.parametrize(
    ("event", "payload", "expected_type", "action"),
    [
        ("issues", ISSUES, "github.issues.opened", "opened"),
        ("create", {"ref": "v1", "ref_type": "tag", "repository": REPOSITORY},
         "github.create", None),
        ("check_run", {"action": "Re-Requested Action!", "repository": REPOSITORY},
         "github.check_run.re-requested_action", "Re-Requested Action!"),
        ("check_suite", {"action": 5, "repository": REPOSITORY}, "github.check_suite", None),
        ("Deployment_Status", {"action": "created"}, "github.deployment_status.created",
         "created"),
        ("workflow_run", {"action": "???", "workflow_run": {}}, "github.workflow_run", "???"),
    ],
)
def test_other_events_are_kept(event: str, payload: dict[str, Any], expected_type: str,
                               action: str | None) -> None:
    event_type, data = only(github_events(event, payload, DELIVERY))
    assert event_type == expected_type
    assert normalize_type(event_type) == event_type
    assert data["action"] == action
    assert data["repo"] == payload.get("repository", {}).get("full_name")
    assert data["delivery_id"] == DELIVERY


@pytest.mark.parametrize(
    ("event", "payload"),
    [("push", PUSH), ("workflow_run", WORKFLOW_RUN), ("release", RELEASE),
     ("pull_request", PULL_REQUEST), ("issues", ISSUES)],
)
def test_every_event_carries_delivery_and_event_name(event: str,
                                                     payload: dict[str, Any]) -> None:
    _, data = only(github_events(event, payload, "d-1"))
    assert data["delivery_id"] == "d-1"
    assert data["github_event"] == event
    json.dumps(data, allow_nan=False)


@pytest.mark.parametrize(
    "event",
    ["push", "workflow_run", "release", "pull_request", "issues"],
)
def test_malformed_payloads_still_map(event: str) -> None:
    weird = {"ref": 5, "commits": "nope", "pusher": [], "workflow_run": "x", "release": None,
             "pull_request": {"head": 3, "user": "u"}, "repository": "octo-org/pitstop"}
    event_type, data = only(github_events(event, weird, DELIVERY))
    assert event_type.startswith(f"github.{event}")
    assert data["repo"] is None


@pytest.mark.parametrize(
    ("event", "payload", "missing"),
    [
        ("push", WORKFLOW_RUN, "ref"),
        ("workflow_run", PUSH, "workflow_run"),
        ("release", PULL_REQUEST, "release"),
        ("pull_request", RELEASE, "pull_request"),
        ("Pull_Request", {"action": "opened", "number": 1}, "pull_request"),
    ],
)
def test_a_payload_without_the_key_its_event_implies_is_refused(
        event: str, payload: dict[str, Any], missing: str) -> None:
    # The signature covers only the body: a captured body re-sent under another event name
    # must not turn into that event.
    with pytest.raises(WebhookError, match=repr(missing)):
        github_events(event, payload, DELIVERY)


@pytest.mark.parametrize("event", ["", "   ", "!!!"])
def test_unusable_event_name(event: str) -> None:
    with pytest.raises(WebhookError):
        github_events(event, PUSH, DELIVERY)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("completed", "completed"), ("In Progress", "in_progress"), ("a.b", "a_b"),
     ("--x--", "--x--"), ("ÄÖ", ""), ("x" * 100, "x" * 64)],
)
def test_sanitize_segment(raw: str, clean: str) -> None:
    assert sanitize_segment(raw) == clean
