"""``sentinel://`` URLs: parsing (errors name redis.url and never the password), what redis-py,
kombu and Celery are given, and settings accepting the scheme."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from pitstop.connection.connect import client_for_url, describe_url
from pitstop.connection.sentinel import SentinelURL, is_sentinel_url
from pitstop.kernel.errors import ConfigError
from pitstop.kernel.settings import load_settings
from workers.app import create_app


def test_a_full_url_parses_into_its_parts() -> None:
    url = SentinelURL.parse("sentinel://app:s3cr%40t@10.0.0.1:26380,[::1],sentinel-c/primary-a/3"
                            "?sentinel_password=sp")
    assert url.sentinels == (("10.0.0.1", 26380), ("::1", 26379), ("sentinel-c", 26379))
    assert (url.service, url.db, url.username, url.password) == ("primary-a", 3, "app", "s3cr@t")
    assert url.sentinel_password == "sp" and url.sentinel_username is None
    assert url.describe() == "sentinel://10.0.0.1:26380,[::1]:26379,sentinel-c:26379/primary-a/3"


def test_a_lone_userinfo_is_the_password_and_db_defaults_to_zero() -> None:
    url = SentinelURL.parse("SENTINEL://pw@h:1/svc")
    assert (url.username, url.password, url.db) == (None, "pw", 0)
    assert is_sentinel_url("Sentinel://h/svc") and not is_sentinel_url("redis://h:1/0")


@pytest.mark.parametrize(("url", "says"), [
    ("sentinel://h:1", "no service name"),
    ("sentinel://:pw@/svc", "no sentinel address"),
    ("sentinel://h:port/svc", "no valid port"),
    ("sentinel://h:70000/svc", "no valid port"),
    ("sentinel://:26379/svc", "has no host"),
    ("sentinel://h:1/svc/zero", "database 'zero' is not a number"),
    ("sentinel://h:1/svc/0/extra", "more than /service/db"),
    ("sentinel://h:1/svc?ssl=true", "unknown option 'ssl'"),
    ("sentinel://h:1/svc#frag", "fragment"),
    ("redis://h:1/0", "not a sentinel:// URL"),
])
def test_a_bad_url_is_a_config_error_naming_the_setting_not_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SentinelURL.parse(url.replace("//", "//:hunter2@", 1) if "@" not in url else url)
    message = str(caught.value)
    assert says in message and message.startswith("redis.url:")
    assert "hunter2" not in message and "pw" not in message.split("expected", maxsplit=1)[0]


def test_kombu_and_celery_get_their_own_form_and_the_service_name() -> None:
    url = SentinelURL.parse("sentinel://:p%3Aw@a:1,b:2/svc/2?sentinel_password=sp")
    assert url.kombu_url() == "sentinel://:p%3Aw@a:1/2;sentinel://:p%3Aw@b:2/2"
    options = url.transport_options()
    assert options["master_name"] == "svc"
    assert options["sentinel_kwargs"]["password"] == "sp"
    assert options["sentinel_kwargs"]["socket_timeout"] > 0  # a stopped sentinel cannot hang us


def test_the_celery_app_uses_the_sentinel_transport_and_result_backend(tmp_path: object) -> None:
    settings = load_settings(environ={"PITSTOP_REDIS_URL": "sentinel://:pw@127.0.0.1:1,127.0.0.1:2/svc/1",
                                      "PITSTOP_HOME": str(tmp_path)})
    app = create_app(settings, "sentinel://:pw@127.0.0.1:1,127.0.0.1:2/svc/1")
    assert app.conf.broker_url == "sentinel://:pw@127.0.0.1:1/1;sentinel://:pw@127.0.0.1:2/1"
    assert app.conf.broker_transport_options["master_name"] == "svc"
    assert app.conf.result_backend_transport_options["master_name"] == "svc"
    assert type(app.backend).__name__ == "SentinelBackend"
    with app.connection_for_write() as connection:
        assert type(connection.transport).__name__ == "SentinelTransport"
        assert connection.transport.__module__ == "workers.transport"  # the mended one
    assert app.pitstop_redis_url.startswith("sentinel://")


def test_clients_for_a_sentinel_url_ask_the_sentinels_for_the_primary() -> None:
    client = client_for_url("sentinel://:pw@127.0.0.1:1/svc/4", socket_connect_timeout=1)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "svc" and pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["password"] == "pw"
    assert describe_url("sentinel://:pw@127.0.0.1:1/svc/4") == "sentinel://127.0.0.1:1/svc/4"


def test_settings_accept_the_scheme_and_still_refuse_others() -> None:
    ok = load_settings(environ={"PITSTOP_REDIS_URL": "sentinel://h:1/svc"})
    assert ok.redis.url is not None
    with pytest.raises(ConfigError, match="sentinel://"):
        load_settings(environ={"PITSTOP_REDIS_URL": "http://h:1/svc"})
