"""Smoke test of the side-by-side benchmark: every contender runs and is measured.

One tiny scenario (2,000 artists, Extended Quota profile, where every contender can crawl), a
budget of a few seconds per contender, through the ``bench`` command registered on a Typer app of
our own. Nothing here depends on speed: only that each run produced its figures and that they are
sane (requests made, coverage within [0, 1], plots and JSON written).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from spotify_ingest.benchmark import runner as bench_runner
from spotify_ingest.benchmark.adapters import BotocoreAdaptiveController, FixedRateController
from spotify_ingest.benchmark.cli import bench_command
from spotify_ingest.benchmark.clock import SimTime
from spotify_ingest.benchmark.metrics import capacity, coverage_times, utilisation
from spotify_ingest.benchmark.report import SECTION_TITLE, publish
from spotify_ingest.benchmark.scenarios import CONTENDERS, BenchScale
from spotify_ingest.benchmark.seed import RateLimited, SeedPlan
from spotify_ingest.benchmark.spotipy_contender import ScaledTime

TINY = BenchScale(artists=2000, budget=3.0, hard_kill_grace=20.0)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("bench")(bench_command)

    @app.command("noop")
    def noop() -> None:  # a second command, so "bench" stays a subcommand
        pass

    return app


@pytest.mark.slow
def test_bench_command_runs_every_contender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_runner, "scale_for", lambda quick: TINY)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        _app(), ["bench", "--quick", "--scenario", "extended", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    runs = {r["contender"]: r for r in data["runs"]}
    assert set(runs) == set(CONTENDERS)
    for name, fig in runs.items():
        assert "error" not in fig, (name, fig)
        assert fig["requests"] > 0, name
        assert 0.0 <= fig["coverage"] <= 1.0, name
        assert 0.0 <= fig["full_coverage"] <= fig["coverage"] + 1e-9, name
        assert fig["found"] >= 0, name
        assert 0.0 <= fig["ratio_429"] <= 1.0, name
        assert fig["escalations"] >= 0, name
        assert fig["utilisation"] is None or 0.0 <= fig["utilisation"] <= 1.5, name
        assert fig["requests_per_artist"] is None or fig["requests_per_artist"] > 0, name
        assert fig["peak_rss_mb"] is not None and fig["peak_rss_mb"] > 0, name
        assert fig["cpu_s_per_1000_requests"] is not None, name
        assert fig["coverage_series"]["coverage"], name
        assert all(0.0 <= c <= 1.0 for c in fig["coverage_series"]["coverage"]), name
        assert fig["stop_reason"] in {"budget", "target", "done"}, (name, fig["stop_reason"])
    for kind in ("coverage", "rate"):
        png = out / "plots" / f"extended-{kind}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "report.md").read_text()
    for name in CONTENDERS:
        assert f"| {name} |" in table

    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    publish(out, bench_md, tmp_path / "results")
    publish(out, bench_md, tmp_path / "results")  # idempotent: one section, replaced
    text = bench_md.read_text()
    assert text.count(SECTION_TITLE) == 1 and "## Other\n\nkept" in text
    assert (tmp_path / "results" / "issue5-extended-coverage.png").exists()


def test_bench_rejects_unknown_names(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(), ["bench", "--scenario", "nope", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2


def test_metrics() -> None:
    samples = [(10.0, 0, 0), (11.0, 50, 10), (12.0, 95, 20), (13.0, 99, 99)]
    got = coverage_times(samples, 100, 10.0, (0.5, 0.9, 0.99, 1.0))
    assert got == {"50": 1.0, "90": 2.0, "99": 3.0, "100": None}

    def halving(t: float) -> int:
        return 100 if t < 30 else 50

    assert math.isclose(capacity(halving, 0.0, 60.0, 30.0, 0.5), 150.0)
    times = [float(i) * 0.4 for i in range(250)]  # 250 accepted in 100 s
    util, accepted, cap = utilisation(times, lambda t: 100, 0.0, 100.0, 30.0)
    assert accepted == 250 and math.isclose(cap, 100 * 100 / 30)
    assert util is not None and math.isclose(util, 0.75)
    assert utilisation(times, lambda t: 100, 0.0, 10.0, 30.0)[0] is None  # under a window


class _FakeSeedApi:
    """Featured playlist -> 2 artists; related artists of each known id; 429 on one call."""

    def __init__(self, related: dict[str, list[str]], refuse: set[str]) -> None:
        self.related = related
        self.refuse = refuse
        self.requests_sent = 0
        self.calls: list[str] = []

    def featured_playlist_ids(self) -> list[str]:
        return ["p"]

    def playlist_pages(self, playlist_id: str) -> list[str]:
        return ["a"]

    def several_artists(self, ids: list[str]) -> list[dict[str, object]]:
        return [{"id": i, "genres": []} for i in ids]

    def related_artists(self, artist_id: str) -> list[dict[str, object]]:
        self.calls.append(artist_id)
        if artist_id in self.refuse:
            self.refuse.discard(artist_id)
            raise RateLimited(3.0)
        return [{"id": r, "genres": []} for r in self.related.get(artist_id, [])]

    def refresh_token(self) -> None:
        pass


def test_seed_plan_loses_the_popped_artist_on_429() -> None:
    api = _FakeSeedApi({"a": ["b"], "b": ["c"], "c": ["d"]}, refuse={"b"})
    slept: list[float] = []
    plan = SeedPlan(api, sleep=slept.append, should_stop=lambda n: None, on_progress=lambda n: 0)
    assert plan.run() == "done"
    # "b" was refused once and never explored again: "c" and "d" are never found.
    assert set(plan.artists) == {"a", "b"}
    assert api.calls == ["a", "b"] and slept == [3.0] and plan.lost_units == 1


def test_scaled_time_for_spotipy() -> None:
    shim = ScaledTime(100.0)
    t0, m0 = shim.time(), time.monotonic()
    shim.sleep(5.0)  # 5 simulated seconds = 50 ms
    assert time.monotonic() - m0 < 1.0
    assert shim.time() - t0 >= 4.9 and shim.longest_sleep == 5.0


async def test_botocore_adapter_slows_down_after_a_throttle() -> None:
    ctl = BotocoreAdaptiveController(window=30.0, clock=SimTime(1000.0))
    for _ in range(20):  # no pacing before the first throttle, as in botocore
        ctl.on_success(await ctl.acquire())
    assert not ctl.enabled
    ctl.on_rate_limited(await ctl.acquire(), 5.0)
    assert ctl.enabled and ctl.estimate().limit >= 1
    await ctl.acquire()  # paced by the token bucket now, in scaled time: returns


async def test_fixed_rate_adapter_counts_the_window() -> None:
    ctl = FixedRateController(60, window=30.0, clock=SimTime(15.0))
    for _ in range(10):
        ctl.on_success(await ctl.acquire())
    assert ctl.window_count() == 10 and ctl.estimate().limit == 60
