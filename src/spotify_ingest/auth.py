"""Client-credentials access tokens, fetched once and shared by every concurrent request.

Flow: ``POST token_url`` with form ``grant_type=client_credentials`` and HTTP Basic
``client_id:client_secret``; the answer is ``{"access_token", "token_type", "expires_in"}``.

**Single flight.** At most one token request is in flight at any time. The first caller that
needs a token starts a renewal task; every other caller awaits that same task (through
``asyncio.shield``, so a caller cancelled while waiting does not cancel the renewal for the
others). Fifty workers starting together, or fifty workers whose token expires together, cause one
token request.

**Early renewal.** A token is renewed ``min(60 s, 10 % of its lifetime)`` before it expires, so a
request never leaves with a token that expires in flight (a one-hour token: renewed at 59:00; a
5-second simulator token: at 4.5 s).

**Invalidation.** A 401 from the API means the token was revoked or expired early. The client
calls :meth:`TokenProvider.invalidate` with the token it sent; only if that is still the cached
token is the cache dropped, so N requests failing together with the same stale token still cause
one renewal.

**Errors.** 400/401 ``invalid_client`` (or any 401) means wrong credentials: a
:class:`CredentialsError` at once, never retried, remembered (later calls fail at once instead of
hammering the token endpoint). 5xx and transport failures are retried with full-jitter backoff,
``max_attempts`` in all, then :class:`ServerError` / :class:`TransportError`. A token endpoint
that does not answer at all (refused, timeouts) is retried, reported and given up on by the
client's :class:`~spotify_ingest.reachability.Reachability`, as the API is. A 429 waits its
``Retry-After`` (or :class:`MustWaitError` beyond ``max_wait``). The secret and the tokens never
appear in an exception, a log record or a ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from .clock import Clock, MonotonicClock
from .config import DEFAULT_TOKEN_URL, Credentials
from .errors import (
    BadRequestError,
    BadResponseError,
    CredentialsError,
    MustWaitError,
    ServerError,
    TransportError,
)
from .reachability import Reachability, Unanswered

__all__ = ["AccessToken", "TokenProvider", "parse_retry_after", "renewal_margin"]

logger = logging.getLogger("spotify_ingest.auth")

TOKEN_ENDPOINT = "POST /api/token"


def renewal_margin(lifetime: float) -> float:
    """How long before expiry a token is renewed: 10 % of its lifetime, at most 60 s."""
    return min(60.0, 0.1 * max(0.0, lifetime))


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and when (on the provider's clock) to renew it. ``repr`` hides the value."""

    value: str = field(repr=False)
    expires_at: float
    renew_at: float

    def __repr__(self) -> str:
        return f"AccessToken(value='***', expires_at={self.expires_at:.1f})"


class TokenProvider:
    """Fetches, caches and renews client-credentials tokens; one renewal at a time.

    ``http`` is the caller's ``httpx.AsyncClient`` (the same connection pool and transport as the
    API calls, so tests can route both to an in-process simulator).
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        http: httpx.AsyncClient,
        token_url: str = DEFAULT_TOKEN_URL,
        clock: Clock | None = None,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_wait: float = 900.0,
        rng: random.Random | None = None,
        on_token_request: Callable[[], None] | None = None,
        reachability: Reachability | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._credentials = credentials
        self._http = http
        self._token_url = token_url
        self._clock: Clock = clock or MonotonicClock()
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_wait = max_wait
        self._rng = rng or random.Random()
        self._on_token_request = on_token_request
        self._reach = reachability or Reachability(clock=self._clock)
        self._host = urlsplit(token_url).netloc
        self._token: AccessToken | None = None  # the cached token, None until fetched/invalidated
        self._renewal: asyncio.Task[AccessToken] | None = None  # the one renewal in flight
        self._rejected: CredentialsError | None = None  # sticky: wrong credentials stay wrong
        self.token_requests = 0  # HTTP requests sent to the token endpoint (retries included)
        self.renewals = 0  # successful token fetches

    def __repr__(self) -> str:
        return f"TokenProvider({self._credentials!r}, token_url={self._token_url!r})"

    @property
    def current(self) -> AccessToken | None:
        """The cached token, if any (may be due for renewal)."""
        return self._token

    async def get(self) -> str:
        """A valid access token, fetching or renewing it if needed (single flight)."""
        token = self._token
        if token is not None and self._clock.now() < token.renew_at:
            return token.value
        return (await self._renew()).value

    def invalidate(self, stale: str) -> None:
        """Forget the cached token if it is ``stale`` (the one a 401 answered)."""
        token = self._token
        if token is not None and token.value == stale:
            self._token = None
            logger.debug("access token invalidated after a 401")

    async def aclose(self) -> None:
        """Cancel a renewal in flight (the HTTP client is closed by its owner)."""
        task = self._renewal
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._renewal = None

    async def _renew(self) -> AccessToken:
        if self._rejected is not None:
            raise self._rejected
        task = self._renewal
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._renewal_job())
            task.add_done_callback(self._renewal_done)
            self._renewal = task
        return await asyncio.shield(task)

    async def _renewal_job(self) -> AccessToken:
        """Fetch a token and cache it before the task completes, so that no caller can see the
        task done while the cache still holds the old token (and start a second renewal)."""
        try:
            token = await self._fetch_with_retries()
        except CredentialsError as exc:
            self._rejected = exc
            raise
        self._token = token
        self.renewals += 1
        return token

    def _renewal_done(self, task: asyncio.Task[AccessToken]) -> None:
        if self._renewal is task:
            self._renewal = None
        if not task.cancelled():
            task.exception()  # marks it retrieved even when every waiter was cancelled

    async def _fetch_with_retries(self) -> AccessToken:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._fetch_once()
            except Unanswered:
                attempt -= 1  # silent: the reachability gate paces these tries and bounds them
            except (ServerError, TransportError) as exc:
                if attempt >= self._max_attempts:
                    raise
                delay = self._rng.uniform(
                    0.0, min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
                )
                logger.debug(
                    "token endpoint failed (%s, status %d); retry %d in %.2f s",
                    type(exc).__name__,
                    exc.status,
                    attempt,
                    delay,
                )
                await self._clock.sleep(delay)
            except _TokenRateLimited as exc:
                if exc.retry_after > self._max_wait:
                    raise MustWaitError(
                        f"the token endpoint asked to wait {exc.retry_after:.0f} s "
                        f"(more than --max-wait {self._max_wait:.0f} s): run again later",
                        wait_seconds=exc.retry_after,
                    ) from None
                if attempt >= self._max_attempts + 4:
                    raise ServerError(
                        "the token endpoint kept answering 429",
                        status=429,
                        endpoint=TOKEN_ENDPOINT,
                    ) from None
                await self._clock.sleep(exc.retry_after)

    async def _fetch_once(self) -> AccessToken:
        self.token_requests += 1
        if self._on_token_request is not None:
            self._on_token_request()
        started = time.perf_counter()
        try:
            response = await self._reach.send(
                self._http.post(
                    self._token_url,
                    data={"grant_type": "client_credentials"},
                    auth=httpx.BasicAuth(
                        self._credentials.client_id, self._credentials.secret_value()
                    ),
                    headers={"Accept": "application/json"},
                ),
                self._host,
            )
        except httpx.TransportError as exc:
            raise TransportError(
                f"token request to {self._token_url} failed: {type(exc).__name__}",
                endpoint=TOKEN_ENDPOINT,
            ) from None
        status = response.status_code
        logger.debug(
            "%s -> %d in %.1f ms",
            TOKEN_ENDPOINT,
            status,
            (time.perf_counter() - started) * 1000.0,
        )
        if status == 200:
            return self._parse_token(response)
        error_code = _oauth_error_code(response)
        if status == 401 or error_code in ("invalid_client", "unauthorized_client"):
            raise CredentialsError(
                "Spotify rejected the client id/secret "
                f"({self._credentials.masked_id}, token endpoint answered {status}"
                f"{' ' + error_code if error_code else ''}): "
                "check SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET in .env"
            )
        if status == 429:
            raise _TokenRateLimited(parse_retry_after(response.headers.get("retry-after")) or 1.0)
        if status >= 500:
            raise ServerError(
                f"token endpoint {self._token_url} answered {status}",
                status=status,
                endpoint=TOKEN_ENDPOINT,
            )
        raise BadRequestError(
            f"token endpoint {self._token_url} answered {status}"
            f"{' (' + error_code + ')' if error_code else ''}",
            status=status,
            endpoint=TOKEN_ENDPOINT,
        )

    def _parse_token(self, response: httpx.Response) -> AccessToken:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadResponseError(
                "token endpoint answered 200 with a body that is not JSON",
                status=200,
                endpoint=TOKEN_ENDPOINT,
            ) from None
        value = body.get("access_token") if isinstance(body, dict) else None
        lifetime = body.get("expires_in") if isinstance(body, dict) else None
        token_type = body.get("token_type", "bearer") if isinstance(body, dict) else None
        if (
            not isinstance(value, str)
            or not value
            or isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or lifetime <= 0
            or not isinstance(token_type, str)
            or token_type.lower() != "bearer"
        ):
            raise BadResponseError(
                "token endpoint answered 200 without a bearer access_token and a positive "
                "expires_in",
                status=200,
                endpoint=TOKEN_ENDPOINT,
            )
        now = self._clock.now()
        return AccessToken(
            value=value,
            expires_at=now + float(lifetime),
            renew_at=now + float(lifetime) - renewal_margin(float(lifetime)),
        )


class _TokenRateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"token endpoint rate limited for {retry_after} s")
        self.retry_after = retry_after


def _oauth_error_code(response: httpx.Response) -> str:
    """The OAuth ``error`` code of a token-endpoint error body (``invalid_client``), or ''."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    if isinstance(body, dict):
        code = body.get("error")
        if isinstance(code, str) and code.isascii() and len(code) <= 64:
            return code
        if isinstance(code, dict):  # the API-style {"error": {"status", "message"}}
            return ""
    return ""


def parse_retry_after(raw: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; an HTTP date is converted), None if absent."""
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
