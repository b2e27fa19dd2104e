"""Credentials and settings: where they come from, and that the secret never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotify_ingest.config import (
    DEFAULT_API_BASE,
    DEFAULT_TOKEN_URL,
    ClientSettings,
    Credentials,
    check_endpoint_url,
    is_loopback_host,
)
from spotify_ingest.errors import CredentialsError, UsageError

SECRET = "s3cr3t-value-that-must-never-print"
_VARS = ("SPOTIFY_CLIENT_ID", "SPOTIFY_CLIENT_SECRET", "CLIENT_ID", "CLIENT_SECRET")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (*_VARS, "SPOTIFY_API_BASE", "SPOTIFY_TOKEN_URL", "SPOTIFY_READ_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_reads_spotify_names_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", "abcdef123456")
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", SECRET)
    creds = Credentials.from_env(env_file=None)
    assert creds.client_id == "abcdef123456"
    assert creds.secret_value() == SECRET


def test_reads_seed_names_from_dotenv_file(tmp_path: Path) -> None:
    env = tmp_path / "my.env"
    env.write_text(f'CLIENT_ID=seedid0001\nCLIENT_SECRET="{SECRET}"\nUNRELATED=1\n')
    creds = Credentials.from_env(env_file=env)
    assert (creds.client_id, creds.secret_value()) == ("seedid0001", SECRET)


def test_default_env_file_is_dotenv_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"SPOTIFY_CLIENT_ID=fromfile01\nSPOTIFY_CLIENT_SECRET={SECRET}\n"
    )
    assert Credentials.from_env().client_id == "fromfile01"


def test_environment_wins_over_file_and_spotify_names_win_over_seed_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_text("SPOTIFY_CLIENT_ID=fileid\nCLIENT_ID=seedid\nSPOTIFY_CLIENT_SECRET=filesecret\n")
    assert Credentials.from_env(env_file=env).client_id == "fileid"
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", "envsecret")
    assert Credentials.from_env(env_file=env).secret_value() == "envsecret"


def test_empty_value_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", "abcdef")
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", "   ")
    with pytest.raises(CredentialsError):
        Credentials.from_env(env_file=None)


@pytest.mark.parametrize(
    ("present", "missing_word"),
    [({}, "client id and client secret"), ({"CLIENT_ID": "abc123"}, "client secret")],
)
def test_missing_credentials_one_line_error_naming_variables_and_place(
    monkeypatch: pytest.MonkeyPatch, present: dict[str, str], missing_word: str
) -> None:
    for key, value in present.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(CredentialsError) as info:
        Credentials.from_env(env_file="missing.env")
    message = str(info.value)
    assert "\n" not in message
    assert missing_word in message
    assert "SPOTIFY_CLIENT_ID" in message and "SPOTIFY_CLIENT_SECRET" in message
    assert "missing.env" in message
    assert info.value.exit_code == 3


def test_secret_never_in_repr_str_or_dump() -> None:
    creds = Credentials(client_id="abcdefghijkl", client_secret=SECRET)  # type: ignore[arg-type]
    shown = [repr(creds), str(creds), str(creds.model_dump()), creds.model_dump_json()]
    for text in shown:
        assert SECRET not in text
    assert "abcdefghijkl" not in repr(creds)
    assert "abcd…" in repr(creds)


def test_validation_error_does_not_echo_secret() -> None:
    with pytest.raises(ValueError) as info:
        Credentials(client_id="", client_secret=SECRET)  # type: ignore[arg-type]
    assert SECRET not in str(info.value)


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ClientSettings.from_env(env_file=None)
    assert settings.api_base == DEFAULT_API_BASE
    assert settings.token_url == DEFAULT_TOKEN_URL
    monkeypatch.setenv("SPOTIFY_API_BASE", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("SPOTIFY_READ_TIMEOUT", "3.5")
    settings = ClientSettings.from_env(env_file=None)
    assert settings.api_base == "http://127.0.0.1:8000/v1"
    assert settings.timeout().read == 3.5
    assert ClientSettings.from_env(env_file=None, read_timeout=1.0).timeout().read == 1.0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.5.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("api.spotify.com", False),
        ("10.0.0.1", False),
        ("localhost.evil.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_plain_http_only_for_loopback() -> None:
    assert check_endpoint_url("http://127.0.0.1:9/v1/", what="x") == "http://127.0.0.1:9/v1"
    assert check_endpoint_url("https://api.spotify.com/v1", what="x")
    with pytest.raises(UsageError):
        check_endpoint_url("http://api.spotify.com/v1", what="API base URL")
    with pytest.raises(UsageError):
        check_endpoint_url("ftp://127.0.0.1/v1", what="API base URL")
    with pytest.raises(UsageError):
        check_endpoint_url("https://user:pw@api.spotify.com/v1", what="API base URL")
    assert check_endpoint_url("http://sim.test/v1", what="x", allow_plain_http=True)


def test_run_timeouts_from_environment_and_every_timeout_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = ClientSettings.from_env(env_file=None)
    assert defaults.no_answer_timeout < 60.0  # exit 69 within a minute by default
    assert defaults.outage_timeout >= defaults.no_answer_timeout
    monkeypatch.setenv("SPOTIFY_NO_ANSWER_TIMEOUT", "10")
    monkeypatch.setenv("SPOTIFY_OUTAGE_TIMEOUT", "120")
    settings = ClientSettings.from_env(env_file=None)
    assert (settings.no_answer_timeout, settings.outage_timeout) == (10.0, 120.0)
    assert ClientSettings.from_env(env_file=None, no_answer_timeout=3.0).no_answer_timeout == 3.0
    monkeypatch.setenv("SPOTIFY_CONNECT_TIMEOUT", "1e9")
    with pytest.raises(UsageError, match=r"^SPOTIFY_CONNECT_TIMEOUT in the environment "):
        ClientSettings.from_env(env_file=None)
