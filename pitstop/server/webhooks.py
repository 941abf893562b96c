"""GitHub webhook deliveries: signature verification and mapping to bus events.

Pure functions, no web framework: :mod:`pitstop.server.app` does the HTTP part.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from pitstop.bus.patterns import normalize_type
from pitstop.kernel.constants import EVENT_DATA_MAX_BYTES
from pitstop.kernel.errors import SignatureMismatch, WebhookError

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"

_SIGNATURE_PREFIX = "sha256="
_INVALID_SEGMENT_CHARS = re.compile(r"[^a-z0-9_-]+")
_MAX_SEGMENT_LENGTH = 64
_FILE_LISTS = ("changed_files", "added", "modified", "removed")

EventList = list[tuple[str, dict[str, Any]]]


def signature_digest(header: str | None) -> bytes:
    """The digest an ``X-Hub-Signature-256`` header (``sha256=<64 hex digits>``) carries.

    Checked before the body is read: a request without a well-formed signature is refused
    without reading a byte of it. Raises :class:`SignatureMismatch` when the header is missing,
    not SHA-256 or malformed.
    """
    if header is None or not header.strip():
        raise SignatureMismatch(f"missing {SIGNATURE_HEADER} header: is the webhook secret set?")
    value = header.strip()
    if not value.startswith(_SIGNATURE_PREFIX):
        raise SignatureMismatch(
            f"{SIGNATURE_HEADER} must start with {_SIGNATURE_PREFIX!r} (SHA-1 signatures are "
            "not accepted)"
        )
    hex_digest = value[len(_SIGNATURE_PREFIX):]
    if len(hex_digest) != 2 * hashlib.sha256().digest_size:
        raise SignatureMismatch(f"{SIGNATURE_HEADER} is not a SHA-256 hex digest")
    try:
        return bytes.fromhex(hex_digest)
    except ValueError:
        raise SignatureMismatch(f"{SIGNATURE_HEADER} is not a hex digest") from None


def verify_github_signature(secret: bytes, body: bytes | bytearray, header: str | None) -> None:
    """Check ``X-Hub-Signature-256`` (``sha256=<hex>``) against ``body``.

    Raises :class:`SignatureMismatch` when the header is missing, not SHA-256, malformed or wrong.
    The messages never include the secret or the expected digest.
    """
    if not secret:
        raise SignatureMismatch("no webhook secret is configured, so no signature can match")
    received = signature_digest(header)
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not hmac.compare_digest(received, expected):
        raise SignatureMismatch(
            "signature does not match the body: wrong secret or the body was modified"
        )


def sanitize_segment(value: str) -> str:
    """Lower-case ``value`` and squeeze anything outside ``[a-z0-9_-]`` to ``_`` (may be empty)."""
    cleaned = _INVALID_SEGMENT_CHARS.sub("_", value.strip().lower()).strip("_")
    return cleaned[:_MAX_SEGMENT_LENGTH]


def github_events(
    event_name: str,
    payload: Mapping[str, Any],
    delivery_id: str,
    *,
    max_data_bytes: int = EVENT_DATA_MAX_BYTES,
) -> EventList:
    """Map one GitHub delivery to bus events ``(type, data)``.

    ``ping`` maps to nothing; unknown events map to ``github.<event>[.<action>]`` so nothing is
    dropped silently. Raises :class:`WebhookError` when ``event_name`` is unusable, or when the
    payload lacks the key its event implies (``push`` without ``ref`` …): the signature covers
    only the body, so a body must not be accepted under an event name that does not fit it.
    """
    name = sanitize_segment(event_name or "")
    if not name:
        raise WebhookError(f"unusable GitHub event name {event_name!r}")
    if name == "ping":
        return []
    required = _REQUIRED_KEYS.get(name)
    if required is not None and required not in payload:
        raise WebhookError(f"a {name!r} delivery must carry {required!r}: the body does not fit "
                           f"the {EVENT_HEADER} header")
    base = {"delivery_id": delivery_id, "github_event": name, "repo": _repo(payload)}
    mapper = _MAPPERS.get(name)
    if mapper is not None:
        suffix, data = mapper(payload)
    else:
        suffix, data = _action_segment(payload), {"action": _str(payload.get("action"))}
    event_type = normalize_type(".".join(part for part in ("github", name, suffix) if part))
    merged = {**base, **data}
    return [(event_type, _fit(merged, max_data_bytes))]


# --- per-event mappers: payload -> (type suffix, data) ---------------------------------------


def _push(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    ref = _str(payload.get("ref")) or ""
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    tag = ref.removeprefix("refs/tags/") if ref.startswith("refs/tags/") else None
    commits = [c for c in _list(payload.get("commits")) if isinstance(c, Mapping)]
    files: dict[str, set[str]] = {"added": set(), "modified": set(), "removed": set()}
    for commit in commits:
        for kind, bucket in files.items():
            bucket.update(p for p in _list(commit.get(kind)) if isinstance(p, str))
    pusher = _map(payload.get("pusher"))
    return "", {
        "ref": ref,
        "branch": branch,
        "tag": tag,
        "before": _str(payload.get("before")),
        "after": _str(payload.get("after")),
        "pusher": _str(pusher.get("name")) or _str(pusher.get("username")),
        "commit_count": len(commits),
        "changed_files": sorted(files["added"] | files["modified"] | files["removed"]),
        "added": sorted(files["added"]),
        "modified": sorted(files["modified"]),
        "removed": sorted(files["removed"]),
        "created": bool(payload.get("created")),
        "deleted": bool(payload.get("deleted")),
        "forced": bool(payload.get("forced")),
        "compare": _str(payload.get("compare")),
    }


def _workflow_run(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    run = _map(payload.get("workflow_run"))
    return _action_segment(payload), {
        "action": _str(payload.get("action")),
        "name": _str(run.get("name")),
        "status": _str(run.get("status")),
        "conclusion": _str(run.get("conclusion")),
        "head_branch": _str(run.get("head_branch")),
        "head_sha": _str(run.get("head_sha")),
        "run_id": _int(run.get("id")),
        "run_attempt": _int(run.get("run_attempt")),
        "html_url": _str(run.get("html_url")),
    }


def _release(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    release = _map(payload.get("release"))
    return _action_segment(payload), {
        "action": _str(payload.get("action")),
        "tag": _str(release.get("tag_name")),
        "name": _str(release.get("name")),
        "prerelease": bool(release.get("prerelease")),
        "draft": bool(release.get("draft")),
        "html_url": _str(release.get("html_url")),
    }


def _pull_request(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    pr = _map(payload.get("pull_request"))
    base, head = _map(pr.get("base")), _map(pr.get("head"))
    return _action_segment(payload), {
        "action": _str(payload.get("action")),
        "number": _int(pr.get("number")) or _int(payload.get("number")),
        "title": _str(pr.get("title")),
        "state": _str(pr.get("state")),
        "merged": bool(pr.get("merged")),
        "base": _str(base.get("ref")),
        "head": _str(head.get("ref")),
        "head_sha": _str(head.get("sha")),
        "author": _str(_map(pr.get("user")).get("login")),
        "html_url": _str(pr.get("html_url")),
    }


_REQUIRED_KEYS: dict[str, str] = {
    "push": "ref",
    "workflow_run": "workflow_run",
    "release": "release",
    "pull_request": "pull_request",
}
"""Event name -> the payload key every delivery of that event carries."""

_MAPPERS: dict[str, Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]]] = {
    "push": _push,
    "workflow_run": _workflow_run,
    "release": _release,
    "pull_request": _pull_request,
}


# --- helpers ---------------------------------------------------------------------------------


def _fit(data: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Trim the push file lists until ``data`` fits the event cap; flag it in ``files_truncated``.

    A big push (thousands of files) must still produce an event rather than be refused.
    """
    if not any(key in data for key in _FILE_LISTS):
        return data
    data["files_truncated"] = False
    keep = max((len(data[key]) for key in _FILE_LISTS), default=0)
    while _size(data) > max_bytes and keep > 0:
        keep //= 2
        for key in _FILE_LISTS:
            data[key] = data[key][:keep]
        data["files_truncated"] = True
    return data


def _size(data: Mapping[str, Any]) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode())


def _action_segment(payload: Mapping[str, Any]) -> str:
    action = payload.get("action")
    return sanitize_segment(action) if isinstance(action, str) else ""


def _repo(payload: Mapping[str, Any]) -> str | None:
    return _str(_map(payload.get("repository")).get("full_name"))


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
