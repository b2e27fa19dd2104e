"""Fixtures of the reliability tests: the results file and the uninterrupted reference crawl."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    SIM_ARGS,
    DbState,
    Results,
    SimProcess,
    crawl_cmd,
    read_db,
    run_cli,
)


@pytest.fixture(scope="session")
def results() -> Iterator[Results]:
    """Figures for RELIABILITY.md; written to build/reliability.json when the session ends."""
    gathered = Results()
    yield gathered
    gathered.save()


@dataclass(frozen=True)
class Reference:
    """An uninterrupted ``--strategy search`` crawl of the test catalog, start to finish."""

    db: Path
    state: DbState
    sim_stats: dict[str, Any]
    stats: dict[str, Any]
    elapsed: float

    @property
    def requests_sent(self) -> int:
        return int(self.stats["client"]["requests"])


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The crawl every interrupted or faulty one is compared with (same catalog, same code)."""
    folder = tmp_path_factory.mktemp("reference")
    db = folder / "reference.db"
    stats = folder / "stats.json"
    with SimProcess(*SIM_ARGS) as sim:
        run = run_cli(
            crawl_cmd(sim, db, "--strategy", "search", "--stats-json", str(stats)),
            cwd=folder,
            stats_json=stats,
        )
        sim_stats = sim.stats()
    assert run.code == 0, str(run)
    assert run.stats is not None
    state = read_db(db)
    assert state.artists and state.count(1) == 0 and state.count(0, "search") == 0
    return Reference(db, state, sim_stats, run.stats, run.elapsed)
