"""Side-by-side crawl benchmark: the seed, spotipy, fixed rate, botocore adaptive, ours.

Every contender crawls a fresh simulator (same seed, profile, catalog and hidden limit) in its own
process, on time compressed by the simulator's ``time_scale`` (``scenarios.py``); the harness reads
the simulator's ground truth and the contender's record (``harness.py``, ``metrics.py``) and
writes tables, plots and raw JSON (``report.py``). ``bench()`` runs it all; ``cli.bench_command``
is the ``spotify-ingest bench`` command.

This package's ``__init__`` stays light: contender processes import ``benchmark.worker`` and must
not load the simulator.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["bench"]


def bench(
    quick: bool,
    scenarios: list[str] | None,
    out: Path,
    contenders: list[str] | None,
    *,
    budget: float | None = None,
) -> int:
    """Run the benchmark; see :func:`spotify_ingest.benchmark.runner.bench`."""
    from .runner import bench as _bench

    return _bench(quick, scenarios, out, contenders, budget=budget)
