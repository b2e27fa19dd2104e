"""``crawl --workers N``: worker processes sharing one PostgreSQL frontier and one
Redis rate budget, against one simulator over real HTTP.

Each test has its own PostgreSQL schema and Redis key prefix (both removed afterwards); without
the servers the tests skip, under CI they fail (``tests/shared_services.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    private_redis,
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


class Fleet:
    """A ``crawl --workers N`` parent in the background, its stderr lines kept with their times."""

    def __init__(self, argv: list[str], environ: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[tuple[float, str]] = []
        self.stdout = ""
        self._threads = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line))

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    @property
    def stderr(self) -> str:
        return "".join(line for _, line in self.lines)

    def line_time(self, pattern: str, timeout: float) -> float | None:
        """When the first stderr line matching ``pattern`` arrived (None: not within timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            for at, line in list(self.lines):
                if re.search(pattern, line):
                    return at
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        for t in self._threads:
            t.join(10)
        return code

    def kill(self) -> None:
        """The parent and its workers, if still running (they live in sessions of their own)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in worker_pids(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def tasks_done(schema: PgSchema, at_least: int) -> Callable[[], bool]:
    return lambda: count(schema, "SELECT count(*) FROM tasks WHERE state = 2") >= at_least


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user.split(':')[0]}:{password}@{host}"))


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


def test_workers_started_into_a_stored_retry_after_send_nothing_and_stop_at_once(
    schema: PgSchema, redis_prefix: tuple[str, str], sim_config: SimConfig
) -> None:
    """A Retry-After an earlier run met is in the shared database: beyond --max-wait the fleet
    exits 75 without a request; with --wait every worker waits in view, and Ctrl-C stops them."""
    from spotify_ingest.deadline import RetryDeadline, deadline_key, save_deadline
    from spotify_ingest.store.postgres import PostgresStore

    url, prefix = redis_prefix
    assert schema.url is not None
    with SimServer(sim_config) as sim:
        with PostgresStore(schema.url) as store:
            key = deadline_key(sim.client_id, sim.api_base)
            save_deadline(store, key, RetryDeadline.after(600.0, "rate", "/v1/search"))
        argv = crawl_argv(sim, schema.url, "--workers", "2", "--redis", url)
        argv += ["--redis-prefix", prefix]
        refused = subprocess.run(
            [*argv, "--max-wait", "60"], env=env(sim), capture_output=True, text=True, timeout=60
        )
        parent = subprocess.Popen(
            [*argv, "--wait"], env=env(sim), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            time.sleep(4.0)  # the workers start and wait
            sent = time.monotonic()
            parent.send_signal(signal.SIGINT)
            _, stderr = parent.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
        truth = httpx.get(sim.base_url + "/__sim/stats").json()
    assert refused.returncode == 75, refused.stderr[-3000:]
    assert "above --max-wait 60 s" in refused.stderr
    assert parent.returncode == 130, stderr[-3000:]
    assert "learned by an earlier run" in stderr
    assert took <= 2.0, f"Ctrl-C took {took:.1f} s"
    assert truth["requests_total"] == 0 and truth["tokens"]["issued"] == 0


SLOW = SimConfig(artists=N_ARTISTS, seed=SEED, limit=20, window=WINDOW)  # will not finish soon


def test_no_secret_is_on_any_workers_command_line(schema: PgSchema) -> None:
    """The database and Redis passwords reach the workers (Redis refuses them without it), but
    no worker's command line, which every user of the host can read, holds either."""
    assert schema.url is not None
    pg_secret, redis_secret = f"pg-{secrets.token_hex(8)}", f"rd-{secrets.token_hex(8)}"
    db = with_password(schema.url, pg_secret)  # the test server trusts loopback: any password
    with private_redis(redis_secret) as (url, _), SimServer(SLOW) as sim:
        argv = crawl_argv(sim, db, "--workers", "2", "--redis", url)
        with Fleet(argv, env(sim)) as fleet:
            wait_until(tasks_done(schema, 4))  # they passed Redis's password check
            workers = worker_pids(fleet.proc.pid)
            command_lines = [_cmdline(pid) for pid in workers]
            fleet.proc.send_signal(signal.SIGINT)
            code = fleet.finish()
    assert len(workers) == 2 and all(command_lines)
    for line in command_lines:
        assert pg_secret.encode() not in line and redis_secret.encode() not in line, line
    assert code == 130, fleet.stderr[-3000:]
    assert pg_secret not in fleet.stderr + fleet.stdout
    assert redis_secret not in fleet.stderr + fleet.stdout


def test_debug_reaches_every_worker(schema: PgSchema, redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    assert schema.url is not None
    with SimServer(SLOW) as sim:
        argv = crawl_argv(sim, schema.url, "--workers", "2", "--redis", url)
        argv[3:3] = ["--debug"]  # before `crawl`: a flag of the program
        argv += ["--redis-prefix", prefix, "--max-requests", "10"]
        result = subprocess.run(argv, env=env(sim), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("w1", "w2"):
        assert re.search(rf"^\[{name}\] .* DEBUG spotify_ingest\.", result.stderr, re.M), name


def test_the_parent_reports_real_figures_when_redis_dies(schema: PgSchema, tmp_path: Path) -> None:
    """Redis killed mid-crawl: every worker stops (exit 4), and the parent still gives what each
    did and the artists the run added, not zeros."""
    assert schema.url is not None
    stats_file = tmp_path / "stats.json"
    with private_redis() as (url, redis_server), SimServer(SLOW) as sim:
        argv = crawl_argv(sim, schema.url, "--workers", "2", "--redis", url)
        argv += ["--stats-json", str(stats_file)]
        with Fleet(argv, env(sim)) as fleet:
            wait_until(tasks_done(schema, 6))
            redis_server.kill()
            code = fleet.finish()
    assert code == 4, fleet.stderr[-3000:]
    report = json.loads(stats_file.read_text())
    workers = report["per_worker"]
    assert sorted(w["worker"] for w in workers) == ["w1", "w2"]
    assert all(w["stop_reason"] == "error" and w["requests"] > 0 for w in workers), workers
    assert report["requests"] == sum(w["requests"] for w in workers)
    artists = count(schema, "SELECT count(*) FROM artists")
    assert artists > 0 and report["new_artists_this_run"] == artists
    assert f"{artists:,} new this run, {report['requests']:,} requests" in fleet.stdout


def test_a_dead_worker_is_announced_when_it_dies(
    schema: PgSchema, redis_prefix: tuple[str, str]
) -> None:
    """SIGKILL one worker: the parent says so at once (the other still runs), with what the
    database holds of its work."""
    url, prefix = redis_prefix
    assert schema.url is not None
    with SimServer(SLOW) as sim:
        argv = crawl_argv(sim, schema.url, "--workers", "2", "--redis", url)
        argv += ["--redis-prefix", prefix]
        with Fleet(argv, env(sim)) as fleet:
            wait_until(tasks_done(schema, 4))
            victim = [pid for pid in worker_pids(fleet.proc.pid) if b":w1\0" in _cmdline(pid)]
            assert len(victim) == 1
            os.kill(victim[0], signal.SIGKILL)
            killed_at = time.monotonic()
            told = fleet.line_time(r"^\[w1\] killed by SIGKILL", timeout=10)
            others = worker_pids(fleet.proc.pid)
            fleet.proc.send_signal(signal.SIGINT)
            code = fleet.finish()
    assert told is not None, fleet.stderr[-3000:]
    assert told - killed_at < 2.0
    assert len(others) == 1  # told while the other worker was still crawling
    assert re.search(r"^\[w1\] killed by SIGKILL.* \d+ tasks it finished", fleet.stderr, re.M)
    assert code == 130, fleet.stderr[-3000:]


@pytest.mark.parametrize("restarted", [False, True], ids=["met-mid-crawl", "restarted-into-it"])
def test_sigterm_stops_a_paused_fleet_within_2_s(
    schema: PgSchema, redis_prefix: tuple[str, str], restarted: bool
) -> None:
    """Every worker waits out a shared quota pause (``--wait``), met mid-crawl or, in a fleet
    started again after one stopped on it, at start-up; SIGTERM ends the fleet within 2 s, every
    lease given back."""
    url, prefix = redis_prefix
    assert schema.url is not None
    quota = SimConfig(
        artists=N_ARTISTS, seed=SEED, limit=LIMIT, window=WINDOW, quota=60, quota_period=3600
    )
    with SimServer(quota) as sim:
        argv = crawl_argv(sim, schema.url, "--workers", "2", "--redis", url)
        argv += ["--redis-prefix", prefix]
        if restarted:  # a first fleet spends the quota and stops (exit 75); Redis keeps the pause
            first = subprocess.run(argv, env=env(sim), capture_output=True, text=True, timeout=120)
            assert first.returncode == 75, first.stderr[-3000:]
        with Fleet([*argv, "--wait"], env(sim)) as fleet:
            if restarted:
                wait_until(lambda: len(worker_pids(fleet.proc.pid)) == 2)
                time.sleep(3.0)  # started, and waiting for the pause to end
            else:
                truth = sim.base_url + "/__sim/stats"
                wait_until(lambda: httpx.get(truth).json()["rejected_quota"] > 0)
                time.sleep(1.0)  # both workers are in the pause
            assert len(worker_pids(fleet.proc.pid)) == 2
            fleet.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = fleet.finish()
            took = time.monotonic() - signalled
    assert code == 143, fleet.stderr[-3000:]
    assert took < 2.0, f"stopped {took:.1f}s after SIGTERM\n{fleet.stderr[-3000:]}"
    assert not worker_pids(fleet.proc.pid)
    assert count(schema, "SELECT count(*) FROM tasks WHERE state = 1") == 0


def test_limits_shows_the_fleets_learned_limit_while_it_runs(
    schema: PgSchema, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    assert schema.url is not None
    db = schema.url
    limits = [sys.executable, "-m", "spotify_ingest.cli", "limits", "--db", db]

    def shown() -> bool:
        out = subprocess.run(limits, capture_output=True, text=True, timeout=60)
        return "requests per 1s" in out.stdout

    with SimServer(SLOW) as sim:
        argv = crawl_argv(sim, db, "--workers", "2", "--redis", url, "--redis-prefix", prefix)
        with Fleet(argv, env(sim)) as fleet:
            wait_until(shown, timeout=20)  # well before the first periodic save (30 s)
            running = len(worker_pids(fleet.proc.pid)) == 2
            fleet.proc.send_signal(signal.SIGINT)
            code = fleet.finish()
    assert running and code == 130, fleet.stderr[-3000:]


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
