"""The contenders that run spotify-ingest's engine: ours, fixed rate and botocore adaptive.

All three are ``Crawler(strategy="auto")`` over a fresh SQLite store with ``SpotifyClient`` (the
defaults of ``spotify-ingest crawl``: 8 workers; plus ``--wait``), on the simulator's scaled
clock; they differ only in the controller: our ``RateController`` (window 30 s), or one of the
adapters of ``adapters.py``. The crawl stops when it is done, holds the target share of the
catalog (``max_artists``), or reaches the budget (``duration``). Samples come from the crawler's
progress callback (every 0.25 s), with what the controller believed at that moment
(``controller.jsonl``: its limit estimate, our controller's target, its window count, requests in
flight, CPU seconds so far, the load average: enough to tell pacing from starvation); the
artists are read back from the store at the end.

``--wait`` (``wait=True``): a Retry-After above ``--max-wait`` (900 s) would otherwise stop the
crawl with exit code 75 and state saved, for the user to run it again later. Here the crawl waits
it out instead, so that a penalty costs what it costs a user who comes back when told: time, inside
the run's budget. It only matters for contenders that earn long penalties.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from spotify_ingest.client import RateControllerLike, SpotifyClient
from spotify_ingest.config import Credentials
from spotify_ingest.crawler import Crawler, CrawlOptions, Progress
from spotify_ingest.errors import SpotifyIngestError
from spotify_ingest.ratecontrol import RateController
from spotify_ingest.store.sqlite import SQLiteStore

from .adapters import BotocoreAdaptiveController, FixedRateController
from .clock import SimTime
from .record import ContenderSpec, Recorder

__all__ = ["CRAWLER_CONTENDERS", "run_crawler_contender"]

CRAWLER_CONTENDERS = ("fixed-rate", "botocore-adaptive", "spotify-ingest")


def _controller(spec: ContenderSpec, clock: SimTime) -> RateControllerLike:
    if spec.contender == "spotify-ingest":
        return RateController(window=spec.window_sim, max_concurrency=spec.concurrency, clock=clock)
    if spec.contender == "fixed-rate":
        return FixedRateController(spec.fixed_rate, window=spec.window_sim, clock=clock)
    if spec.contender == "botocore-adaptive":
        return BotocoreAdaptiveController(window=spec.window_sim, clock=clock)
    raise ValueError(f"not a crawler contender: {spec.contender}")


async def _crawl(spec: ContenderSpec, rec: Recorder, db: Path) -> dict[str, Any]:
    clock = SimTime(spec.time_scale)
    controller = _controller(spec, clock)
    creds = Credentials(client_id=spec.client_id, client_secret=spec.client_secret)
    extra: dict[str, Any] = {}

    trace = (rec.out_dir / "controller.jsonl").open("w")

    def on_progress(p: Progress) -> None:
        rec.sample(p.artists, p.full)
        # What the controller believed and how busy the crawl was: [t, limit estimate, target
        # (ours), window count, requests in flight (ours), CPU seconds so far, load average].
        target = getattr(controller, "target", None)
        in_flight = getattr(controller, "in_flight", None)
        row = [
            round(time.monotonic(), 4),
            p.limit_estimate,
            target,
            round(p.rate * p.window),
            in_flight,
            round(time.process_time(), 3),
            os.getloadavg()[0],
        ]
        trace.write(json.dumps(row) + "\n")

    with SQLiteStore(db) as store:
        async with SpotifyClient(
            creds,
            api_base=spec.api_base,
            token_url=spec.token_url,
            controller=controller,
            clock=clock,
            wait=True,
        ) as client:
            crawler = Crawler(
                store,
                client,
                cast(RateController, controller),
                CrawlOptions(
                    strategy="auto",
                    concurrency=spec.concurrency,
                    max_artists=spec.target_artists,
                    duration=spec.budget,
                ),
                client_id=spec.client_id,
                api_base=spec.api_base,
                on_progress=on_progress,
            )
            rec.start()
            # ``duration`` is checked by workers between tasks; when every worker is inside a
            # long wait (a penalty waited out), nobody checks it. So at the budget the crawl is
            # also asked to stop from outside (``request_stop``, the path Ctrl-C takes), and half
            # a window later cancelled (the crawler's own grace is 5 real seconds, which would
            # only make a compressed benchmark longer; state is committed either way).
            loop = asyncio.get_running_loop()
            run = asyncio.ensure_future(crawler.run())
            timers = [
                loop.call_later(spec.budget, crawler.request_stop, "duration"),
                loop.call_later(spec.budget + spec.window_real / 2, run.cancel),
            ]
            try:
                report = await run
                extra["stop_reason"] = _reason(report.stop_reason)
                extra["report"] = report.to_json()
            except asyncio.CancelledError:
                extra["stop_reason"] = "budget"
                extra["report"] = crawler.report().to_json()
            except SpotifyIngestError as exc:  # MustWaitError and the like end the crawl
                extra["stop_reason"] = f"error: {type(exc).__name__}: {exc}"
                extra["report"] = crawler.report().to_json()
            finally:
                for timer in timers:
                    timer.cancel()
            extra["client"] = client.stats.as_dict()
            extra["estimate"] = controller_estimate(controller)
            refusals = getattr(controller, "refusals", None)
            if refusals is not None:  # ours: what each 429 was taken for, when (windows)
                extra["refusals"] = [
                    [round((t / clock.scale - rec.t0) / spec.window_real, 2), kind]
                    for t, kind in refusals
                ]
                extra["probes"] = getattr(controller, "probes", None)
    trace.close()
    return extra


def _reason(stop_reason: str) -> str:
    return {"max-artists": "target", "duration": "budget"}.get(stop_reason, stop_reason)


def controller_estimate(controller: RateControllerLike) -> dict[str, Any] | None:
    est = getattr(controller, "estimate", None)
    if est is None:
        return None
    e = est()
    return {"limit": e.limit, "lower": e.lower, "upper": e.upper, "window": e.window}


def run_crawler_contender(spec: ContenderSpec, rec: Recorder) -> None:
    """Run one crawl and write its results (see ``record.py``)."""
    with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
        db = Path(tmp) / "crawl.db"
        extra = asyncio.run(_crawl(spec, rec, db))
        con = sqlite3.connect(db)
        try:
            rows = con.execute("SELECT id, detail FROM artists").fetchall()
        finally:
            con.close()
        stop_reason = str(extra.pop("stop_reason"))
        rec.finish(stop_reason, ((str(r[0]), r[1] == 1) for r in rows), extra)
