"""config/deployments.yaml: the shipped file, and mistakes named by file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.deploy.config import check_environment_name, check_version, load_deployments, substitute
from pitstop.kernel.errors import ConfigError, ValidationError
from tests.support import ROOT

DEPLOY = '{script: deploy.sh, args: ["{version}"]}'


def test_the_shipped_file_loads_with_approval_for_production() -> None:
    config = load_deployments(ROOT / "config")
    assert set(config.environments) == {"staging", "production"}
    production = config.environment("production")
    assert production.approval.required and production.approval.approvers
    assert not config.environment("staging").approval.required
    assert all(env.rollback is not None and env.smoke for env in config.environments.values())
    with pytest.raises(ValidationError, match="known: production, staging"):
        config.environment("qa")


@pytest.mark.parametrize(("body", "where", "message"), [
    ("  staging:\n    deploy: {script: d.sh, args: ['{tag}']}\n",
     "deployments.yaml:3 at environments.staging.deploy.args", "unknown placeholder {tag}"),
    ("  staging:\n    deploy: " + DEPLOY + "\n    smoke:\n      - {name: x, script: c.sh, "
     "http: {url: 'http://h/'}}\n", "at environments.staging.smoke[0]", "exactly one"),
    ("  staging:\n    deploy: " + DEPLOY + "\n    approval: {required: true}\n",
     "at environments.staging.approval", "list who may approve"),
    ("  Staging:\n    deploy: " + DEPLOY + "\n", "at environments", "lower-case"),
    ("  staging:\n    deploy: " + DEPLOY + "\n    smoke:\n      - name: h\n        http: "
     "{url: 'ftp://h/'}\n", ":6 at environments.staging.smoke[0].http.url", "http:// or https://"),
    ("  staging:\n    deploy: " + DEPLOY + "\n    smoke:\n      - name: h\n        http: "
     "{url: 'http://h/', status: 999}\n", "smoke[0].http.status", "100-599"),
    ("  staging:\n    deploy: " + DEPLOY + "\n    smoke:\n      - name: h\n        http: "
     "{url: 'http://h/', body_match: '(unclosed'}\n", "smoke[0].http.body_match",
     "not a regular expression"),
    ("  staging:\n    deploy: " + DEPLOY + "\n    smoke:\n      - {name: a, script: a.sh}\n"
     "      - {name: a, script: b.sh}\n", "at environments.staging.smoke", "unique: a"),
])
def test_mistakes_name_the_file_line_and_key(tmp_path: Path, body: str, where: str,
                                             message: str) -> None:
    (tmp_path / "deployments.yaml").write_text("environments:\n" + body)
    with pytest.raises(ConfigError) as error:
        load_deployments(tmp_path)
    assert where in str(error.value)
    assert message in str(error.value)
    assert error.value.exit_code == 2


def test_a_missing_file_says_what_to_create(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no deployments configured"):
        load_deployments(tmp_path)


@pytest.mark.parametrize("version", ["--rm", "../x", "a b", "", "v1;rm", "x" * 200])
def test_versions_that_could_be_options_or_paths_are_refused(version: str) -> None:
    with pytest.raises(ValidationError):
        check_version(version)


def test_good_names_and_versions_pass_and_placeholders_substitute() -> None:
    assert check_version("1.4.2+build.7") == "1.4.2+build.7"
    assert check_environment_name("eu-west_1") == "eu-west_1"
    with pytest.raises(ValidationError, match="segment of deploy"):
        check_environment_name("prod.eu")
    values = {"version": "1.2", "env": "staging", "previous": ""}
    assert substitute("{env}/{version}/{other}", values) == "staging/1.2/{other}"
    assert substitute('"v": "{version}"', values, literal=True) == '"v": "1\\.2"'
