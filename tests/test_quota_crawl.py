"""The learned quota against the real simulator: one lockout, then crawls that never trip it.

The simulator runs in process (``httpx.ASGITransport``) on a compressed clock (``time_scale``);
the crawler's client, rate controller and quota pacer run on the same compressed time
(``SimTime``), and the pacer's wall clock is the real one compressed alike, so that runs that
follow one another see one time line. Figures come from the simulator's ground truth: its quota
refusals and the times of the requests it accepted.

``run_quota_crawls`` is also the body of ``bench/quota.py`` (the same scenario, longer).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from spotify_ingest.benchmark.clock import SimTime
from spotify_ingest.client import SpotifyClient
from spotify_ingest.config import Credentials
from spotify_ingest.crawler import Crawler, CrawlOptions, Progress
from spotify_ingest.errors import MustWaitError
from spotify_ingest.quota import QuotaPacer
from spotify_ingest.ratecontrol import LimitEstimate, RateController
from spotify_ingest.sim.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SimApp, SimConfig, create_app
from spotify_ingest.store.sqlite import SQLiteStore
from tests.reliability.harness import CLI, SimProcess, crawl_cmd, run_cli

API = "http://sim.test/v1"
WINDOW = 30.0  # simulated seconds, as Spotify's


@dataclass(frozen=True)
class QuotaScenario:
    quota: int = 300  # accepted calls per period
    period: float = 600.0  # simulated seconds
    time_scale: float = 60.0  # simulated seconds per real second
    limit: int = 60  # hidden window limit per 30 simulated seconds
    artists: int = 50_000
    minutes: float = 30.0  # simulated minutes of the crawl after the lockout
    concurrency: int = 8


@dataclass
class QuotaOutcome:
    first_run_error: str  # the MustWaitError of the run that met the lockout
    lockout_refusals: int  # quota 429s of that run (the requests in flight with it)
    refusals_after: int  # quota 429s of the paced run: must be 0
    learned: dict[str, Any]  # the estimate the paced run started from
    per_period: list[int]  # accepted calls in each whole period of the paced run
    requests: int  # requests of the paced run
    lines: list[str]  # the display's quota lines of the paced run

    def usage(self, quota: int) -> float:
        return min(self.per_period) / quota if self.per_period else 0.0


async def _crawl(
    app: SimApp, db: Path, s: QuotaScenario, *, wait: bool, duration: float, lines: list[str]
) -> QuotaPacer:
    clock = SimTime(s.time_scale)
    controller = RateController(
        window=WINDOW,
        warm_start=LimitEstimate(limit=s.limit, lower=s.limit, upper=None, window=WINDOW,
                                 observed_at=0.0),
        max_concurrency=s.concurrency,
        clock=clock,
    )  # fmt: skip
    quota = QuotaPacer(
        bucket=WINDOW / 10, wait=wait, max_wait=3600.0, clock=clock,
        wall=lambda: time.time() * s.time_scale,
    )  # fmt: skip

    def on_progress(p: Progress) -> None:
        if p.quota and (not lines or lines[-1] != p.quota):
            lines.append(p.quota)

    creds = Credentials(client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    with SQLiteStore(db) as store:
        Crawler.load_quota(store, DEMO_CLIENT_ID, API, quota)
        async with SpotifyClient(
            creds, api_base=API, token_url="http://sim.test/api/token", controller=controller,
            transport=httpx.ASGITransport(app=app), clock=clock, wait=wait, quota=quota,
        ) as client:  # fmt: skip
            crawler = Crawler(
                store,
                client,
                controller,
                CrawlOptions(strategy="search", concurrency=s.concurrency, duration=duration),
                client_id=DEMO_CLIENT_ID,
                api_base=API,
                on_progress=on_progress,
                quota=quota,
            )
            await crawler.run()
    return quota


async def run_quota_crawls(db: Path, s: QuotaScenario) -> QuotaOutcome:
    """A crawl that meets the quota (exit 75), then one of ``s.minutes`` that paces under it."""
    config = SimConfig(artists=s.artists, seed=0, profile="dev-2026", limit=s.limit,
                       window=WINDOW, quota=s.quota, quota_period=s.period,
                       time_scale=s.time_scale)  # fmt: skip
    app = create_app(config)
    limiter = app.sim.limiter
    lines: list[str] = []
    with pytest.raises(MustWaitError) as stopped:
        await _crawl(app, db, s, wait=False, duration=s.period / s.time_scale, lines=lines)
    first_refusals = limiter.rejected_quota
    with SQLiteStore(db, create=False) as store:
        learned = store.get_meta(f"quota:{store_key(store)}")["estimate"]
        # The crawler keeps the lockout's Retry-After as a deadline on the real clock as well;
        # on this compressed time line the pacer, which learned the same end, waits it out.
        for key, _ in store.meta_items("retry_deadline:"):
            store.set_meta(key, None)
        store.flush()
    started = app.sim.clock.now() - app.sim.origin
    await _crawl(app, db, s, wait=True, duration=s.minutes * 60 / s.time_scale, lines=lines)
    ended = app.sim.clock.now() - app.sim.origin
    times = limiter.truth_by_client[DEMO_CLIENT_ID].times
    first, last = math.ceil(started / s.period), math.floor(ended / s.period)
    counts = [0] * max(0, last - first)
    for t in times:
        k = math.floor((t - app.sim.origin) / s.period) - first
        if 0 <= k < len(counts):
            counts[k] += 1
    return QuotaOutcome(
        first_run_error=str(stopped.value),
        lockout_refusals=first_refusals,
        refusals_after=limiter.rejected_quota - first_refusals,
        learned=learned,
        per_period=counts,
        requests=sum(1 for t in times if t - app.sim.origin >= started),
        lines=lines,
    )


def store_key(store: SQLiteStore) -> str:
    """The client and API part of the meta keys of the learned limits (one client here)."""
    (row,) = store.rate_estimates()
    return f"{row['client']}:{row['api_base']}"


@pytest.mark.slow  # 45 s: a lockout of most of a period, then three periods
async def test_after_one_lockout_a_paced_crawl_never_trips_the_quota(tmp_path: Path) -> None:
    s = QuotaScenario()
    out = await run_quota_crawls(tmp_path / "quota.db", s)
    assert "quota" in out.first_run_error and out.lockout_refusals >= 1
    assert out.learned["period"] == s.period
    assert s.quota * 0.95 <= out.learned["budget"] <= s.quota
    assert out.refusals_after == 0, "the paced crawl tripped the quota again"
    assert len(out.per_period) >= 2
    assert out.usage(s.quota) >= 0.9, out.per_period
    assert max(out.per_period) <= s.quota
    assert any("calls left per 10m00s" in line and "days left" in line for line in out.lines)


@pytest.mark.slow  # 45 s: a 10 s period in real time, a lockout, then 25 s of crawling
def test_the_cli_learns_the_quota_in_one_run_and_paces_the_next(tmp_path: Path) -> None:
    """``spotify-ingest crawl`` against ``sim serve --quota 150 --quota-period 10`` in real time:
    the first run meets the quota (exit 75), the next one (``--wait``) paces under it, and its
    log and ``limits`` show the quota."""
    sim_args = ("--artists", "50000", "--window", "1", "--limit", "100")
    crawl_args = ("--strategy", "search", "--concurrency", "8")
    with SimProcess(*sim_args, "--quota", "150", "--quota-period", "10") as sim:
        db = tmp_path / "cli.db"
        # Start just before a period begins, so that the lockout lasts most of a period.
        time.sleep(10.0 - (sim.stats()["uptime_s"] + 0.5) % 10.0)
        first = run_cli(crawl_cmd(sim, db, *crawl_args), cwd=tmp_path)
        assert first.code == 75, first
        refused = sim.stats()["rejected_quota"]
        second = run_cli(crawl_cmd(sim, db, *crawl_args, "--wait", "--duration", "25"),
                         cwd=tmp_path)  # fmt: skip
        assert second.code == 0, second
        stats = sim.stats()
        limits = run_cli([*CLI, "limits", "--db", str(db)], cwd=tmp_path)
    assert stats["rejected_quota"] == refused, "the second run tripped the quota again"
    assert stats["accepted"] >= 150 + 2 * 142
    assert "quota: " in second.stderr and "calls left per 10s" in second.stderr
    assert "  quota: " in limits.stdout and "calls left per 10s" in limits.stdout
