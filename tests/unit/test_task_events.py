"""``celery.task_events``: off by default (they cost worker throughput), on with
``PITSTOP_TASK_EVENTS=1`` or in the file, and the Celery app and ``pitstop worker -E`` follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.kernel.errors import ConfigError
from pitstop.kernel.settings import load_settings
from workers.app import create_app


def test_task_events_are_a_setting_off_by_default(tmp_path: Path) -> None:
    off = load_settings(tmp_path, environ={}, cwd=tmp_path)
    assert off.celery.task_events is False
    app = create_app(off, "redis://127.0.0.1:1/0")
    assert app.conf.worker_send_task_events is False and app.conf.task_send_sent_event is False

    on = load_settings(tmp_path, environ={"PITSTOP_TASK_EVENTS": "1"}, cwd=tmp_path)
    assert on.celery.task_events is True
    assert create_app(on, "redis://127.0.0.1:1/0").conf.worker_send_task_events is True
    (tmp_path / "pitstop.yaml").write_text("celery:\n  task_events: true\n")
    assert load_settings(tmp_path, environ={}, cwd=tmp_path).celery.task_events is True
    (tmp_path / "pitstop.yaml").write_text("celery:\n  task_events: sometimes\n")
    with pytest.raises(ConfigError, match=r"pitstop\.yaml:2 at celery\.task_events"):
        load_settings(tmp_path, environ={}, cwd=tmp_path)
