"""The Redis-shared rate budget: several controllers, one limit, one pause, one estimate.

Runs against the real Redis (``tests/shared_services.py``: skip when unreachable, fail under CI)
and the simulator over real HTTP. Every test has its own key prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from spotify_ingest.client import SpotifyClient
from spotify_ingest.config import Credentials
from spotify_ingest.errors import StoreError, UsageError
from spotify_ingest.ratecontrol import LimitEstimate
from spotify_ingest.shared_rate import SharedRateController, describe_redis_url, shared_keys
from spotify_ingest.sim.app import SimConfig
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.server import SimServer
from tests.shared_services import redis_keys_cleanup, redis_url_or_skip, unique_prefix

pytestmark = pytest.mark.services

API = "http://sim.test/v1"


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = unique_prefix()
    yield name
    redis_keys_cleanup(redis_url, name)


@pytest.fixture
async def make(redis_url: str, prefix: str) -> AsyncIterator[Any]:
    """``make(client_id=..., api_base=..., **kw)``: a connected controller, closed afterwards."""
    made: list[SharedRateController] = []

    async def factory(client_id: str = "cid", api_base: str = API, **kw: Any) -> Any:
        kw.setdefault("window", 1.0)
        rc = SharedRateController(
            redis_url, client_id=client_id, api_base=api_base, key_prefix=prefix, **kw
        )
        await rc.connect()
        made.append(rc)
        return rc

    yield factory
    for rc in made:
        await rc.aclose()


def warm(limit: int, window: float = 1.0) -> LimitEstimate:
    return LimitEstimate(limit=limit, lower=limit, upper=None, window=window, observed_at=0.0)


async def test_workers_stay_under_the_hidden_limit_together(make: Any) -> None:
    """Four controllers (four workers' budgets) against one simulator with a hidden limit."""
    limit, window, seconds = 30, 1.0, 7.0
    with SimServer(SimConfig(artists=500, seed=3, limit=limit, window=window)) as sim:
        controllers = [
            await make(sim.client_id, sim.api_base, window=window, max_concurrency=3)
            for _ in range(4)
        ]
        creds = Credentials(client_id=sim.client_id, client_secret=sim.client_secret)
        stop = time.monotonic() + seconds

        async def worker(rc: SharedRateController) -> int:
            async with SpotifyClient(
                creds, api_base=sim.api_base, token_url=sim.token_url, controller=rc
            ) as sp:

                async def loop() -> None:
                    while time.monotonic() < stop:
                        await sp.search("a", types=("artist",), limit=10, offset=0)

                await asyncio.gather(*(loop() for _ in range(3)))
                return sp.stats.requests

        sent = await asyncio.gather(*(worker(rc) for rc in controllers))
        stats = httpx.get(sim.base_url + "/__sim/stats").json()
        times = httpx.get(sim.base_url + "/__sim/accepted").json()["times"]
    assert stats["max_accepted_in_any_window"] <= limit
    assert stats["escalations"] == 0
    assert all(n > 0 for n in sent), sent
    # The cold ramp ends with one 429, each probe costs one: a handful in 7 windows.
    assert stats["rejected_429"] <= 6, stats["rejected_429"]
    t0, t1 = times[0] + 2 * window, times[-1]
    steady = sum(1 for t in times if t0 <= t <= t1) / (limit * (t1 - t0) / window)
    # Not starved either. (Each 429 pauses everyone for a whole 1 s window here, and the run is
    # short: bench/workers.py measures utilisation properly, on longer runs.)
    assert steady >= 0.6, steady
    # One estimate: every controller reads the same bounds, and they pin the hidden limit.
    views = [await rc.refresh() for rc in controllers]
    assert len({(v["lo"], v["hi"]) for v in views}) == 1, views
    assert limit - 3 <= views[0]["lo"] <= limit, views[0]
    assert all(rc.estimate().lower == views[0]["lo"] for rc in controllers)


@pytest.mark.parametrize("limit", [40, 200])
async def test_the_cold_ramp_overshoots_by_at_most_5_percent(make: Any, limit: int) -> None:
    """Four workers ramp up together from cold (30 ms mean latency) until the first 429: the
    server refuses whatever arrives during its Retry-After, at most max(2, 5 % of L) requests."""
    window = 1.0
    catalog = Catalog(200, 3)
    config = SimConfig(artists=200, seed=3, limit=limit, window=window, latency_ms=30.0)
    with SimServer(config, catalog=catalog) as sim:
        controllers = [
            await make(sim.client_id, sim.api_base, window=window, max_concurrency=16)
            for _ in range(4)
        ]
        creds = Credentials(client_id=sim.client_id, client_secret=sim.client_secret)

        async def worker(rc: SharedRateController) -> None:
            async with SpotifyClient(
                creds, api_base=sim.api_base, token_url=sim.token_url, controller=rc
            ) as sp:

                async def loop(i: int) -> None:
                    while True:
                        await sp.artist(catalog.artist_id(i))

                await asyncio.gather(*(loop(i) for i in range(16)))

        tasks = [asyncio.ensure_future(worker(rc)) for rc in controllers]
        stop = time.monotonic() + 20.0
        while not any(c.refused for c in controllers) and time.monotonic() < stop:
            await asyncio.sleep(0.005)
        # The requests in flight then land within a round trip; the pause (>= 1 s) holds the rest.
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stats = httpx.get(sim.base_url + "/__sim/stats").json()
    assert any(c.refused for c in controllers), "the ramp must meet the limit"
    assert stats["rejected_429"] - 1 <= max(2, limit // 20), stats["rejected_429"]
    assert stats["escalations"] == 0


async def test_a_429_pauses_every_worker(make: Any) -> None:
    a = await make(warm_start=warm(10))
    b = await make()
    ticket = await a.acquire()
    a.on_rate_limited(ticket, 1.0)
    await a.flush()
    assert a.paused_until > time.monotonic() + 0.8  # its own pause, at once
    started = time.monotonic()
    await b.acquire()  # another worker: waits out the pause it never saw a 429 for
    assert time.monotonic() - started >= 0.9
    view = await b.refresh()
    assert view["refusals"] == 1


async def test_quota_429_pauses_everyone_without_evidence(make: Any) -> None:
    a = await make(warm_start=warm(10))
    b = await make()
    ticket = await a.acquire()
    a.on_quota_exceeded(ticket, 1.0)
    await a.flush()
    view = await b.refresh()
    assert view["paused_for"] > 0.8
    assert view["refusals"] == 0 and view["lo"] == a.estimate().lower


async def test_a_deadline_learned_by_an_earlier_run_pauses_every_worker(make: Any) -> None:
    """A worker that starts into a stored Retry-After puts it into the shared pause."""
    a = await make(warm_start=warm(10))
    b = await make()
    a.pause_for(1.5)
    await a.flush()
    assert a.paused_until > time.monotonic() + 1.3
    view = await b.refresh()
    assert 1.3 < view["paused_for"] <= 1.51
    assert view["refusals"] == 0


async def test_estimate_is_shared_and_seeded_by_the_first_warm_start(make: Any) -> None:
    a = await make(warm_start=warm(50, window=2.0))  # 50 per 2 s = 25 per 1 s
    b = await make(warm_start=warm(400))  # the budget exists already: ignored
    await b.refresh()
    assert a.estimate().upper == b.estimate().upper == 25
    assert a.estimate().lower == b.estimate().lower == 23  # 5 % under what was known
    # Evidence from one worker moves the estimate every worker reads.
    tickets = [await a.acquire() for _ in range(3)]
    for t in tickets:
        a.on_success(t)
    await a.flush()
    await b.refresh()
    assert b.estimate().samples == 3
    assert b.window_count() >= 3


async def test_budgets_are_isolated_per_client_id_and_api_base(make: Any) -> None:
    a = await make("client-a", API, warm_start=warm(10))
    same = await make("client-a", API + "/")  # a trailing slash is the same API
    other_client = await make("client-b", API, warm_start=warm(10))
    other_api = await make("client-a", "http://elsewhere.test/v1", warm_start=warm(10))
    assert a.keys == same.keys
    assert len({a.keys, other_client.keys, other_api.keys}) == 3
    assert not any("client-a" in k for k in a.keys)  # hashed: the client id is not in Redis
    ticket = await a.acquire()
    a.on_rate_limited(ticket, 2.0)
    await a.flush()
    for rc in (other_client, other_api):
        started = time.monotonic()
        await rc.acquire()
        assert time.monotonic() - started < 0.5
    assert (await same.refresh())["paused_for"] > 1.5


async def test_release_gives_the_slot_back(make: Any) -> None:
    a = await make(warm_start=warm(3))
    tickets = [await a.acquire() for _ in range(2)]
    assert (await a.refresh())["count"] == 2
    for t in tickets:
        a.release(t)
    await a.flush()
    assert (await a.refresh())["count"] == 0


async def test_unreachable_or_bad_redis_is_one_line(prefix: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://user:hunter2@127.0.0.1:{port}/0"
    rc = SharedRateController(url, client_id="c", api_base=API, key_prefix=prefix)
    with pytest.raises(StoreError) as info:
        await rc.connect()
    await rc.aclose()
    message = str(info.value)
    assert "\n" not in message and "hunter2" not in message and str(port) in message
    assert describe_redis_url(url) == f"redis://user:***@127.0.0.1:{port}/0"
    with pytest.raises(UsageError):
        SharedRateController("http://127.0.0.1:6379", client_id="c", api_base=API)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
async def test_redis_going_away_mid_run_stops_the_worker(prefix: str) -> None:
    """A private Redis, shut down while a worker runs: the next acquire fails in one line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        rc = SharedRateController(url, client_id="c", api_base=API, window=1.0)
        while True:
            try:
                await rc.connect()
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        rc.on_success(await rc.acquire())
        await rc.flush()
        server.terminate()
        server.wait(10)
        started = time.monotonic()
        with pytest.raises(StoreError, match="shared rate budget: Redis at"):
            for _ in range(100):
                rc.on_success(await rc.acquire())
        assert time.monotonic() - started < 10
        await rc.aclose()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


def test_keys_are_namespaced_and_hash_tagged() -> None:
    state, log = shared_keys("id", "https://api.spotify.com/v1", prefix="p")
    assert state.startswith("p:{") and state.endswith("}:state")
    assert log == state.replace(":state", ":log")


async def test_a_pause_beyond_max_wait_stops_every_worker(make: Any) -> None:
    """A quota (or a Retry-After above --max-wait) seen by one worker stops the others too."""
    from spotify_ingest.errors import MustWaitError

    a = await make(warm_start=warm(10))
    b = await make(max_wait=60.0)
    waiting = await make()  # --wait: sits the pause out instead
    ticket = await a.acquire()
    a.on_quota_exceeded(ticket, 3600.0)
    await a.flush()
    with pytest.raises(MustWaitError) as info:
        await b.acquire()
    assert info.value.wait_seconds > 3500
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting.acquire(), 0.3)
