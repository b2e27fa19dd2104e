"""Crawl benchmark: coverage, requests per artist and utilisation, from ground truth.

Each run starts a fresh simulator PROCESS on a loopback port (same seed, profile, catalog and
hidden limit for every strategy in a scenario; its own process so that the crawler's CPU and RSS
are the crawler's), crawls it to the end with spotify-ingest's engine, and then
reads the simulator's own account (``/__sim/stats``, ``/__sim/catalog``): coverage is the share of
the catalog's artist ids in the crawl's database, utilisation is accepted requests over
``L x elapsed / W``, the 429 ratio is the simulator's count over all requests.

    .venv/bin/python bench/crawl.py --artists 100000 --profile dev-2026 --strategies auto seed
    .venv/bin/python bench/crawl.py --artists 100000 --profile extended --strategies auto seed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from spotify_ingest.client import SpotifyClient
from spotify_ingest.config import Credentials
from spotify_ingest.crawler import Crawler, CrawlOptions
from spotify_ingest.ratecontrol import RateController
from spotify_ingest.store.sqlite import CRAWL_OPTIONS, SQLiteStore

DEMO_ID, DEMO_SECRET = "demo-client-id", "demo-client-secret"


class SimProcess:
    """``spotify-ingest sim serve`` in a child process on a free loopback port."""

    def __init__(self, args: list[str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_base = self.base_url + "/v1"
        self.token_url = self.base_url + "/api/token"
        self.stats_url = self.base_url + "/__sim/stats"
        cmd = [sys.executable, "-m", "spotify_ingest.sim.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen([*cmd, *args], stdout=subprocess.DEVNULL)

    def __enter__(self) -> SimProcess:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("simulator exited at start")
            try:
                httpx.get(self.stats_url, timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("simulator did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _crawl(server: SimProcess, db: Path, strategy: str, window: float, **kw: Any) -> Any:
    creds = Credentials(client_id=DEMO_ID, client_secret=DEMO_SECRET)
    concurrency = kw.pop("concurrency", 16)
    controller = RateController(window=window, max_concurrency=concurrency)
    with SQLiteStore(db, **CRAWL_OPTIONS) as store:
        async with SpotifyClient(
            creds, api_base=server.api_base, token_url=server.token_url, controller=controller
        ) as client:
            crawler = Crawler(
                store,
                client,
                controller,
                CrawlOptions(strategy=strategy, concurrency=concurrency, **kw),
                client_id=DEMO_ID,
                api_base=server.api_base,
            )
            return await crawler.run()


def run_one(
    *, artists: int, profile: str, limit: int, window: float, strategy: str, seed: int,
    max_requests: int | None, duration: float | None, concurrency: int = 16,
    keep_db: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    sim_args = [
        "--artists", str(artists), "--seed", str(seed), "--profile", profile,
        "--limit", str(limit), "--window", str(window),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, SimProcess(sim_args) as server:
        db = Path(tmp) / "crawl.db"
        cpu0 = time.process_time()
        t0 = time.monotonic()
        report = asyncio.run(
            _crawl(
                server,
                db,
                strategy,
                window,
                max_requests=max_requests,
                duration=duration,
                concurrency=concurrency,
            )
        )
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        crawl_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the truth
        truth = httpx.get(server.stats_url, timeout=30).json()
        catalog = set(httpx.get(server.base_url + "/__sim/catalog", timeout=120).text.split())
        con = sqlite3.connect(db)
        rows = con.execute("SELECT id, detail FROM artists").fetchall()
        con.close()
        found = {r[0] for r in rows}
        if keep_db is not None:  # the crawl's database and the ids it missed, to look at later
            db.replace(keep_db)
            missed = sorted(catalog - found)
            keep_db.with_suffix(".missed").write_text("".join(i + "\n" for i in missed))
    full = {r[0] for r in rows if r[1] == 1}
    accepted = int(truth["accepted"])
    total = int(truth["requests_total"])
    steady = max(elapsed - 3 * window, 1e-9)
    return {
        "strategy": strategy,
        "profile": profile,
        "artists": artists,
        "limit": limit,
        "window": window,
        "stop_reason": report.stop_reason,
        "elapsed_s": round(elapsed, 1),
        "windows": round(elapsed / window, 1),
        "requests": total,
        "coverage": round(len(found & catalog) / len(catalog), 5),
        "full_details": round(len(full & catalog) / len(catalog), 5),
        "not_in_catalog": len(found - catalog),
        "requests_per_artist": round(total / max(1, len(found & catalog)), 4),
        "utilisation": round(accepted / (limit * elapsed / window), 3),
        "utilisation_after_3_windows": round(
            max(0, accepted - 3 * limit) / (limit * steady / window), 3
        ),
        "ratio_429": round(int(truth["rejected_429"]) / max(1, total), 5),
        "escalations": truth["escalations"],
        "peak_rss_mb": round(crawl_rss, 1),  # the crawler's process, before reading the truth
        "cpu_s_per_1000_requests": round(1000 * cpu / max(1, total), 2),
        "yields": report.yields,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artists", type=int, default=20_000)
    ap.add_argument("--profile", default="dev-2026")
    ap.add_argument("--limit", type=int, default=150, help="hidden limit per window")
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", nargs="+", default=["auto"])
    ap.add_argument("--max-requests", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", type=Path, help="append results as JSON lines here")
    ap.add_argument(
        "--keep-db",
        type=Path,
        help="keep the (last strategy's) crawl database here, and the ids it missed beside it",
    )
    args = ap.parse_args(argv)
    for strategy in args.strategies:
        result = run_one(
            artists=args.artists, profile=args.profile, limit=args.limit, window=args.window,
            strategy=strategy, seed=args.seed, max_requests=args.max_requests,
            duration=args.duration, concurrency=args.concurrency, keep_db=args.keep_db,
        )  # fmt: skip
        print(json.dumps(result), flush=True)
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
