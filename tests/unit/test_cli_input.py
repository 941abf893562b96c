"""Parsing of CLI input (``--env``, ``--data``): clear errors that never echo secret values."""

from __future__ import annotations

import pytest

from pitstop.cli.events import parse_data
from pitstop.cli.runs import parse_env
from pitstop.kernel.errors import ValidationError


@pytest.mark.parametrize("pair", ["DEPLOY-TOKEN=ghp_s3cretvalue", "BAD NAME=ghp_s3cretvalue",
                                  "=ghp_s3cretvalue", "X.Y=ghp_s3cretvalue=more"])
def test_a_bad_env_name_is_named_without_its_value(pair: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_env((pair,))
    message = str(caught.value)
    assert "ghp_s3cretvalue" not in message
    assert repr(pair.partition("=")[0]) in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("depth", "fragment"), [(600, "nested deeper than 64 levels"),
                                                 (100_000, "nested too deeply")])
def test_deeply_nested_data_is_a_validation_error(depth: int, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        parse_data('{"x": ' + "[" * depth + "]" * depth + "}", ())
