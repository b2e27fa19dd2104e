"""``crawl --workers N`` (issue 7): worker processes sharing one PostgreSQL frontier and one
Redis rate budget, against one simulator over real HTTP.

Each test has its own PostgreSQL schema and Redis key prefix (both removed afterwards); without
the servers the tests skip, under CI they fail (``tests/shared_services.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spotify_ingest.discovery.search import Alphabet, SearchPlan
from spotify_ingest.sim.app import SimConfig
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.server import SimServer
from tests.shared_services import (
    PgSchema,
    drop_schema,
    new_schema,
    pg_server_or_skip,
    redis_keys_cleanup,
    redis_url_or_skip,
    unique_prefix,
)

pytestmark = pytest.mark.services

N_ARTISTS, SEED = 800, 2  # every artist of this catalog is reachable by a dev-2026 app
LIMIT, WINDOW = 200, 1.0


@pytest.fixture
def schema() -> Iterator[PgSchema]:
    pg = new_schema(pg_server_or_skip())
    try:
        yield pg
    finally:
        drop_schema(pg)


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    url = redis_url_or_skip()
    prefix = unique_prefix()
    yield url, prefix
    redis_keys_cleanup(url, prefix)


@pytest.fixture(scope="module")
def sim_config() -> SimConfig:
    return SimConfig(artists=N_ARTISTS, seed=SEED, limit=LIMIT, window=WINDOW)


def crawl_argv(sim: SimServer, db: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "spotify_ingest.cli", "crawl", "--db", db,
        "--api-base", sim.api_base, "--token-url", sim.token_url, "--window", str(WINDOW),
        "--concurrency", "4", "--env-file", os.devnull, *extra,
    ]  # fmt: skip


def env(sim: SimServer) -> dict[str, str]:
    return {
        **os.environ,
        "SPOTIFY_CLIENT_ID": sim.client_id,
        "SPOTIFY_CLIENT_SECRET": sim.client_secret,
    }


def rows(schema: PgSchema, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with schema.admin() as conn:
        return list(conn.execute(sql, args).fetchall())


def count(schema: PgSchema, sql: str, *args: Any) -> int:
    """``SELECT count(*) ...``; 0 while the workers have not created the tables yet."""
    import psycopg

    try:
        return int(rows(schema, sql, *args)[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def worker_pids(parent: int) -> list[int]:
    """Live processes whose command line names a worker of ``parent`` (Linux /proc)."""
    marker = f":{parent}:w".encode()
    return [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and marker in _cmdline(int(e.name))
    ]


def test_three_workers_crawl_every_artist_exactly_once(
    schema: PgSchema, redis_prefix: tuple[str, str], sim_config: SimConfig, tmp_path: Path
) -> None:
    """Three worker processes, one frontier, one budget: the whole catalog, once, under L.

    It starts where a worker died holding every task of the frontier (its leases are long: the
    live workers cannot take them over by themselves, so they find nothing and stop); the parent
    waits for those leases to expire (the test ends them once the parent says it waits) and runs
    a second round, which does the crawl. (A SIGKILL mid-crawl, the others taking over within
    the lease, is measured in bench/workers.py.)
    """
    from spotify_ingest.store.postgres import PostgresStore

    url, prefix = redis_prefix
    assert schema.url is not None
    with PostgresStore(schema.url) as store:  # the frontier a crawl starts from: search roots
        store.add_tasks(SearchPlan(Alphabet(), limit=10).roots())
    with schema.admin() as conn:
        leased = conn.execute(
            "UPDATE tasks SET state = 1, leased_by = 'ghost:1:w9', attempts = attempts + 1, "
            "lease_until = clock_timestamp() + interval '10 minutes' WHERE state = 0"
        ).rowcount
    assert leased > 0
    stats_file = tmp_path / "stats.json"
    with SimServer(sim_config) as sim:
        argv = crawl_argv(sim, schema.url, "--workers", "3", "--redis", url)
        argv += ["--redis-prefix", prefix, "--stats-json", str(stats_file)]
        argv += ["--lease-seconds", "5"]
        parent = subprocess.Popen(
            argv, env=env(sim), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines = []
        try:
            assert parent.stderr is not None
            for line in parent.stderr:
                lines.append(line)
                if "tasks are still leased by a worker that died" in line:
                    with schema.admin() as conn:  # the dead worker's leases run out now
                        conn.execute(
                            "UPDATE tasks SET lease_until = clock_timestamp() "
                            "WHERE leased_by = 'ghost:1:w9'"
                        )
            stdout, _ = parent.communicate(timeout=120)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
        truth = httpx.get(sim.base_url + "/__sim/stats").json()
    stderr = "".join(lines)
    assert parent.returncode == 0, stderr[-3000:]
    assert f"[all] {leased} tasks are still leased by a worker that died" in stderr
    catalog = set(Catalog(N_ARTISTS, SEED).iter_artist_ids())
    ids = [r[0] for r in rows(schema, "SELECT id FROM artists")]
    assert len(ids) == len(set(ids)) == N_ARTISTS
    assert set(ids) == catalog
    states = dict(rows(schema, "SELECT state, count(*) FROM tasks GROUP BY state"))
    assert states.get(1, 0) == 0 and states.get(3, 0) == 0, states  # none leased, none failed
    # Every worker of the second round did part of the work; together they stayed under L.
    report = json.loads(stats_file.read_text())
    assert report["workers"] == 3 and report["rounds"] == 2
    second = {r["worker"]: r for r in report["per_worker"] if r["worker"].endswith(".2")}
    assert sorted(second) == ["w1.2", "w2.2", "w3.2"]
    assert all(r["stop_reason"] == "done" and r["requests"] > 0 for r in second.values())
    assert truth["max_accepted_in_any_window"] <= LIMIT
    assert truth["escalations"] == 0
    assert truth["rejected_429"] <= max(5, 0.01 * truth["requests_total"])
    assert "done: 800 artists" in stdout


def test_ctrl_c_stops_every_worker_cleanly(
    schema: PgSchema, redis_prefix: tuple[str, str], sim_config: SimConfig
) -> None:
    url, prefix = redis_prefix
    assert schema.url is not None
    slow = SimConfig(artists=N_ARTISTS, seed=SEED, limit=20, window=WINDOW)  # will not finish
    with SimServer(slow) as sim:
        argv = crawl_argv(sim, schema.url, "--workers", "2", "--redis", url)
        argv += ["--redis-prefix", prefix]
        parent = subprocess.Popen(
            argv, env=env(sim), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and parent.poll() is None:
                if count(schema, "SELECT count(*) FROM tasks WHERE state = 2") >= 4:
                    break
                time.sleep(0.1)
            workers = worker_pids(parent.pid)
            assert len(workers) == 2
            parent.send_signal(signal.SIGINT)
            _, stderr = parent.communicate(timeout=60)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
    assert parent.returncode == 130, stderr[-3000:]
    assert "[w1] exit 130: interrupted" in stderr and "[w2] exit 130: interrupted" in stderr
    assert "Resume with: spotify-ingest crawl" in stderr
    assert not worker_pids(parent.pid)
    states = dict(rows(schema, "SELECT state, count(*) FROM tasks GROUP BY state"))
    assert states.get(1, 0) == 0, states  # every lease given back


def test_workers_stop_cleanly_when_their_parent_is_killed(
    schema: PgSchema, redis_prefix: tuple[str, str]
) -> None:
    """SIGKILL the supervisor: each worker sees its stdin close, stops and gives its leases back."""
    url, prefix = redis_prefix
    assert schema.url is not None
    slow = SimConfig(artists=N_ARTISTS, seed=SEED, limit=20, window=WINDOW)  # will not finish
    with SimServer(slow) as sim:
        argv = crawl_argv(sim, schema.url, "--workers", "2", "--redis", url)
        argv += ["--redis-prefix", prefix]
        parent = subprocess.Popen(
            argv, env=env(sim), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and parent.poll() is None:
                if count(schema, "SELECT count(*) FROM tasks WHERE state = 2") >= 4:
                    break
                time.sleep(0.1)
            assert len(worker_pids(parent.pid)) == 2
        finally:
            parent.kill()
            parent.wait()
        deadline = time.monotonic() + 30
        while worker_pids(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not worker_pids(parent.pid)
    assert count(schema, "SELECT count(*) FROM tasks WHERE state = 1") == 0


@pytest.mark.parametrize(
    ("db", "expect"),
    [
        ("crawl.db", "needs a frontier every worker can share: --db postgresql://"),
    ],
)
def test_workers_need_a_shared_database(db: str, expect: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "spotify_ingest.cli", "crawl", "--workers", "2"]
    argv += ["--db", str(tmp_path / db), "--env-file", os.devnull]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], result.stderr


def test_bad_redis_url_is_a_usage_error(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "spotify_ingest.cli", "crawl", "--simulate", "--sim-artists"]
    argv += ["50", "--db", str(tmp_path / "x.db"), "--redis", "http://127.0.0.1:1"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --redis http://127.0.0.1:1")


def test_workers_without_redis_warn_that_the_budget_is_not_shared(tmp_path: Path) -> None:
    """The warning comes first (here the database is unreachable, which ends the run at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "spotify_ingest.cli", "crawl", "--workers", "2"]
    argv += ["--db", f"postgresql://postgres@127.0.0.1:{port}/postgres"]
    argv += ["--env-file", os.devnull]
    creds = {"SPOTIFY_CLIENT_ID": "id", "SPOTIFY_CLIENT_SECRET": "secret"}
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**os.environ, **creds}
    )
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("warning: --workers 2 without --redis"), result.stderr
    assert result.returncode == 4 and lines[-1].startswith("error: "), result.stderr


def test_timeout_flags_reach_every_worker(tmp_path: Path) -> None:
    from spotify_ingest.runner import CrawlRequest
    from spotify_ingest.workers import _Endpoint, worker_argv

    req = CrawlRequest(
        db="postgresql://localhost/x",
        timeouts=(("connect_timeout", 2.5), ("no_answer_timeout", 30.0)),
    )
    argv = worker_argv(req, "w1", tmp_path / "w1.json", _Endpoint(None, None, None))
    assert argv[argv.index("--connect-timeout") + 1] == "2.5"
    assert argv[argv.index("--no-answer-timeout") + 1] == "30.0"
    assert "--read-timeout" not in argv  # not given: the worker reads the environment as we do
