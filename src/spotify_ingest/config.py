"""Credentials and client settings, from the environment or a ``.env`` file.

Credentials come from ``SPOTIFY_CLIENT_ID`` / ``SPOTIFY_CLIENT_SECRET`` or, for compatibility with
the seed script, ``CLIENT_ID`` / ``CLIENT_SECRET``. Precedence, highest first: the process
environment, then the ``.env`` file; within one source the ``SPOTIFY_`` names win over the bare
ones. Empty values count as missing.

The secret is a :class:`pydantic.SecretStr` and never appears in ``repr``/``str``, in a dump, in a
log record or in an exception message; ``repr`` shows the client id masked (``'ab12…'``).

The ``.env`` file may be in any encoding: a byte-order mark names UTF-8, -16 or -32; without one
it is read as UTF-8 if it decodes as such, else as Latin-1, which maps every byte (a Latin-1 ``é``
in a comment). The default ``.env`` may be absent; a file named with ``--env-file`` must exist
(:func:`check_env_file`).

Endpoint URLs and timeouts live in :class:`ClientSettings` (``SPOTIFY_API_BASE``,
``SPOTIFY_TOKEN_URL``, ``SPOTIFY_CONNECT_TIMEOUT`` ...; ``crawl`` flags override the timeouts).
Plain ``http://`` is accepted only for loopback hosts (the simulator); TLS certificate
verification is never switched off.
"""

from __future__ import annotations

import codecs
import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import CredentialsError, UsageError
from .reachability import DEFAULT_NO_ANSWER_TIMEOUT, DEFAULT_OUTAGE_TIMEOUT

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_TOKEN_URL",
    "ClientSettings",
    "Credentials",
    "check_env_file",
    "env_file_encoding",
    "is_loopback_host",
    "mask_client_id",
]

DEFAULT_API_BASE = "https://api.spotify.com/v1"
DEFAULT_TOKEN_URL = "https://accounts.spotify.com/api/token"

#: Upper bounds of the timeouts (seconds): one try's, and a run's wait for an API that is silent.
MAX_TRY_TIMEOUT = 600.0
MAX_RUN_TIMEOUT = 86_400.0

_ID_VARS = ("SPOTIFY_CLIENT_ID", "CLIENT_ID")
_SECRET_VARS = ("SPOTIFY_CLIENT_SECRET", "CLIENT_SECRET")


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: it starts with UTF-16 LE's mark
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def check_env_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`UsageError` unless ``path`` is a readable file (an ``--env-file`` named)."""
    env_path = Path(path)
    if not env_path.exists() or env_path.is_dir():  # /dev/null is fine: no settings
        what = "is a directory" if env_path.exists() else "does not exist"
        raise UsageError(f"--env-file {env_path} {what}: give the file with your credentials")
    if not os.access(env_path, os.R_OK):
        raise UsageError(f"--env-file {env_path} is not readable by this user")


def env_file_encoding(path: Path | None) -> str | None:
    """The encoding to read the dotenv file ``path`` with (module docstring); None: no file."""
    if path is None or not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def mask_client_id(client_id: str) -> str:
    """The first four characters of a client id, then an ellipsis: enough to tell apps apart."""
    if len(client_id) <= 4:
        return "…"
    return client_id[:4] + "…"


class Credentials(BaseModel):
    """A client id and secret for the client-credentials flow.

    Build one with :meth:`from_env`, or directly (``Credentials(client_id=..., client_secret=...)``,
    a plain ``str`` secret is wrapped in ``SecretStr``). Only :meth:`secret_value` reveals the
    secret; it exists for the token request and nothing else.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    client_id: str = Field(min_length=1)
    client_secret: SecretStr

    @field_validator("client_id", mode="before")
    @classmethod
    def _strip_id(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("client_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("client secret is empty")
        return SecretStr(value.get_secret_value().strip())

    @property
    def masked_id(self) -> str:
        return mask_client_id(self.client_id)

    def secret_value(self) -> str:
        return self.client_secret.get_secret_value()

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.masked_id!r}, client_secret=SecretStr('**********'))"

    def __str__(self) -> str:
        return f"client id {self.masked_id}"

    @classmethod
    def from_env(cls, env_file: str | os.PathLike[str] | None = ".env") -> Credentials:
        """Read the credentials from the environment, then from ``env_file`` (if it exists).

        Raises :class:`CredentialsError` (one line, naming the variables to set and where) when
        either value is missing or empty.
        """
        env_path = Path(env_file) if env_file is not None else None
        encoding = env_file_encoding(env_path)
        try:
            loaded = _CredentialSources(_env_file=env_path, _env_file_encoding=encoding)
        except Exception as exc:  # unreadable .env: pydantic-settings raises various errors
            raise CredentialsError(
                f"cannot read credentials from {env_path}: {type(exc).__name__}"
            ) from None
        client_id = (loaded.client_id or "").strip()
        secret = loaded.client_secret.get_secret_value().strip() if loaded.client_secret else ""
        missing = [name for name, value in (("id", client_id), ("secret", secret)) if not value]
        if missing:
            where = f"the environment or {env_path}" if env_path else "the environment"
            what = " and ".join(f"client {m}" for m in missing)
            raise CredentialsError(
                f"Spotify {what} not set: set SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET "
                f"(or CLIENT_ID and CLIENT_SECRET) in {where}"
            )
        return cls(client_id=client_id, client_secret=SecretStr(secret))


class _CredentialSources(BaseSettings):
    """pydantic-settings loader: environment first, then the dotenv file; other keys ignored."""

    model_config = SettingsConfigDict(
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
        hide_input_in_errors=True,
        populate_by_name=False,
    )

    client_id: str | None = Field(default=None, validation_alias=AliasChoices(*_ID_VARS))
    client_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(*_SECRET_VARS)
    )


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint_url(url: str, *, what: str, allow_plain_http: bool = False) -> str:
    """Validate an API or token URL: ``https://`` anywhere, ``http://`` only on loopback.

    ``allow_plain_http`` is for in-process transports (``httpx.ASGITransport``), where no byte
    leaves the process whatever the host name says. Returns the URL without a trailing slash.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what} must be an http(s) URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise UsageError(f"{what} must not carry credentials in the URL")
    if parts.scheme == "http" and not allow_plain_http and not is_loopback_host(parts.hostname):
        raise UsageError(
            f"{what} {url!r} uses plain http to a non-loopback host: use https "
            "(http is only accepted for a local simulator on 127.0.0.1 / localhost)"
        )
    return url.rstrip("/")


class ClientSettings(BaseSettings):
    """Where the API is and how long to wait for it.

    Environment variables: ``SPOTIFY_API_BASE``, ``SPOTIFY_TOKEN_URL`` and, in seconds, each try's
    ``SPOTIFY_CONNECT_TIMEOUT`` (TCP and TLS connect), ``SPOTIFY_READ_TIMEOUT`` (an answer's
    bytes), ``SPOTIFY_WRITE_TIMEOUT``, ``SPOTIFY_POOL_TIMEOUT`` (waiting for a free connection),
    and for the run ``SPOTIFY_NO_ANSWER_TIMEOUT`` (exit 69 when the API never answered for this
    long since the start) and ``SPOTIFY_OUTAGE_TIMEOUT`` (the same for an API that answered
    before). Every one is bounded, so no wait is endless. There is deliberately no setting to
    turn TLS verification off.
    """

    model_config = SettingsConfigDict(
        env_prefix="SPOTIFY_", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    api_base: str = DEFAULT_API_BASE
    token_url: str = DEFAULT_TOKEN_URL
    connect_timeout: float = Field(default=5.0, gt=0, le=MAX_TRY_TIMEOUT)
    read_timeout: float = Field(default=20.0, gt=0, le=MAX_TRY_TIMEOUT)
    write_timeout: float = Field(default=10.0, gt=0, le=MAX_TRY_TIMEOUT)
    pool_timeout: float = Field(default=60.0, gt=0, le=MAX_TRY_TIMEOUT)
    no_answer_timeout: float = Field(default=DEFAULT_NO_ANSWER_TIMEOUT, gt=0, le=MAX_RUN_TIMEOUT)
    outage_timeout: float = Field(default=DEFAULT_OUTAGE_TIMEOUT, gt=0, le=MAX_RUN_TIMEOUT)

    @classmethod
    def from_env(
        cls, env_file: str | os.PathLike[str] | None = ".env", **overrides: Any
    ) -> ClientSettings:
        """Settings from the environment and ``env_file``; keyword overrides win over both.

        A value that does not parse (``SPOTIFY_READ_TIMEOUT=abc``) raises :class:`UsageError`,
        one line naming the variable; the value itself is not repeated.
        """
        env_path = Path(env_file) if env_file is not None else None
        encoding = env_file_encoding(env_path)
        try:
            return cls(_env_file=env_path, _env_file_encoding=encoding, **overrides)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            name = "SPOTIFY_" + ".".join(str(p) for p in first["loc"]).upper()
            where = f"the environment or {env_path}" if env_path else "the environment"
            raise UsageError(f"{name} in {where} is not valid: {first['msg']}") from None

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.write_timeout,
            pool=self.pool_timeout,
        )
