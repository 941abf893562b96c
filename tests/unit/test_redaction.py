"""Secret redaction: known values, URL credentials, auth headers, secret-named pairs, structures."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pitstop.kernel.redaction import (
    DEFAULT_SECRET_NAME_PATTERNS,
    REDACTED,
    Redactor,
)


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(secrets=["hunter2-s3cret"])


# --- secret names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("GITHUB_TOKEN", True),
        ("github_token", True),
        ("PITSTOP_SLACK_WEBHOOK_URL", True),
        ("DB_PASSWORD", True),
        ("MYSQL_PASSWD", True),
        ("OPENAI_API_KEY", True),
        ("x-api-key", True),
        ("api.key", True),
        ("SSH_PRIVATE_KEY", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("Authorization", True),
        ("AUTHORIZATION", True),
        ("PROXY_AUTH", True),
        ("GIT_AUTHOR_TOKEN", True),
        ("AUTHORNAME", True),  # one word: AUTHOR is not a word of its own here
        ("Author", False),
        ("GIT_AUTHOR_NAME", False),
        ("GIT_AUTHOR_EMAIL", False),
        ("authorName", False),
        ("AUTHORS", False),
        ("XAUTHORITY", False),
        ("PATH", False),
        ("HOME", False),
        ("PITSTOP_REDIS_URL", False),
        ("tokens_per_second", True),
    ],
)
def test_is_secret_name(redactor: Redactor, name: str, expected: bool) -> None:
    assert redactor.is_secret_name(name) is expected


def test_default_patterns_cover_the_documented_names() -> None:
    for pattern in (
        "*TOKEN*",
        "*SECRET*",
        "*PASSWORD*",
        "*PASSWD*",
        "*API_KEY*",
        "*APIKEY*",
        "*PRIVATE_KEY*",
        "*CREDENTIAL*",
        "*WEBHOOK_URL*",
        "*AUTH*",
    ):
        assert pattern in DEFAULT_SECRET_NAME_PATTERNS


def test_custom_secret_names_replace_the_defaults() -> None:
    redactor = Redactor(secret_names=["MY_*"])
    assert redactor.is_secret_name("my_thing")
    assert not redactor.is_secret_name("GITHUB_TOKEN")
    assert redactor.redact_text("GITHUB_TOKEN=abc MY_X=y") == "GITHUB_TOKEN=abc MY_X=***"


def test_no_secret_names_disables_pair_redaction() -> None:
    redactor = Redactor(secret_names=())
    assert redactor.redact_text("TOKEN=abc") == "TOKEN=abc"
    assert redactor.redact({"token": "abc"}) == {"token": "abc"}


# --- redact_text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # known values, anywhere
        ("value hunter2-s3cret here", "value *** here"),
        ("xxhunter2-s3cretyy", "xx***yy"),
        # NAME=value and friends
        ("GITHUB_TOKEN=abc", "GITHUB_TOKEN=***"),
        ("export GITHUB_TOKEN=abc def", "export GITHUB_TOKEN=*** def"),
        ("DB_PASSWORD = abc; next", "DB_PASSWORD = ***; next"),
        ("password: hunter3", "password: ***"),
        ("--password=abc --user=bob", "--password=*** --user=bob"),
        ("--api-key=zz", "--api-key=***"),
        ("x-api-key: 123", "x-api-key: ***"),
        ("AWS_SECRET_ACCESS_KEY='abc def'", "AWS_SECRET_ACCESS_KEY='***'"),
        ('API_TOKEN="a \\" b"', 'API_TOKEN="***"'),
        ("https://h/cb?access_token=abc&x=1", "https://h/cb?access_token=***&x=1"),
        ('{"password": "hunter 3", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ('{"token":123}', '{"token":"***"}'),
        ('{"token": null, "auth": true}', '{"token": null, "auth": true}'),
        ('{"auth": abc}', '{"auth": "***"}'),
        ("{'secret': 'x y'}", "{'secret': '***'}"),
        ("PASSWORD=", "PASSWORD="),
        ('PASSWORD=""', 'PASSWORD=""'),
        # auth headers and bearer tokens
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ('curl -H "Authorization: Basic dXNlcjpwYXNz" x', 'curl -H "Authorization: Basic ***" x'),
        ("authorization=Token abc", "authorization=Token ***"),
        ("sent bearer eyJhbGciOiJIUzI1.x.y ok", "sent bearer *** ok"),
        ("uses a bearer token in headers", "uses a bearer token in headers"),
        # URL credentials
        ("https://user:pa55@host/x", "https://user:***@host/x"),
        (
            "git clone https://x-access-token:ghs_abc@github.com/o/r",
            "git clone https://x-access-token:***@github.com/o/r",
        ),
        ("https://ghp_abcdef123@github.com/o/r", "https://***@github.com/o/r"),
        ("postgres://user:p@ss@db:5432/x", "postgres://user:***@db:5432/x"),
        ("ssh://git@github.com/o/r", "ssh://git@github.com/o/r"),
        ("https://user:@host", "https://user:@host"),
        # things that must stay
        ("Author: Jane Doe <jane@example.org>", "Author: Jane Doe <jane@example.org>"),
        ("GIT_AUTHOR_NAME=Jane", "GIT_AUTHOR_NAME=Jane"),
        ("at 12:30 a=b key: value", "at 12:30 a=b key: value"),
        ("mail jane@example.org", "mail jane@example.org"),
        ("", ""),
    ],
)
def test_redact_text(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact_text(text) == expected


def test_redis_url_with_empty_user() -> None:
    # redis://:password@host is how redis-py URLs carry a password
    assert Redactor().redact_text("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"


def test_longest_secret_wins() -> None:
    redactor = Redactor(secrets=["abcd", "abcdefgh"])
    assert redactor.redact_text("xabcdefghx") == "x***x"


def test_short_and_star_only_values_are_not_secrets() -> None:
    redactor = Redactor(secrets=["abc", "****", "  ", "abcd"])
    assert redactor.secrets == frozenset({"abcd"})
    assert redactor.redact_text("abc **** abcd") == "abc **** ***"


def test_min_secret_length_is_configurable() -> None:
    assert Redactor(secrets=["abc"], min_secret_length=3).redact_text("xabcx") == "x***x"


def test_add_secret_rebuilds() -> None:
    redactor = Redactor()
    assert redactor.redact_text("ZZ-value-ZZ") == "ZZ-value-ZZ"
    redactor.add_secret("-value-")
    assert redactor.redact_text("ZZ-value-ZZ") == "ZZ***ZZ"


def test_multiline_secret_lines_are_secrets_too() -> None:
    key = (
        "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----"
    )
    redactor = Redactor(secrets=[key])
    out = redactor.redact_text("line: AQEFAASCBKcwggSjAgEAAoIB")
    assert "AQEFAASCBKcwggSjAgEAAoIB" not in out
    assert redactor.redact_text(f"k={key}!") == "k=***!"


def test_secret_with_surrounding_whitespace_is_found_stripped() -> None:
    redactor = Redactor(secrets=["tok-123456\n"])
    assert redactor.redact_text("got tok-123456 back") == "got *** back"


def test_regex_metacharacters_in_secrets() -> None:
    redactor = Redactor(secrets=["a.b*c(d)[e]$"])
    assert redactor.redact_text("xa.b*c(d)[e]$y aXbbc(d)[e]$") == "x***y aXbbc(d)[e]$"


def test_replacement_cannot_splice_a_secret_back_together() -> None:
    redactor = Redactor(secrets=["a***", "qqqq"])
    # "aqqqq" -> "a***", which is itself a secret
    out = redactor.redact_text("aqqqq")
    assert "a***" not in out and "qqqq" not in out


# --- from_environ ------------------------------------------------------------------------------


def test_from_environ_takes_values_of_secret_named_variables() -> None:
    env = {
        "GITHUB_TOKEN": "ghp_1234567890",
        "PITSTOP_SLACK_WEBHOOK_URL": "https://hooks.example/T/B/X",
        "HOME": "/home/ci",
        "FEATURE_AUTH_ENABLED": "true",
        "DEPLOY_KEY_PASSWORD": "abc",
    }
    redactor = Redactor.from_environ(env, extra_names=["HOME"], extra_secrets=["extra-secret"])
    text = "ghp_1234567890 https://hooks.example/T/B/X /home/ci true abc extra-secret"
    assert redactor.redact_text(text) == "*** *** *** true abc ***"


def test_from_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITSTOP_TEST_SECRET", "value-from-env-42")
    assert Redactor.from_environ().redact_text("x value-from-env-42") == "x ***"


# --- redact (structures) -------------------------------------------------------------------------


def test_redact_structures_deep_copies(redactor: Redactor) -> None:
    value = {
        "token": "abc",
        "password": None,
        "api_key": "",
        "auth_enabled": True,
        "credentials": {"user": "bob"},
        "nested": {"list": ["hunter2-s3cret", ("x", "GITHUB_TOKEN=abc")], "n": 3},
        "hunter2-s3cret": "key holding a secret",
    }
    out = redactor.redact(value)
    assert out == {
        "token": REDACTED,
        "password": None,
        "api_key": "",
        "auth_enabled": True,
        "credentials": REDACTED,
        "nested": {"list": [REDACTED, ("x", "GITHUB_TOKEN=***")], "n": 3},
        REDACTED: "key holding a secret",
    }
    assert value["token"] == "abc"
    assert value["nested"]["list"][0] == "hunter2-s3cret"  # type: ignore[index]


def test_redact_passes_other_types_through(redactor: Redactor) -> None:
    obj = object()
    assert redactor.redact(obj) is obj
    assert redactor.redact(5) == 5
    assert redactor.redact(None) is None


# --- properties ----------------------------------------------------------------------------------

_SECRET = st.text(alphabet=st.characters(codec="utf-8"), min_size=4, max_size=40).filter(
    lambda s: s.strip().strip("*") != ""
)
_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


@settings(max_examples=300, deadline=None)
@given(secret=_SECRET, before=_TEXT, after=_TEXT)
def test_known_secret_never_survives(secret: str, before: str, after: str) -> None:
    redactor = Redactor(secrets=[secret])
    assert secret not in redactor.redact_text(before + secret + after)


@settings(max_examples=200, deadline=None)
@given(
    secrets=st.lists(_SECRET, min_size=1, max_size=5),
    pieces=st.lists(_TEXT, min_size=1, max_size=6),
)
def test_many_secrets_never_survive(secrets: list[str], pieces: list[str]) -> None:
    redactor = Redactor(secrets=secrets)
    text = "".join(p + secrets[i % len(secrets)] for i, p in enumerate(pieces))
    out = redactor.redact_text(text)
    for secret in secrets:
        assert secret not in out


_VALUE = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/+=.-",
    min_size=6,
    max_size=30,
).filter(
    # JSON literals stay; an auth scheme word is kept in front of the value it introduces
    lambda v: v.lower() not in {"null", "true", "bearer", "basic", "digest", "negotiate", "apikey"}
)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(
        ["GITHUB_TOKEN", "db_password", "x-api-key", "AWS_SECRET", "Authorization"]
    ),
    value=_VALUE,
    sep=st.sampled_from(["=", ": ", " = ", ":"]),
    before=st.sampled_from(["", "export ", "env: ", "{", "--", "a;"]),
    after=st.sampled_from(["", " next", ";x", "\n", "&q=1"]),
)
def test_secret_named_values_never_survive(
    name: str, value: str, sep: str, before: str, after: str
) -> None:
    text = f"{before}{name}{sep}{value}{after}"
    out = Redactor().redact_text(text)
    assert value not in out
    assert name in out


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["https", "http", "redis", "postgres", "git+https"]),
    user=st.text(alphabet="abcxyz_-0123", min_size=1, max_size=10),
    password=st.text(alphabet="abcdefXYZ0123456789_+=.-~!$%:", min_size=6, max_size=30),
)
def test_url_passwords_never_survive(scheme: str, user: str, password: str) -> None:
    assume(password not in f"clone {scheme}://{user}:***@host.example/x ok")
    out = Redactor().redact_text(f"clone {scheme}://{user}:{password}@host.example/x ok")
    assert password not in out
    assert f"{scheme}://{user}:***@host.example/x" in out


@settings(max_examples=100, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_redact_output_is_json_serializable_like_the_input(value: object) -> None:
    json.dumps(Redactor(secrets=["zzzz"]).redact(value))


# --- speed ---------------------------------------------------------------------------------------


def test_plain_lines_are_cheap() -> None:
    redactor = Redactor.from_environ({"GITHUB_TOKEN": "ghp_" + "x" * 36})
    lines = [f"test_module.py::test_case_{i} PASSED [{i}%] in 0.{i}s" for i in range(2000)]
    start = time.perf_counter()
    for _ in range(5):
        for line in lines:
            redactor.redact_text(line)
    per_line = (time.perf_counter() - start) / 10_000
    # ~1-2 us measured; the bound only catches a pass that lost its guard (tens of us)
    assert per_line < 25e-6


def test_flag_values_of_secret_named_variables_are_not_secrets() -> None:
    redactor = Redactor()
    redactor.add_secrets_from({"FEATURE_AUTH_ENABLED": "true", "API_TOKEN": "tok-123456"})
    assert redactor.redact_text("auth: true, token tok-123456") == "auth: true, token ***"


def test_a_padded_secret_keeps_the_whitespace_around_it() -> None:
    redactor = Redactor()
    redactor.add_secret("tok-123456\n")
    assert redactor.redact_text("a tok-123456\nnext") == "a ***\nnext"


# --- more secret names, and the names CI uses that must stay readable ----------------------------

MORE_SECRET_NAMES = [
    "DB_PASS", "db-pass", "SMTP_PASS", "MYSQL_PWD", "mysql.pwd", "SSH_KEY", "SIGNING_KEY",
    "deploy-key", "LICENSE_KEY", "ENCRYPTION_KEY", "SENTRY_DSN", "DATABASE_DSN", "dsn", "GH_PAT",
    "AZURE_DEVOPS_PAT", "NPM_AUTH", "GIT_SSH_KEY_TOKEN",
]
ORDINARY_CI_NAMES = [
    "PWD", "OLDPWD", "PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "GITHUB_ACTION_PATH",
    "PATCH_VERSION", "KEYBOARD", "XKB_KEYBOARD_LAYOUT", "KEY", "key", "KEY_ID", "CACHE_KEY",
    "cache-key", "SSH_PUBLIC_KEY", "PRIMARY_KEY",
    "PASS", "PASSED", "TESTS_PASSED", "BYPASS", "XPASS",  # automake's "PASS: test_x" lines
    "COMPAT", "HOME", "GITHUB_SHA", "GITHUB_WORKSPACE", "RUNNER_TEMP",
]


def test_more_secret_names_without_over_matching(redactor: Redactor) -> None:
    assert [n for n in MORE_SECRET_NAMES if not redactor.is_secret_name(n)] == []
    assert [n for n in ORDINARY_CI_NAMES if redactor.is_secret_name(n)] == []


def test_new_secret_names_are_learnt_from_the_environment() -> None:
    redactor = Redactor.from_environ({"DB_PASS": "pg-pass-1234", "SENTRY_DSN": "sentry-dsn-42",
                                      "GH_PAT": "github_pat_abcdef", "PWD": "/home/ci/work",
                                      "OLDPWD": "/home/ci"})
    out = redactor.redact_text("pg-pass-1234 github_pat_abcdef sentry-dsn-42 in /home/ci/work")
    assert out == "*** *** *** in /home/ci/work"
    for line in ["PASS: test_parser", "XPASS: test_flaky", "# PASS:  12",
                 "Passed: 10, Failed: 0", "cwd PWD=/home/ci/work OLDPWD=/home/ci",
                 "PATH=/usr/bin:/bin", "cache_key: linux-npm-abc", "db_pass: hunter22"]:
        expected = "db_pass: ***" if line.startswith("db_pass") else line
        assert redactor.redact_text(line) == expected


# --- redact_args: values of secret-named flags ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--token", "tok-abc123", "--verbose"], ["--token", "***", "--verbose"]),
        (["--password", "hunter-22"], ["--password", "***"]),
        (["--api-key", "k-9876543"], ["--api-key", "***"]),
        (["--api_key", "k-9876543"], ["--api_key", "***"]),
        (["--token=tok-abc123"], ["--token=***"]),
        (["-token", "tok-abc123"], ["-token", "***"]),  # Go's flag package
        (["--db-pass", "pg-secret-1"], ["--db-pass", "***"]),
        (["--pass", "pg-secret-1"], ["--pass", "***"]),
        (["--pat", "github_pat_xyz"], ["--pat", "***"]),
        (["DB_PASS=pg-secret-1", "all"], ["DB_PASS=***", "all"]),
        (["build", "--", "--token", "tok-abc123"], ["build", "--", "--token", "***"]),
        (["--release", "--user", "bob"], ["--release", "--user", "bob"]),
        (["--token"], ["--token"]),
        (["--token", "--"], ["--token", "--"]),
        (["--no-auth", "target"], ["--no-auth", "target"]),
        (["--password-stdin", "ghcr.io"], ["--password-stdin", "ghcr.io"]),
        (["--token-file", "/run/secrets/t"], ["--token-file", "***"]),
        (["https://x-access-token:ghs_abc@github.com/o/r"],
         ["https://x-access-token:***@github.com/o/r"]),
    ],
)
def test_redact_args_hides_values_of_secret_named_flags(args: list[str],
                                                        shown: list[str]) -> None:
    assert Redactor().redact_args(args) == shown


def test_redact_args_learns_the_values_so_output_is_redacted_too() -> None:
    redactor = Redactor()
    redactor.redact_args(["--token", "tok-abc123", "--password=hunter-22", "-api-key",
                          "k-9876543", "MYSQL_PWD=my-pwd-99"])
    line = "using tok-abc123, hunter-22, k-9876543 and my-pwd-99"
    assert redactor.redact_text(line) == "using ***, ***, *** and ***"
    assert {"tok-abc123", "hunter-22", "k-9876543", "my-pwd-99"} <= redactor.secrets


def test_redact_args_does_not_learn_what_is_not_a_secret() -> None:
    redactor = Redactor()
    shown = redactor.redact_args(["--token-file", "/run/secrets/t", "--auth", "true",
                                  "--token", "--verbose", "--password-stdin", "ghcr.io"])
    assert shown == ["--token-file", "***", "--auth", "***", "--token", "***",
                     "--password-stdin", "ghcr.io"]
    assert redactor.secrets == frozenset()
    assert redactor.redact_text("/run/secrets/t true --verbose ghcr.io") == (
        "/run/secrets/t true --verbose ghcr.io")


def test_redact_args_hides_a_learnt_value_wherever_it_appears() -> None:
    assert Redactor().redact_args(["--token", "tok-abc123", "--url=https://h/?t=tok-abc123"]) == [
        "--token", "***", "--url=https://h/?t=***"]
