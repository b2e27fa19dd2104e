"""The exception hierarchy of spotify-ingest, and the exit code each error maps to.

Domain code raises; only the CLI prints and turns an error into an exit code. Every message is one
line that says what went wrong and what to do about it, and never contains a secret (client secret,
access token): build messages from ids, URLs and statuses only.

::

    SpotifyIngestError                  exit 1  anything we did not foresee more precisely
    +-- UsageError                      exit 2  bad flags, contradictory options, bad input files
    +-- CredentialsError                exit 3  missing or rejected client id / secret
    +-- StoreError                      exit 4  database unwritable, corrupt, from a newer schema
    |   +-- SchemaTooNewError
    +-- ExportError                     exit 5  export target exists (no --force), unwritable
    +-- ApiError                        exit 69 the API answered something we cannot work with
    |   +-- RateLimitedError                    429 of the rolling-window kind (retry_after, reason)
    |   |   +-- QuotaExceededError              429 with reason QUOTA_EXCEEDED
    |   +-- AuthenticationError                 401 / invalid_client / invalid token
    |   +-- EndpointUnavailableError            403 / 404 for an endpoint this app may not use
    |   +-- NotFoundError                       404 for an id that does not exist
    |   +-- InvalidLimitError                   400 "Invalid limit"
    |   +-- BadRequestError                     any other 4xx
    |   +-- ServerError                         5xx
    |   +-- TransportError                      timeouts, resets, refused connections
    |   +-- BadResponseError                    body not JSON or not the documented shape
    +-- ApiUnreachableError             exit 69 no answer at all (refused, timeouts) for too long
    +-- MustWaitError                   exit 75 Retry-After above --max-wait, or quota: resume later

Retrying is the client's job (RateLimited, Server, Transport are retried there); what escapes the
client is final for that request. :class:`ApiUnreachableError` is final for the whole run: it is no
``ApiError`` of one request (which the crawler would retry later) but the API's silence.
"""

from __future__ import annotations

import datetime as _dt

__all__ = [
    "EXIT_API",
    "EXIT_CREDENTIALS",
    "EXIT_EXPORT",
    "EXIT_INTERNAL",
    "EXIT_MUST_WAIT",
    "EXIT_OK",
    "EXIT_SIGHUP",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_STORE",
    "EXIT_USAGE",
    "ApiError",
    "ApiUnreachableError",
    "AuthenticationError",
    "BadRequestError",
    "BadResponseError",
    "CredentialsError",
    "EndpointUnavailableError",
    "ExportError",
    "InvalidLimitError",
    "MustWaitError",
    "NotFoundError",
    "QuotaExceededError",
    "RateLimitedError",
    "SchemaTooNewError",
    "ServerError",
    "SpotifyIngestError",
    "StoreError",
    "TransportError",
    "UsageError",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CREDENTIALS = 3
EXIT_STORE = 4
EXIT_EXPORT = 5
EXIT_API = 69  # EX_UNAVAILABLE
EXIT_MUST_WAIT = 75  # EX_TEMPFAIL: state is saved, run the same command again later
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class SpotifyIngestError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code: int = EXIT_INTERNAL


class UsageError(SpotifyIngestError):
    """The user asked for something that cannot work (flags, paths, files)."""

    exit_code = EXIT_USAGE


class CredentialsError(SpotifyIngestError):
    """Client id / secret missing, malformed or rejected by the token endpoint."""

    exit_code = EXIT_CREDENTIALS


class StoreError(SpotifyIngestError):
    """The database cannot be opened, read or written."""

    exit_code = EXIT_STORE


class SchemaTooNewError(StoreError):
    """The database was written by a newer spotify-ingest."""


class ExportError(SpotifyIngestError):
    """An export cannot be written."""

    exit_code = EXIT_EXPORT


class ApiError(SpotifyIngestError):
    """The Web API answered with something other than the data asked for.

    ``status`` is the HTTP status (0 when no response arrived), ``endpoint`` the endpoint's
    template (``/v1/artists/{id}``), never a URL with a token in it.
    """

    exit_code = EXIT_API

    def __init__(self, message: str, *, status: int = 0, endpoint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class RateLimitedError(ApiError):
    """429 of the rolling-window kind; ``retry_after`` in seconds (None: no header)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        reason: str | None = None,
        status: int = 429,
        endpoint: str = "",
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.retry_after = retry_after
        self.reason = reason


class QuotaExceededError(RateLimitedError):
    """429 with ``reason: QUOTA_EXCEEDED``: the daily-style quota is spent until ``retry_after``."""


class AuthenticationError(ApiError):
    """The access token was refused even after one renewal."""


class EndpointUnavailableError(ApiError):
    """The endpoint exists but this app may not use it (403, or 404 for a removed one)."""


class NotFoundError(ApiError):
    """The id asked for does not exist."""


class InvalidLimitError(ApiError):
    """400 "Invalid limit": the ``limit`` parameter is over the endpoint's maximum for this app."""


class BadRequestError(ApiError):
    """Any other 4xx; not retried."""


class ServerError(ApiError):
    """5xx after the retry budget was spent."""


class TransportError(ApiError):
    """No usable HTTP response: timeout, reset, refused connection."""


class BadResponseError(ApiError):
    """The body is not JSON or does not have the documented shape."""


class ApiUnreachableError(SpotifyIngestError):
    """The API (or its token endpoint) gave no answer at all for longer than the run allows."""

    exit_code = EXIT_API


class MustWaitError(SpotifyIngestError):
    """The API asked us to wait longer than we may: state is saved, resume at ``resume_at``."""

    exit_code = EXIT_MUST_WAIT

    def __init__(self, message: str, *, wait_seconds: float, reason: str | None = None) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds
        self.reason = reason
        self.resume_at = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=wait_seconds)
