"""Wiring for one ``spotify-ingest crawl``: store, controller, client, crawler, display, signals.

Kept apart from :mod:`cli` so the CLI stays a thin layer of flags and exit codes, and apart from
:mod:`crawler` so the engine knows nothing of terminals, signals or the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .client import SpotifyClient
from .config import ClientSettings, Credentials
from .crawler import Crawler, CrawlOptions, CrawlReport
from .display import CrawlDisplay
from .errors import EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM
from .quota import QuotaPacer
from .ratecontrol import RateController
from .store import is_postgres_url, open_store

if TYPE_CHECKING:
    from .shared_rate import SharedRateController
    from .sim.app import SimConfig
    from .store.postgres import PostgresStore
    from .store.sqlite import SQLiteStore

__all__ = ["CrawlRequest", "run_crawl"]

SPOTIFY_WINDOW = 30.0

#: The signals that stop a crawl cleanly: the stop reason and the exit code of each (a hang-up is
#: a closed terminal or a dropped SSH session).
STOP_SIGNALS: dict[int, tuple[str, int]] = {
    signal.SIGINT: ("interrupted", EXIT_SIGINT),
    signal.SIGTERM: ("terminated", EXIT_SIGTERM),
    signal.SIGHUP: ("hung up", EXIT_SIGHUP),
}


@dataclass(frozen=True)
class CrawlRequest:
    """Everything ``crawl`` was asked to do (validated flags)."""

    db: str
    simulate: bool = False
    sim_artists: int = 20_000
    sim_profile: str = "dev-2026"
    sim_seed: int = 0
    sim_limit: int | None = None
    sim_window: float = 3.0
    api_base: str | None = None
    token_url: str | None = None
    window: float | None = None
    strategy: str = "auto"
    max_requests: int | None = None
    max_artists: int | None = None
    duration: float | None = None
    concurrency: int = 16
    hydrate: bool = True
    wait: bool = False
    max_wait: float = 900.0
    env_file: Path = Path(".env")
    # Several workers: the shared rate budget, this worker's lease owner name and lease
    # length in a PostgreSQL frontier, and the Redis key prefix (tests and benchmarks).
    redis: str | None = None
    redis_prefix: str | None = None
    worker_id: str | None = None
    lease_seconds: float | None = None
    # ClientSettings timeouts given as flags (connect_timeout, no_answer_timeout ...), in seconds.
    timeouts: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class _Endpoint:
    credentials: Credentials
    api_base: str
    token_url: str
    window: float
    settings: ClientSettings


def simulator_config(req: CrawlRequest) -> SimConfig:
    """The simulator ``crawl --simulate`` asks for (one process, or shared by ``--workers``)."""
    from .sim.app import SimConfig

    return SimConfig(
        artists=req.sim_artists,
        seed=req.sim_seed,
        profile=req.sim_profile,
        limit=req.sim_limit,
        window=req.sim_window,
    )


@contextlib.contextmanager
def _endpoint(req: CrawlRequest) -> Iterator[_Endpoint]:
    """The API to crawl: the simulator on a free loopback port, or Spotify (or --api-base)."""
    if req.simulate:
        from .sim.server import SimServer

        with SimServer(simulator_config(req)) as server:
            yield _Endpoint(
                settings=ClientSettings.from_env(env_file=req.env_file, **dict(req.timeouts)),
                credentials=Credentials(
                    client_id=server.client_id, client_secret=server.client_secret
                ),
                api_base=server.api_base,
                token_url=server.token_url,
                window=req.window or req.sim_window,
            )
        return
    settings = ClientSettings.from_env(env_file=req.env_file, **dict(req.timeouts))
    yield _Endpoint(
        settings=settings,
        credentials=Credentials.from_env(env_file=req.env_file),
        api_base=req.api_base or settings.api_base,
        token_url=req.token_url or settings.token_url,
        window=req.window or SPOTIFY_WINDOW,
    )


def run_crawl(
    req: CrawlRequest, *, on_failure: Callable[[dict[str, Any]], None] | None = None
) -> tuple[dict[str, Any], int]:
    """Run the crawl; returns the final report and the exit code a signal asks for (0: none).

    A crawl that ends in an error gives its report to ``on_failure`` before the error propagates
    (a worker of ``--workers`` writes its figures for the parent so).
    """
    from .workers import from_parent, watch_parent

    req = from_parent(req)  # a worker of `crawl --workers N`: its secrets come by environment
    store_kw: dict[str, Any] = {}
    if not is_postgres_url(req.db):
        from .store.sqlite import CRAWL_OPTIONS

        store_kw.update(CRAWL_OPTIONS)
    else:
        if req.worker_id:
            store_kw["worker_id"] = req.worker_id
        if req.lease_seconds:
            store_kw["lease_seconds"] = req.lease_seconds
    watch_parent()  # a worker of `crawl --workers N` stops when its parent goes away
    with _endpoint(req) as endpoint, open_store(req.db, **store_kw) as store:
        display = CrawlDisplay(target_artists=req.max_artists, target_requests=req.max_requests)
        return asyncio.run(_crawl(req, endpoint, store, display, on_failure))


def _quota_pacer(
    req: CrawlRequest,
    endpoint: _Endpoint,
    store: SQLiteStore | PostgresStore,
    display: CrawlDisplay,
) -> QuotaPacer | None:
    """The quota pacer of a one-process crawl, with what earlier runs learned (see quota.py).

    Its buckets are a tenth of the rate window (3 s for Spotify), which keeps a simulator run
    on a compressed clock as exact as a real one. The workers of ``crawl --workers N`` pace no
    quota: each would spend the whole allowance, and a ledger they share is not built.
    """
    if req.redis or req.worker_id:
        return None
    quota = QuotaPacer(
        bucket=endpoint.window / 10,
        max_wait=req.max_wait,
        wait=req.wait,
        on_wait=display.countdown,
    )
    Crawler.load_quota(store, endpoint.credentials.client_id, endpoint.api_base, quota)
    return quota


async def _crawl(
    req: CrawlRequest,
    endpoint: _Endpoint,
    store: SQLiteStore | PostgresStore,
    display: CrawlDisplay,
    on_failure: Callable[[dict[str, Any]], None] | None,
) -> tuple[dict[str, Any], int]:
    client_id = endpoint.credentials.client_id
    warm = Crawler.load_estimate(store, client_id, endpoint.api_base)
    shared: SharedRateController | None = None
    if req.redis:
        from .shared_rate import DEFAULT_KEY_PREFIX, SharedRateController

        shared = SharedRateController(
            req.redis,
            client_id=client_id,
            api_base=endpoint.api_base,
            window=endpoint.window,
            warm_start=warm,
            max_concurrency=req.concurrency,
            key_prefix=req.redis_prefix or DEFAULT_KEY_PREFIX,
            max_wait=None if req.wait else req.max_wait,
        )
        await shared.connect()
        # The crawler reads estimate(), window, window_count() and paused_until, which the shared
        # controller has with the same meaning (its annotation names the local class).
        controller = cast(RateController, shared)
    else:
        controller = RateController(
            window=endpoint.window, warm_start=warm, max_concurrency=req.concurrency
        )
    options = CrawlOptions(
        strategy=req.strategy,
        concurrency=req.concurrency,
        max_requests=req.max_requests,
        max_artists=req.max_artists,
        duration=req.duration,
        hydrate=req.hydrate,
        max_wait=req.max_wait,
        wait=req.wait,
    )
    quota = _quota_pacer(req, endpoint, store, display)
    received: list[int] = []
    async with SpotifyClient(
        endpoint.credentials,
        api_base=endpoint.api_base,
        token_url=endpoint.token_url,
        settings=endpoint.settings,
        controller=controller,
        max_wait=req.max_wait,
        wait=req.wait,
        on_wait=display.countdown,
        on_waiting=display.waiting,
        quota=quota,
    ) as client:
        crawler = Crawler(
            store,
            client,
            controller,
            options,
            client_id=client_id,
            api_base=endpoint.api_base,
            on_progress=display,
            on_wait=display.waiting,
            quota=quota,
        )
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1:
                crawler.request_stop(STOP_SIGNALS[signum][0])
            elif main_task is not None:  # a second signal: stop now, still committing
                main_task.cancel()

        for signum in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, on_signal, signum)
        try:
            with display:
                report = await crawler.run()
        except asyncio.CancelledError:
            report = crawler.report()
        except Exception:
            if on_failure is not None:
                with contextlib.suppress(Exception):  # best effort: the error is what must show
                    on_failure(_summary(crawler.report(), client))
            raise
        finally:
            for signum in STOP_SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
                if received:  # stopping already: a signal a moment late must not cut the end short
                    signal.signal(signum, signal.SIG_IGN)
            if shared is not None:
                await shared.aclose()
    code = 0
    if received:
        code = STOP_SIGNALS[received[0]][1]
    summary = _summary(report, client)
    print(
        f"{report.stop_reason}: {report.artists:,} artists ({report.full:,} full), "
        f"{report.new_artists:,} new this run, {report.requests:,} requests in "
        f"{report.elapsed:.1f}s",
        flush=True,
    )
    return summary, code


def _summary(report: CrawlReport, client: SpotifyClient) -> dict[str, Any]:
    """The figures ``--stats-json`` holds: the crawl's report and the client's counters."""
    summary = report.to_json()
    summary["client"] = client.stats.as_dict()
    return summary
