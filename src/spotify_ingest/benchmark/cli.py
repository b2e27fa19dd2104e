"""``spotify-ingest bench``: the side-by-side benchmark (registered by ``cli.py``).

    spotify-ingest bench --quick         # ~4.5 min: 5,000 artists (20,000 in large), 9 s per run
    spotify-ingest bench                 # ~27 min: 20,000 artists (100,000 in large), 75 s per run
    spotify-ingest bench --scenario dev-2026 --contender spotify-ingest --contender fixed-rate
    spotify-ingest bench --scenario extended --contender seed --budget 400   # a longer look

Writes tables, plots and raw JSON into ``--out`` (``report.md``, ``plots/``, ``results.json``,
``runs/``). Exit code 0 when every run produced its figures, 1 when one failed, 2 on an unknown
scenario or contender name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .scenarios import CONTENDERS, SCENARIOS

__all__ = ["bench_command"]


def bench_command(
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="5,000 artists (20,000 in 'large') and 9 s per run: about 5 minutes.",
        ),
    ] = False,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            metavar="NAME",
            help=f"Run only this scenario (repeatable): {', '.join(SCENARIOS)}.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder for tables, plots and JSON.")
    ] = Path("bench/out"),
    contender: Annotated[
        list[str] | None,
        typer.Option(
            "--contender",
            metavar="NAME",
            help=f"Run only this contender (repeatable): {', '.join(CONTENDERS)}.",
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            metavar="SECONDS",
            help="Real seconds per run instead of the default (75; 9 with --quick), times the "
            "scenario's factor.",
        ),
    ] = None,
) -> None:
    """Benchmark the seed, spotipy, fixed rate and botocore adaptive against spotify-ingest."""
    from . import bench

    code = bench(quick, scenario or None, out, contender or None, budget=budget)
    if code:
        raise typer.Exit(code)
