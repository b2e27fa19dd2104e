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

_OUTCOMES: dict[str, str] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each test's outcome, for the status column of RELIABILITY.md."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            _OUTCOMES[item.nodeid] = "xfailed" if report.skipped else "XPASS"
        else:
            _OUTCOMES.setdefault(item.nodeid, report.outcome)
            if report.outcome != "passed":
                _OUTCOMES[item.nodeid] = report.outcome


@pytest.fixture(scope="session")
def results() -> Iterator[Results]:
    """Figures for RELIABILITY.md; written to build/reliability.json when the session ends."""
    gathered = Results()
    yield gathered
    gathered.outcomes = {k: v for k, v in _OUTCOMES.items() if "tests/reliability/" in k}
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
