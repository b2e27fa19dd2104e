"""Crash safety, proven with real processes: kill a crawl (and exports) again and again, resume it,
and compare the end result with a crawl that was never interrupted.

The simulator runs as its own process (``spotify-ingest sim serve``); every crawl is a real
``spotify-ingest crawl`` process. SIGKILL moments are drawn from a seeded generator, in four
kinds, so that kills land in every phase of a run:

* ``requests``: once the simulator has answered k more requests of this run (k drawn), i.e. in
  the middle of a stream of requests and commits;
* ``time``: after a drawn delay from the start (may land in start-up, the capability probe,
  lease recovery or the crawl itself);
* ``commit``: inside the N-th SQLite COMMIT (``killpoint.py`` arms it; statements done, commit
  not);
* ``response``: right after the N-th API response arrived, before it was parsed or stored.

Every few kills, ``spotify-ingest export`` is started on the same database and SIGKILLed too: the
target file must then be absent or complete, never partial.

After each kill the database must be consistent (see ``harness.consistency_problems``). At the end
a last uninterrupted run must finish the crawl, and its artists, search requests and search tree
must equal the uninterrupted reference; no task may be left leased or pending, none done twice.
SIGINT and SIGTERM are tested the same way for the clean path (exit 130 / 143, "Resume with:").
"""

from __future__ import annotations

import contextlib
import csv
import json
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from spotify_ingest.store.sqlite import CRAWL_GROUP_WRITES

from .conftest import Reference
from .harness import (
    CLI,
    SIM_ARGS,
    DbState,
    Results,
    SimProcess,
    cli_env,
    consistency_problems,
    crawl_cmd,
    read_db,
    run_cli,
    search_requests,
)

SEED = 20261124
MODES = ["requests"] * 8 + ["time"] * 4 + ["commit"] * 4 + ["response"] * 4  # 20 kills
EXPORT_AFTER = {2, 6, 10, 14, 18}  # after these kills, an export is started and killed too
EXPORT_FORMATS = ("jsonl", "csv", "parquet")
LAUNCHER = Path(__file__).with_name("killpoint.py")
CONCURRENCY = 8


def _api_requests(sim_stats: dict[str, Any]) -> int:
    """Requests the simulator answered on /v1 (any status, resets included)."""
    return sum(
        int(v["total"]) for k, v in sim_stats["requests_by_endpoint"].items() if k.startswith("/v1")
    )


def _wait_for_requests(sim: SimProcess, proc: subprocess.Popen[bytes], target: int) -> None:
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if sim.stats()["requests_total"] >= target:
            return
        time.sleep(0.01)


def _export_is_whole_or_absent(path: Path, fmt: str, artists: int) -> str:
    """'absent', or 'complete' after checking every row is there; anything else fails."""
    if not path.exists():
        return "absent"
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == artists and all(r["id"] for r in rows)
    elif fmt == "csv":
        with path.open(encoding="utf-8", newline="") as fh:
            assert sum(1 for _ in csv.DictReader(fh)) == artists
    else:
        import pyarrow.parquet as pq

        assert pq.read_metadata(path).num_rows == artists
    return "complete"


@pytest.mark.slow
def test_sigkill_at_20_random_moments_then_resume_equals_uninterrupted(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    rng = random.Random(SEED)
    modes = MODES.copy()
    rng.shuffle(modes)
    db = tmp_path / "crash.db"
    kills: list[dict[str, Any]] = []
    exports: list[dict[str, Any]] = []
    started = time.monotonic()
    with SimProcess(*SIM_ARGS) as sim:
        cmd = crawl_cmd(sim, db, "--strategy", "search", "--concurrency", str(CONCURRENCY))
        for i, mode in enumerate(modes):
            env = cli_env()
            args = cmd
            point = 0
            if mode in ("commit", "response"):
                # (a commit closes a group of up to CRAWL_GROUP_WRITES writes)
                point = rng.randint(1, 5) if mode == "commit" else rng.randint(1, 60)
                env["SI_KILL_AT_" + mode.upper()] = str(point)
                args = [sys.executable, str(LAUNCHER), *cmd[len(CLI) :]]
            before = sim.stats()["requests_total"]
            with (tmp_path / f"run{i}.err").open("wb") as err:
                proc = subprocess.Popen(
                    args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err
                )
                if mode == "requests":
                    point = rng.randint(5, 40)
                    _wait_for_requests(sim, proc, before + point)
                    proc.kill()
                elif mode == "time":
                    delay = rng.uniform(0.05, 1.5)
                    point = round(delay * 1000)
                    try:
                        proc.wait(delay)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                code = proc.wait(60)
            state = read_db(db) if db.exists() else None
            kills.append(
                {
                    "mode": mode,
                    "at": point,
                    "exit": code,
                    "requests_this_run": sim.stats()["requests_total"] - before,
                    "leased_left": state.count(1) if state else 0,
                    "done": state.count(2) if state else 0,
                    "artists": len(state.artists) if state else 0,
                }
            )
            assert code == -signal.SIGKILL or (mode == "time" and code == 0), (
                f"kill {i} ({mode} at {point}): exit {code}\n"
                + (tmp_path / f"run{i}.err").read_text()[-2000:]
            )
            if state is not None:
                assert consistency_problems(state) == [], f"after kill {i} ({mode} at {point})"

            if i in EXPORT_AFTER and state is not None:
                fmt = EXPORT_FORMATS[len(exports) % len(EXPORT_FORMATS)]
                out = tmp_path / f"artists.{fmt}"
                out.unlink(missing_ok=True)
                export = subprocess.Popen(
                    [*CLI, "export", "--db", str(db), "--format", fmt, "--out", str(out)],
                    cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                delay = rng.uniform(0.1, 1.2)
                try:
                    export.wait(delay)
                except subprocess.TimeoutExpired:
                    export.kill()
                exports.append(
                    {
                        "format": fmt,
                        "killed_after_ms": round(delay * 1000),
                        "exit": export.wait(60),
                        "target": _export_is_whole_or_absent(out, fmt, len(state.artists)),
                    }
                )

        final = run_cli(cmd, cwd=tmp_path, timeout=120)
        sim_stats = sim.stats()
    elapsed = time.monotonic() - started

    assert final.code == 0, str(final)
    assert final.stdout.startswith("done:"), str(final)
    end = read_db(db)
    ref = reference.state
    assert consistency_problems(end) == []
    _assert_same_crawl(end, ref)

    sent = _api_requests(sim_stats)
    ref_sent = _api_requests(reference.sim_stats)
    repeated = sent - ref_sent
    starts = len(kills) + 1
    leftovers = sorted(p.name for p in tmp_path.glob(".artists.*.part"))
    results.add(
        "crash_resume_sigkill",
        fault=f"SIGKILL x{len(kills)} (crawl) + x{len(exports)} (export), then resume",
        kills=kills,
        exports=exports,
        kill_modes={m: modes.count(m) for m in sorted(set(modes))},
        kills_with_leased_tasks_left=sum(1 for k in kills if k["leased_left"]),
        kills_finished_before_kill=sum(1 for k in kills if k["exit"] == 0),
        export_targets={
            s: sum(1 for e in exports if e["target"] == s) for s in ("absent", "complete")
        },
        export_part_files_left=len(leftovers),
        artists=len(end.artists),
        artists_reference=len(ref.artists),
        search_requests_done=len(search_requests(end)),
        requests_recorded=end.requests_recorded,
        requests_recorded_reference=ref.requests_recorded,
        requests_sent=sent,
        requests_sent_reference=ref_sent,
        requests_repeated=repeated,
        repeated_per_restart=round(repeated / starts, 1),
        lost=0,
        elapsed_s=round(elapsed, 1),
    )  # fmt: skip
    # A restart costs the capability probe, the requests in flight at the kill (their answers died
    # with the process) and the tasks of the group of writes not yet committed (at most
    # CRAWL_GROUP_WRITES - 1); anything above that is work done twice.
    per_start = CONCURRENCY + CRAWL_GROUP_WRITES + 12
    assert repeated <= starts * per_start, f"{repeated} requests repeated in {starts} runs"
    # The kills really landed mid-crawl: most left tasks leased (recovered by the next start).
    assert sum(1 for k in kills if k["leased_left"]) >= len(kills) // 2, kills


def _assert_same_crawl(end: DbState, ref: DbState) -> None:
    """The resumed crawl holds what the uninterrupted one holds, each thing once."""
    assert end.count(1) == 0, "tasks left leased"
    assert end.count(3) == 0, "tasks failed"
    assert end.count(0, "search") == 0 and end.count(0, "hydrate") == 0, "work left pending"
    assert set(end.artists) == set(ref.artists), (
        f"{len(set(ref.artists) - set(end.artists))} artists missing, "
        f"{len(set(end.artists) - set(ref.artists))} extra"
    )
    assert end.artists == ref.artists, "artist rows differ (name, detail, genres, uri, url)"
    done, ref_done = search_requests(end), search_requests(ref)
    assert len(done) == len(set(done)), "a search request done twice"
    assert set(done) == set(ref_done)
    assert end.search_nodes == ref.search_nodes


# ------------------------------------------------------------------------------------------------
# The clean path: SIGINT and SIGTERM


def _start_and_signal(
    sim: SimProcess, cmd: list[str], cwd: Path, signals: Sequence[int], after_requests: int
) -> tuple[int, str, float]:
    """Start ``cmd``; after the simulator saw ``after_requests`` more requests send ``signals``
    (10 ms apart); returns exit code, stderr and the seconds from the first signal to the exit."""
    before = sim.stats()["requests_total"]
    err_path = cwd / f"signal-{signals[0]}-{len(signals)}.err"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=cli_env(), stdout=err, stderr=err)
        _wait_for_requests(sim, proc, before + after_requests)
        assert proc.poll() is None, "the crawl finished before the signal"
        sent_at = time.monotonic()
        for signum in signals:
            proc.send_signal(signum)
            time.sleep(0.01)
        code = proc.wait(30)
    return code, err_path.read_text(), time.monotonic() - sent_at


def test_sigint_sigterm_stop_cleanly_and_resume(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    db = tmp_path / "signals.db"
    rows = []
    with SimProcess(*SIM_ARGS) as sim:
        cmd = crawl_cmd(sim, db, "--strategy", "search")
        for signals, expected, reason in (
            ([signal.SIGINT], 130, "interrupted"),
            ([signal.SIGTERM], 143, "terminated"),
            ([signal.SIGHUP], 129, "hung up"),  # a closed terminal or a dropped SSH session
            ([signal.SIGINT, signal.SIGINT], 130, "interrupted"),  # second Ctrl-C: stop now
        ):
            code, output, took = _start_and_signal(sim, cmd, tmp_path, signals, 120)
            state = read_db(db)
            name = "+".join(signal.Signals(s).name for s in signals)
            assert code == expected, f"{name}: exit {code}\n{output}"
            resume = [line for line in output.splitlines() if "Resume with:" in line]
            assert len(resume) == 1, output
            assert "Traceback" not in output
            resumed_args = shlex.split(resume[0].split("Resume with:", 1)[1])
            assert resumed_args[0] == "spotify-ingest" and resumed_args[1:] == cmd[len(CLI) :]
            assert state.count(1) == 0, f"{name}: tasks left leased"
            assert consistency_problems(state) == []
            report = json.loads(state.meta["last_report"])
            assert report["stop_reason"] == reason
            assert report["artists"]["total"] == len(state.artists)
            rows.append(
                {"signal": name, "exit": code, "stopped_in_s": round(took, 2),
                 "artists_at_stop": len(state.artists), "leased_left": 0}
            )  # fmt: skip
        final = run_cli(cmd, cwd=tmp_path)
    assert final.code == 0, str(final)
    end = read_db(db)
    _assert_same_crawl(end, reference.state)
    results.add(
        "crash_resume_signals",
        fault="SIGINT, SIGTERM, SIGHUP, double SIGINT mid-crawl, then resume",
        runs=rows,
        artists=len(end.artists),
        artists_reference=len(reference.state.artists),
        lost=0,
    )


def test_kill_inside_the_first_commit_the_schema_migration(tmp_path: Path) -> None:
    """SIGKILL inside the very first COMMIT (creating the schema) leaves a file that opens as a new
    database: the migration is all or nothing, and the next run crawls."""
    db = tmp_path / "k.db"
    env = {**cli_env(), "SI_KILL_AT_COMMIT": "1"}
    with SimProcess(*SIM_ARGS) as sim:
        cmd = crawl_cmd(sim, db, "--strategy", "search", "--max-requests", "30")
        proc = subprocess.run(
            [sys.executable, str(LAUNCHER), *cmd[len(CLI) :]],
            cwd=tmp_path, env=env, capture_output=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == -signal.SIGKILL
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        again = run_cli(cmd, cwd=tmp_path)
    assert again.code == 0, str(again)
    state = read_db(db)
    assert state.artists and consistency_problems(state) == []
