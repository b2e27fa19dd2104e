"""TokenProvider against the simulator's token endpoint (in process)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from spotify_ingest.auth import TokenProvider, parse_retry_after, renewal_margin
from spotify_ingest.config import Credentials
from spotify_ingest.errors import AuthenticationError, CredentialsError, ServerError

from .test_client import SECRET, Sim, make_sim

WRONG = "wrong-secret-do-not-print"


def provider(sim: Sim, http: httpx.AsyncClient, secret: str = SECRET, **kw: Any) -> TokenProvider:
    creds = Credentials(client_id=sim.config.client_id, client_secret=secret)  # type: ignore[arg-type]
    return TokenProvider(creds, http=http, token_url="http://sim.test/api/token", **kw)


def test_renewal_margin_is_ten_percent_capped_at_a_minute() -> None:
    assert renewal_margin(3600) == 60
    assert renewal_margin(300) == 30
    assert renewal_margin(1.0) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("raw", "seconds"), [(None, None), ("7", 7.0), (" 2.5 ", 2.5), ("-3", 0.0), ("soon", None)]
)
def test_parse_retry_after(raw: str | None, seconds: float | None) -> None:
    assert parse_retry_after(raw) == seconds


async def test_token_is_fetched_once_and_cached() -> None:
    sim = make_sim(rate_limit=False)
    ids = await sim.artist_ids(10)
    async with sim.client() as sp:
        for artist_id in ids:
            await sp.artist(artist_id)
    assert await sim.token_requests() == 1
    assert sp.stats.token_requests == 1


async def test_single_flight_under_50_concurrent_calls() -> None:
    sim = make_sim(rate_limit=False)
    ids = await sim.artist_ids(50)
    async with sim.client() as sp:
        results = await asyncio.gather(*(sp.artist(i) for i in ids))
    assert len(results) == 50
    assert await sim.token_requests() == 1


async def test_concurrent_get_and_invalidate_cause_one_renewal() -> None:
    sim = make_sim(rate_limit=False)
    async with httpx.AsyncClient(transport=sim.transport) as http:
        tokens = provider(sim, http)
        first = await asyncio.gather(*(tokens.get() for _ in range(20)))
        assert len(set(first)) == 1
        for _ in range(20):
            tokens.invalidate(first[0])
        tokens.invalidate("some-other-token")  # not the cached one: no effect
        second = await asyncio.gather(*(tokens.get() for _ in range(20)))
        assert len(set(second)) == 1 and second[0] != first[0]
        tokens.invalidate(first[0])  # stale: the cache keeps the new token
        assert await tokens.get() == second[0]
    assert await sim.token_requests() == 2
    assert tokens.token_requests == 2 and tokens.renewals == 2


async def test_a_cancelled_waiter_does_not_cancel_the_renewal_for_others() -> None:
    sim = make_sim(rate_limit=False)
    async with httpx.AsyncClient(transport=sim.transport) as http:
        tokens = provider(sim, http)
        doomed = asyncio.ensure_future(tokens.get())
        survivor = asyncio.ensure_future(tokens.get())
        await asyncio.sleep(0)
        doomed.cancel()
        assert await survivor
        assert doomed.cancelled()
    assert await sim.token_requests() == 1


async def test_wrong_secret_is_a_one_line_credentials_error_never_retried() -> None:
    sim = make_sim(rate_limit=False)
    ids = await sim.artist_ids(20)
    async with sim.client(secret=WRONG) as sp:
        outcomes = await asyncio.gather(*(sp.artist(i) for i in ids), return_exceptions=True)
        with pytest.raises(CredentialsError) as again:
            await sp.artist(ids[0])
    assert all(isinstance(o, CredentialsError) for o in outcomes)
    message = str(again.value)
    assert "\n" not in message
    assert "SPOTIFY_CLIENT_ID" in message and "SPOTIFY_CLIENT_SECRET" in message
    assert WRONG not in message and SECRET not in message
    assert again.value.exit_code == 3
    assert await sim.token_requests() == 1  # one try for 21 calls, then remembered
    assert sp.stats.requests == 0  # no API request without a token


async def test_token_endpoint_briefly_down_is_retried() -> None:
    sim = make_sim(rate_limit=False)
    await sim.control(token_down_for=0.3)
    async with httpx.AsyncClient(transport=sim.transport) as http:
        tokens = provider(sim, http, backoff_base=0.05, backoff_cap=0.1, max_attempts=40)
        assert await tokens.get()
    by_status = (await sim.stats())["requests_by_endpoint"]["/api/token"]["by_status"]
    assert by_status["200"] == 1 and by_status["503"] >= 2


async def test_token_endpoint_down_gives_server_error_after_a_few_attempts() -> None:
    sim = make_sim(rate_limit=False)
    await sim.control(token_down_for=600)
    async with sim.client(backoff_base=0.001) as sp:
        with pytest.raises(ServerError) as info:
            await sp.artist((await sim.artist_ids(1))[0])
    assert info.value.status == 503 and SECRET not in str(info.value)
    assert await sim.token_requests() == 4  # the provider's default max_attempts


async def test_second_401_in_a_row_is_authentication_error() -> None:
    def always_401(path: str, status: int, headers: list[Any], body: bytes) -> Any:
        return 401, headers, b'{"error": {"status": 401, "message": "Invalid access token"}}'

    sim = make_sim(rewrite=always_401, rate_limit=False)
    async with sim.client() as sp:
        with pytest.raises(AuthenticationError) as info:
            await sp.artist("0" * 22)
    assert info.value.status == 401
    assert sp.stats.requests == 2 and sp.stats.auth_replays == 1
    assert await sim.token_requests() == 2  # the token, and one renewal
