from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.kernel.errors import ConfigError, ScriptError
from pitstop.kernel.sealing import KEY_FILE, Sealer, generate_key, key_file_sealer
from pitstop.kernel.settings import load_settings


def test_round_trip_and_no_plaintext() -> None:
    sealer = Sealer(generate_key())
    token = sealer.seal({"DEPLOY_TOKEN": "canary-123"})
    assert "canary-123" not in token
    assert sealer.unseal(token) == {"DEPLOY_TOKEN": "canary-123"}


def test_another_key_cannot_open_it() -> None:
    token = Sealer(generate_key()).seal({"A_TOKEN": "x"})
    with pytest.raises(ScriptError, match="cannot decrypt"):
        Sealer(generate_key()).unseal(token)


def test_a_malformed_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="keygen"):
        Sealer("not-a-key")


def test_the_state_dir_the_key_file_creates_is_private(tmp_path: Path) -> None:
    state = tmp_path / "project" / ".state"
    assert key_file_sealer(state, create=True) is not None
    assert state.stat().st_mode & 0o777 == 0o700


def test_key_file_is_created_once_private(tmp_path: Path) -> None:
    assert key_file_sealer(tmp_path, create=False) is None
    first = key_file_sealer(tmp_path, create=True)
    second = key_file_sealer(tmp_path, create=False)
    assert first is not None and second is not None
    assert second.unseal(first.seal({"K": "v"})) == {"K": "v"}
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o077 == 0
    key = (tmp_path / KEY_FILE).read_bytes()
    again = key_file_sealer(tmp_path, create=True)  # never regenerated once it exists
    assert again is not None and again.unseal(first.seal({"K": "v"})) == {"K": "v"}
    assert (tmp_path / KEY_FILE).read_bytes() == key
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary left behind


def test_settings_choose_the_configured_key_over_the_file(tmp_path: Path) -> None:
    key = generate_key()
    external = load_settings(tmp_path, environ={"PITSTOP_REDIS_URL": "redis://h:1/0",
                                                "PITSTOP_STATE_DIR": str(tmp_path / "s")})
    assert external.sealer() is None  # a shared key must be configured for a real Redis
    key_file_sealer(tmp_path / "s", create=True)  # a key file that must lose to the setting
    configured = load_settings(tmp_path, environ={"PITSTOP_SECRET_KEY": key,
                                                  "PITSTOP_STATE_DIR": str(tmp_path / "s")})
    sealer = configured.sealer()
    assert sealer is not None
    assert Sealer(key).unseal(sealer.seal({"K": "v"})) == {"K": "v"}
    embedded = load_settings(tmp_path, environ={"PITSTOP_STATE_DIR": str(tmp_path / "s")})
    from_file = embedded.sealer()
    assert from_file is not None
    with pytest.raises(ScriptError):
        from_file.unseal(sealer.seal({"K": "v"}))


BOUND = {"run_id": "r1", "script": "scripts/deploy.sh", "args": ["--prod"], "cwd": None}


@pytest.mark.parametrize("other", [
    {**BOUND, "run_id": "r2"},                 # replayed into another run
    {**BOUND, "script": "scripts/hello.sh"},   # handed to another script
    {**BOUND, "args": ["--prod", "--evil"]},   # with other arguments
    {**BOUND, "cwd": "/tmp"},
    None,                                      # into a message that claims no binding
])
def test_a_token_opens_only_for_what_it_was_sealed_for(other: dict[str, object] | None) -> None:
    sealer = Sealer(generate_key())
    token = sealer.seal({"DEPLOY_TOKEN": "canary-1"}, bound_to=BOUND)
    assert sealer.unseal(token, bound_to=dict(reversed(BOUND.items()))) == {
        "DEPLOY_TOKEN": "canary-1"}  # key order does not matter
    with pytest.raises(ScriptError, match="sealed for another run") as err:
        sealer.unseal(token, bound_to=other)
    assert "canary-1" not in str(err.value)
