"""The Celery app's safety settings (building an app connects to nothing)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pitstop.kernel.constants import DEFAULT_QUEUE, TASK_REAP_RUNS, TASK_RUN_SCRIPT
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.kernel.settings import Settings, load_settings
from workers.app import (
    check_visibility_timeout,
    create_app,
    ssl_options,
    worker_queues,
)
from workers.transport import Transport


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


def test_a_rediss_url_without_ssl_cert_reqs_verifies_the_server_certificate(
        settings: Settings) -> None:
    # Celery alone refuses such a URL at start ("Unrecoverable error: ValueError('A rediss://
    # URL must have parameter ssl_cert_reqs …')"); like redis-py, pitstop checks certificates.
    app = create_app(settings, "rediss://:pw@redis.internal:6379/0")
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert app.conf.redis_backend_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert app.backend.connparams["ssl_cert_reqs"] == ssl.CERT_REQUIRED  # builds, connects not
    with app.connection_for_write() as connection:
        assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


@pytest.mark.parametrize(("value", "expected"), [("none", ssl.CERT_NONE),
                                                 ("required", ssl.CERT_REQUIRED),
                                                 ("CERT_OPTIONAL", ssl.CERT_OPTIONAL)])
def test_ssl_cert_reqs_in_a_rediss_url_wins(settings: Settings, value: str,
                                            expected: ssl.VerifyMode) -> None:
    app = create_app(settings, f"rediss://:pw@redis.internal:6379/0?ssl_cert_reqs={value}")
    assert not app.conf.broker_use_ssl and not app.conf.redis_backend_use_ssl
    assert app.backend.connparams["ssl_cert_reqs"] == expected


def test_a_plain_redis_url_gets_no_tls(settings: Settings) -> None:
    assert ssl_options("redis://:pw@127.0.0.1:6379/0") is None
    app = create_app(settings, "redis://:pw@127.0.0.1:6379/0")
    assert not app.conf.broker_use_ssl and not app.conf.redis_backend_use_ssl


def test_a_worker_always_consumes_the_housekeeping_queue(settings: Settings) -> None:
    # Beat sends the reaper of lost runs to `default`: a fleet of `pitstop worker -Q linux`
    # would otherwise never reap a lost run, nor sweep orphans.
    assert worker_queues(settings, "linux") == ["linux", DEFAULT_QUEUE]
    assert worker_queues(settings, " gpu , linux,gpu") == ["gpu", "linux", DEFAULT_QUEUE]
    assert worker_queues(settings, "default,linux") == [DEFAULT_QUEUE, "linux"]
    assert worker_queues(settings) == list(dict.fromkeys([*settings.celery.queues,
                                                          DEFAULT_QUEUE]))
    with pytest.raises(ValidationError, match="names no queue"):
        worker_queues(settings, " , ")


def test_the_queues_a_worker_consumes_are_declared(settings: Settings) -> None:
    consumed = worker_queues(settings, "gpu")
    app = create_app(settings, "redis://127.0.0.1:1/0", queues=consumed)
    declared = {queue.name for queue in app.conf.task_queues}
    assert {"gpu", DEFAULT_QUEUE, settings.scripts.default_queue} <= declared


def test_redis_broker_urls_use_the_mended_transport(settings: Settings) -> None:
    app = create_app(settings, "redis://:pw@127.0.0.1:1/0")
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert connection.as_uri() == "redis://:**@127.0.0.1:1/0"  # URLs read as before
