"""Smoke test of the side-by-side benchmark (issue 5): every contender runs and is measured.

One tiny scenario (2,000 artists, Extended Quota profile, where every contender can crawl), a
budget of a few seconds per contender, through the ``bench`` command registered on a Typer app of
our own. Nothing here depends on speed: only that each run produced its figures and that they are
sane (requests made, coverage within [0, 1], plots and JSON written).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from spotify_ingest.benchmark import runner as bench_runner
from spotify_ingest.benchmark.cli import bench_command
from spotify_ingest.benchmark.harness import CONTENDERS
from spotify_ingest.benchmark.metrics import capacity, coverage_times, utilisation
from spotify_ingest.benchmark.report import SECTION_TITLE, publish
from spotify_ingest.benchmark.scenarios import BenchScale

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
        assert fig["found"] > 0, name
        assert 0.0 <= fig["ratio_429"] <= 1.0, name
        assert fig["escalations"] >= 0, name
        assert fig["utilisation"] is None or 0.0 <= fig["utilisation"] <= 1.5, name
        assert fig["requests_per_artist"] is not None and fig["requests_per_artist"] > 0, name
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
    assert (tmp_path / "results" / "extended-coverage.png").exists()


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
