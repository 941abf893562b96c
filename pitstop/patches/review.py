"""The manual review queue: patches a human must approve or reject, kept in Redis.

One JSON document per review (``pitstop:patches:review:<id>``) and an index sorted by creation
time. A review is ``pending`` until someone approves it (``approved``, then ``landed`` once the
merge lane merged it) or rejects it with a reason (``rejected``). The status changes by
compare-and-set (WATCH), so two reviewers never both decide one patch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import redis

from pitstop.kernel.constants import PATCH_REVIEW_INDEX, PATCH_REVIEW_PREFIX, PATCH_REVIEW_TTL_SECONDS
from pitstop.kernel.errors import RedisUnavailable, ReviewNotFound, ValidationError
from pitstop.kernel.ids import new_id, utc_iso

__all__ = ["ReviewQueue"]

_FINAL = ("landed", "rejected")


class ReviewQueue:
    def __init__(self, client: redis.Redis,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.clock = clock

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        review_id = record.get("review_id") or new_id(int(now.timestamp() * 1000))
        doc = {**record, "review_id": review_id, "status": "pending", "created_at": utc_iso(now),
               "history": []}
        try:
            with self.client.pipeline() as pipe:
                pipe.set(PATCH_REVIEW_PREFIX + review_id, json.dumps(doc),
                         ex=PATCH_REVIEW_TTL_SECONDS)
                pipe.zadd(PATCH_REVIEW_INDEX, {review_id: now.timestamp()})
                pipe.execute()
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot queue the patch for review: {exc}") from exc
        return doc

    def resolve_id(self, review_id: str) -> str:
        """The full id a unique prefix or suffix names."""
        if self.client.exists(PATCH_REVIEW_PREFIX + review_id):
            return review_id
        ids = [raw.decode() if isinstance(raw, bytes) else str(raw)
               for raw in self.client.zrange(PATCH_REVIEW_INDEX, 0, -1)]
        matches = [i for i in ids if i.startswith(review_id) or i.endswith(review_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValidationError(f"review id {review_id!r} is ambiguous ({len(matches)} match)")
        raise ReviewNotFound(f"no patch review {review_id!r}")

    def get(self, review_id: str) -> dict[str, Any]:
        full = self.resolve_id(review_id)
        raw = self.client.get(PATCH_REVIEW_PREFIX + full)
        if raw is None:
            raise ReviewNotFound(f"no patch review {review_id!r}")
        doc: dict[str, Any] = json.loads(raw)
        return doc

    def list(self, status: str | None = "pending", limit: int = 100) -> list[dict[str, Any]]:
        ids = self.client.zrevrange(PATCH_REVIEW_INDEX, 0, max(limit * 5, limit) - 1)
        out = []
        for raw_id in ids:
            review_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            raw = self.client.get(PATCH_REVIEW_PREFIX + review_id)
            if raw is None:
                self.client.zrem(PATCH_REVIEW_INDEX, review_id)  # expired
                continue
            doc = json.loads(raw)
            if status is None or doc.get("status") == status:
                out.append(doc)
            if len(out) >= limit:
                break
        return out

    def transition(self, review_id: str, *, allowed_from: tuple[str, ...], status: str,
                   by: str, reason: str | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move a review to ``status`` if it is in one of ``allowed_from`` (compare-and-set)."""
        full = self.resolve_id(review_id)
        key = PATCH_REVIEW_PREFIX + full
        with self.client.pipeline() as pipe:
            while True:
                try:
                    cast("Callable[[str], None]", pipe.watch)(key)  # untyped in redis-py
                    raw = pipe.get(key)
                    if raw is None:
                        raise ReviewNotFound(f"no patch review {review_id!r}")
                    doc = json.loads(raw)
                    if doc.get("status") not in allowed_from:
                        raise ValidationError(f"review {full} is {doc.get('status')}, not "
                                              f"{' or '.join(allowed_from)}")
                    doc["history"].append({"at": utc_iso(self.clock()), "by": by,
                                           "status": status, "reason": reason})
                    doc["status"] = status
                    if reason is not None:
                        doc["reason"] = reason
                    doc.update(extra or {})
                    pipe.multi()
                    pipe.set(key, json.dumps(doc), keepttl=True)
                    pipe.execute()
                    return dict(doc)
                except redis.WatchError:
                    continue

    @staticmethod
    def final(doc: dict[str, Any]) -> bool:
        return doc.get("status") in _FINAL
