"""The Celery app's safety settings (building an app connects to nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.constants import DEFAULT_QUEUE, TASK_REAP_RUNS, TASK_RUN_SCRIPT
from pitstop.errors import ConfigError
from pitstop.settings import Settings, load_settings
from workers.app import check_visibility_timeout, create_app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(tmp_path, environ={"PITSTOP_STATE_DIR": str(tmp_path)})


def test_safe_defaults(settings: Settings) -> None:
    app = create_app(settings, "redis://127.0.0.1:1/0")
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.result_accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.result_expires == settings.celery.result_expires
    assert conf.broker_transport_options["visibility_timeout"] == 7200
    assert conf.task_default_queue == DEFAULT_QUEUE
    assert {q.name for q in conf.task_queues} >= {"default", "linux", "pwsh"}


def test_tasks_are_namespaced_and_registered(settings: Settings) -> None:
    app = create_app(settings, "redis://127.0.0.1:1/0")
    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    assert {TASK_RUN_SCRIPT, TASK_REAP_RUNS} <= names
    assert all(name.startswith("pitstop.") for name in names)


def test_start_up_refuses_a_visibility_timeout_shorter_than_a_time_limit(
        settings: Settings) -> None:
    app = create_app(settings, "redis://127.0.0.1:1/0")
    app.loader.import_default_modules()
    check_visibility_timeout(app, settings)  # the defaults are consistent

    @app.task(name="pitstop.test_slow", time_limit=10_000, shared=False)
    def slow() -> None:
        """A task whose hard limit outlasts the visibility timeout."""

    with pytest.raises(ConfigError, match="visibility_timeout"):
        check_visibility_timeout(app, settings)
