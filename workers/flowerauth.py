"""Flower as ``pitstop flower`` runs it: every page behind its basic auth, ``/metrics`` included.

Flower serves ``/metrics`` (Prometheus) without the login its other pages require, so worker
names, task names and counts went to anyone who could reach the port. Started through this
module, Flower checks the login there too (Tornado's ``authenticated``, as its other pages do):
scrape it with the same user and password (Prometheus: ``basic_auth`` in the scrape config).
``/healthcheck`` (a bare ``OK``) stays open for container health checks.

Usage: ``python -m workers.flowerauth -A workers.app flower …``, arguments as for ``celery``.
"""

from __future__ import annotations

import sys
from typing import Any

import tornado.web
from flower.views import monitor

_MARK = "_pitstop_login_required"


def protect_metrics() -> None:
    """Make Flower's ``/metrics`` handler require the login (idempotent)."""
    handler: Any = monitor.Metrics
    if getattr(handler.get, _MARK, False):
        return
    guarded: Any = tornado.web.authenticated(handler.get)
    setattr(guarded, _MARK, True)
    handler.get = guarded


def main() -> None:
    protect_metrics()
    from celery.__main__ import main as celery_main

    sys.argv[0] = "celery"
    celery_main()


if __name__ == "__main__":
    main()
