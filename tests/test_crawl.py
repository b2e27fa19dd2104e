"""The crawl, end to end against the real simulator in process (``httpx.ASGITransport``).

Coverage is checked against the simulator's own catalog, never against the crawler's account.
"""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from spotify_ingest.client import SpotifyClient
from spotify_ingest.config import Credentials
from spotify_ingest.crawler import Crawler, CrawlOptions, CrawlReport, Progress, retry_delay
from spotify_ingest.ratecontrol import LimitEstimate, RateController
from spotify_ingest.sim.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SimConfig, create_app
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.store.sqlite import SQLiteStore

N = 2500
WINDOW = 1.0
API = "http://sim.test/v1"


@functools.lru_cache(maxsize=4)
def catalog(n: int = N, seed: int = 7) -> Catalog:
    return Catalog(n, seed)


def warm(limit: int = 400) -> LimitEstimate:
    """A learned limit, so tests do not spend seconds ramping up from a cold start."""
    return LimitEstimate(limit=limit, lower=limit, upper=None, window=WINDOW, observed_at=0.0)


async def crawl(
    db: Path,
    profile: str = "dev-2026",
    strategy: str = "auto",
    *,
    n: int = N,
    sim_limit: int = 1000,
    concurrency: int = 4,
    on_progress: Callable[[Progress], None] | None = None,
    offset_rule: str = "offset",
    **options: Any,
) -> tuple[CrawlReport, dict[str, Any]]:
    config = SimConfig(
        artists=n,
        seed=7,
        profile=profile,
        limit=sim_limit,
        window=WINDOW,
        offset_rule=offset_rule,
    )
    app = create_app(config, catalog=catalog(n))
    transport = httpx.ASGITransport(app=app)
    controller = RateController(window=WINDOW, warm_start=warm(), max_concurrency=concurrency)
    creds = Credentials(client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    with SQLiteStore(db) as store:
        async with SpotifyClient(
            creds,
            api_base=API,
            token_url="http://sim.test/api/token",
            controller=controller,
            transport=transport,
        ) as client:
            crawler = Crawler(
                store,
                client,
                controller,
                CrawlOptions(strategy=strategy, concurrency=concurrency, **options),
                client_id=DEMO_CLIENT_ID,
                api_base=API,
                on_progress=on_progress,
            )
            report = await crawler.run()
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as raw:
            truth = (await raw.get("/__sim/stats")).json()
    return report, truth


def stored(db: Path) -> dict[str, str]:
    with SQLiteStore(db, create=False) as store:
        return {a["id"]: a["detail"] for a in store.iter_artists()}


def everyone(n: int = N) -> set[str]:
    return set(catalog(n).iter_artist_ids())


async def test_search_reaches_every_artist_in_full_on_a_new_app(tmp_path: Path) -> None:
    report, truth = await crawl(tmp_path / "c.db", "dev-2026", "search")
    found = stored(tmp_path / "c.db")
    assert set(found) == everyone()
    assert set(found.values()) == {"full"}
    assert report.stop_reason == "done"
    assert truth["requests_total"] <= 0.4 * N, "search pages, not one lookup per artist"
    assert truth["escalations"] == 0
    assert report.capabilities["search"] and not report.capabilities.get("related_artists")


async def test_search_is_complete_under_either_offset_rule(tmp_path: Path) -> None:
    """A server that refuses offset + limit > 1000 (400) loses no artist and fails no task.

    In this 10,000-artist catalog the root ``c`` lists exactly 1,010 artists: under the default
    rule its page at offset 1000 is served; under ``offset+limit`` it is refused, and the node
    must split instead.
    """
    n = 10_000
    c_total = catalog(n).search("c", ["artist"], 0, 10)["artist"][0]
    assert 1000 < c_total <= 1010, "the catalog no longer exercises the rule"
    results = {}
    for rule in ("offset", "offset+limit"):
        db = tmp_path / f"{rule}.db"
        report, _ = await crawl(db, "dev-2026", "search", n=n, offset_rule=rule)
        assert report.stop_reason == "done"
        assert report.tasks_failed == 0
        results[rule] = set(stored(db))
        with SQLiteStore(db, create=False) as store:
            status = {node.query: node.status for node in store.search_nodes()}
        assert status["c"] == ("paging" if rule == "offset" else "split")
    assert results["offset+limit"] == results["offset"] == everyone(n)


async def test_the_heap_that_exists_at_start_is_frozen_for_the_crawl_only(tmp_path: Path) -> None:
    frozen: list[int] = []
    before = gc.get_freeze_count()
    await crawl(tmp_path / "c.db", on_progress=lambda _: frozen.append(gc.get_freeze_count()))
    assert frozen and min(frozen) > before + 10_000  # the imported modules, at least
    assert gc.get_freeze_count() == before  # a process that goes on gets its heap back


async def test_auto_on_extended_uses_what_the_app_has(tmp_path: Path) -> None:
    report, _ = await crawl(tmp_path / "c.db", "extended", "auto")
    found = stored(tmp_path / "c.db")
    assert set(found) == everyone()
    assert sum(d == "full" for d in found.values()) >= 0.995 * N
    caps = report.capabilities
    assert caps["artists"] and caps["related_artists"] and caps["featured_playlists"]
    assert report.yields["hydrate"]["requests"] * 10 < N, "hydrated in batches of 50"
    assert report.requests <= 0.5 * N


async def test_the_seed_plan_finds_nothing_for_a_new_app(tmp_path: Path) -> None:
    report, truth = await crawl(tmp_path / "c.db", "dev-2026", "seed")
    assert stored(tmp_path / "c.db") == {}
    assert report.stop_reason == "done"
    assert not report.capabilities["featured_playlists"]
    assert truth["requests_total"] < 20, "only the capability probes"


async def test_the_seed_plan_still_works_with_extended_quota(tmp_path: Path) -> None:
    report, _ = await crawl(tmp_path / "c.db", "extended", "seed")
    found = stored(tmp_path / "c.db")
    assert 0 < len(found) < N, "playlists and related artists never reach the long tail"
    assert set(report.yields) >= {"featured_playlists", "playlist_items", "related", "hydrate"}
    assert report.yields["related"]["requests"] > 0


async def test_albums_strategy_follows_collaborations(tmp_path: Path) -> None:
    report, _ = await crawl(tmp_path / "c.db", "dev-2026", "albums", max_requests=400)
    assert report.yields["artist_albums"]["requests"] > 0
    assert report.yields["album"]["requests"] > 0
    with SQLiteStore(tmp_path / "c.db", create=False) as store:
        found_by = {a["found_by"] for a in store.iter_artists()}
    assert {"search", "artist_albums"} <= found_by or {"search", "album"} <= found_by


async def test_a_stopped_crawl_resumes_to_the_same_result(tmp_path: Path) -> None:
    whole = tmp_path / "whole.db"
    await crawl(whole, "dev-2026", "search")
    parts = tmp_path / "parts.db"
    first, _ = await crawl(parts, "dev-2026", "search", max_requests=120)
    assert first.stop_reason == "max-requests"
    assert 0 < len(stored(parts)) < N
    second, _ = await crawl(parts, "dev-2026", "search", max_requests=200)
    assert second.stop_reason == "max-requests"
    last, _ = await crawl(parts, "dev-2026", "search")
    assert last.stop_reason == "done"
    assert stored(parts) == stored(whole)
    with SQLiteStore(parts, create=False) as store:
        counts = store.task_counts()["search"]
        assert "leased" not in counts and "pending" not in counts


async def test_one_worker_makes_the_same_choices_every_time(tmp_path: Path) -> None:
    async def choices(db: Path) -> list[tuple[str, str]]:
        await crawl(db, "dev-2026", "auto", concurrency=1, max_requests=150)
        with SQLiteStore(db, create=False) as store:
            rows = store._db.execute(
                "SELECT kind, key FROM tasks WHERE state = 2 ORDER BY finished_at, id"
            ).fetchall()
        return [(k, key) for k, key in rows]

    first = await choices(tmp_path / "a.db")
    second = await choices(tmp_path / "b.db")
    assert first == second
    assert len({kind for kind, _ in first}) >= 2, "the planner explored more than one kind"


async def test_the_planner_retires_kinds_that_stop_yielding(tmp_path: Path) -> None:
    report, _ = await crawl(tmp_path / "c.db", "dev-2026", "auto")
    assert set(stored(tmp_path / "c.db")) == everyone()
    # Albums hold only artists search finds anyway here: each kind gets its 50 requests of
    # patience (plus what was already claimed) and is retired.
    for kind in ("artist_albums", "album"):
        assert 50 <= report.yields[kind]["requests"] <= 70, report.yields


async def test_the_learned_limit_is_stored_and_reused(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    await crawl(db, "dev-2026", "search", max_requests=100)
    with SQLiteStore(db, create=False) as store:
        (row,) = store.rate_estimates()
        assert row["api_base"] == API
        assert DEMO_CLIENT_ID not in json.dumps(row), "client ids are hashed"
        assert Crawler.load_estimate(store, DEMO_CLIENT_ID, API) is not None


async def test_search_requests_no_child_that_held_names_did_not_predict(tmp_path: Path) -> None:
    """Children of split nodes are asked for when a held name word continues the prefix; the
    rest wait for the end and are mostly skipped. None asked for early turns out empty, and the
    deferred ones cost few requests."""
    db, n = tmp_path / "c.db", 6000  # big enough that letters like "t" need splitting
    await crawl(db, "dev-2026", "search", n=n, concurrency=8)
    assert set(stored(db)) == everyone(n)
    with SQLiteStore(db, create=False) as store:
        rows = store._db.execute(
            "SELECT json_extract(t.params, '$.q'), json_extract(t.params, '$.role'), t.requests, "
            "n.total FROM tasks t LEFT JOIN search_nodes n ON n.query = json_extract(t.params, "
            "'$.q') WHERE t.kind = 'search' AND json_extract(t.params, '$.offset') = 0"
        ).fetchall()
    splits = [r for r in rows if len(r[0]) >= 2]
    assert any(role == "node" for _, role, _, _ in splits), "the tree has split nodes"
    empty_now = [q for q, role, _, total in splits if role == "node" and total == 0]
    assert empty_now == []
    deferred = [r for r in splits if r[1] == "spec"]
    asked = sum(requests for _, _, requests, _ in deferred)
    assert len(deferred) > 0 and asked <= 0.5 * len(deferred), "most deferred children skipped"


def test_a_task_backs_off_half_a_window_doubling_up_to_ten_windows() -> None:
    assert [retry_delay(k, 30.0) for k in range(1, 9)] == [15, 30, 60, 120, 240, 300, 300, 300]
    assert retry_delay(1, 1.0) == 0.5 and retry_delay(50, 1.0) == 10.0
