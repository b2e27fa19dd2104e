"""Plumbing of the reliability tests: real processes, real sockets, the database read from outside.

* :class:`SimProcess`: ``spotify-ingest sim serve`` as a child process on a free loopback port
  (``--port 0``; the port is read from its banner), with its ground truth and control hooks over
  HTTP.
* :class:`ServedSim`: the simulator app served by uvicorn in a thread of the test process, so a
  test can wrap it in a small ASGI middleware (faults the simulator has no knob for) and read its
  state (``.state``) directly.
* :func:`crawl_cmd` / :func:`run_cli`: the ``spotify-ingest`` console script in a child process,
  with the simulator's credentials in its environment and the working folder of the test.
* :func:`read_db`: what a crawl database holds, read with plain ``sqlite3`` in read-only mode (not
  through our store), so the checks do not depend on the code under test.
* :class:`Results`: figures a test wants in RELIABILITY.md, gathered into one JSON file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from spotify_ingest.sim.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SimApp, SimConfig, create_app
from spotify_ingest.sim.server import bind_socket

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("spotify-ingest")
#: How to start our CLI: the installed console script, or the module when it is not installed.
CLI: list[str] = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "spotify_ingest.cli"]
)
#: The results file RELIABILITY.md is written from (``build/`` is git-ignored).
RESULTS_PATH = Path(os.environ.get("RELIABILITY_RESULTS", ROOT / "build" / "reliability.json"))

ASGIApp = Callable[..., Any]


# ------------------------------------------------------------------------------------------------
# The simulator as a process


class SimProcess:
    """``spotify-ingest sim serve --port 0 ARGS`` in a child process; stopped with SIGINT."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.args = list(args)
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.banner: list[str] = []
        self.base_url = ""

    def start(self, timeout: float = 60.0) -> SimProcess:
        self.proc = subprocess.Popen(
            [*CLI, "sim", "serve", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
            env=cli_env(None, None),
        )
        # A thread drains the output (a full pipe would block the simulator) and keeps the lines.
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.base_url:
            if self.proc.poll() is not None:
                break
            for line in list(self.banner):
                found = re.search(r"base URL:\s+(\S+)", line)
                if found:
                    self.base_url = found.group(1)
            time.sleep(0.02)
        if not self.base_url:
            self.stop()
            raise RuntimeError(f"simulator did not start: {self.banner}")
        host, port = self.base_url.removeprefix("http://").rsplit(":", 1)
        while time.monotonic() < deadline:  # uvicorn listens a moment after the banner
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1.0):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("simulator never accepted connections")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.banner.append(line.rstrip("\n"))

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    @property
    def token_url(self) -> str:
        return self.base_url + "/api/token"

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.base_url + "/__sim/stats", timeout=10).json()
        return data

    def control(self, **knobs: Any) -> dict[str, Any]:
        r = httpx.post(self.base_url + "/__sim/control", json=knobs, timeout=10)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def revoke_tokens(self) -> int:
        r = httpx.post(self.base_url + "/__sim/revoke-tokens", timeout=10)
        r.raise_for_status()
        return int(r.json()["revoked"])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------
# The simulator in a thread of the test process (optionally wrapped)


class ServedSim:
    """The simulator app (optionally wrapped by ``wrap``) on a free loopback port, in a thread."""

    def __init__(self, config: SimConfig, wrap: Callable[[SimApp], ASGIApp] | None = None) -> None:
        self.config = config
        self.app = create_app(config)
        self.asgi: ASGIApp = wrap(self.app) if wrap is not None else self.app
        self._sock = bind_socket("127.0.0.1", 0)
        self.port = int(self._sock.getsockname()[1])
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.asgi, lifespan="off", access_log=False, log_level="warning",
                timeout_keep_alive=30,
            )
        )  # fmt: skip
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]})

    @property
    def state(self) -> Any:
        return self.app.sim

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    @property
    def token_url(self) -> str:
        return self.base_url + "/api/token"

    def stats(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = self.state.stats_snapshot()
        return snapshot

    def __enter__(self) -> ServedSim:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("simulator thread did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


class Middleware:
    """A minimal ASGI wrapper: ``on_request(scope) -> response or None`` may answer a /v1 request
    itself (``(status, headers, body)``), and ``on_response(scope, status, headers, body)`` may
    rewrite the simulator's answer. The wrapped simulator still counts what it answered."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_request: Callable[[dict[str, Any]], tuple[int, list[tuple[bytes, bytes]], bytes] | None]
        | None = None,
        on_response: Callable[
            [dict[str, Any], int, list[tuple[bytes, bytes]], bytes],
            tuple[int, list[tuple[bytes, bytes]], bytes],
        ]
        | None = None,
    ) -> None:
        self.app = app
        self.on_request = on_request
        self.on_response = on_response
        self.answered = 0  # requests answered by the middleware itself
        self.rewritten = 0  # simulator answers the middleware changed

    async def _send(
        self, send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.on_request is not None:
            answer = self.on_request(scope)
            if answer is not None:
                self.answered += 1
                await self._send(send, *answer)
                return
        if self.on_response is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            assert self.on_response is not None
            before = (start["status"], list(start.get("headers", [])), b"".join(chunks))
            status, headers, body = self.on_response(scope, *before)
            if (status, headers, body) != before:
                self.rewritten += 1
            await self._send(send, status, headers, body)

        await self.app(scope, receive, capture)


def json_error(status: int, message: str, **extra: str) -> bytes:
    return json.dumps({"error": {"status": status, "message": message, **extra}}).encode()


JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


# ------------------------------------------------------------------------------------------------
# The CLI in a child process


class SimLike:
    api_base: str
    token_url: str


def cli_env(
    client_id: str | None = DEMO_CLIENT_ID,
    secret: str | None = DEMO_CLIENT_SECRET,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a child CLI: ours minus any Spotify settings, plus the credentials."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SPOTIFY_") and k not in ("CLIENT_ID", "CLIENT_SECRET")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    if client_id is not None:
        env["SPOTIFY_CLIENT_ID"] = client_id
    if secret is not None:
        env["SPOTIFY_CLIENT_SECRET"] = secret
    env.update(extra or {})
    return env


def crawl_cmd(sim: Any, db: Path, *args: str, debug: bool = False) -> list[str]:
    """``spotify-ingest [--debug] crawl --db DB --api-base ... --token-url ... --window 1 ARGS``."""
    return [
        *CLI,
        *(["--debug"] if debug else []),
        "crawl",
        "--db", str(db),
        "--api-base", sim.api_base,
        "--token-url", sim.token_url,
        "--window", "1",
        *args,
    ]  # fmt: skip


@dataclass
class Run:
    """A finished child process."""

    args: list[str]
    code: int
    stdout: str
    stderr: str
    elapsed: float
    stats: dict[str, Any] | None = None

    def error_lines(self) -> list[str]:
        """Non-empty stderr lines that are not the crawl's progress log."""
        return [
            line
            for line in self.stderr.splitlines()
            if line.strip() and not re.match(r"^\[\d+h?\d*m\d\ds\] ", line)
        ]

    def __str__(self) -> str:
        return (
            f"exit {self.code} after {self.elapsed:.1f}s: {' '.join(self.args[1:])}\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    stats_json: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        list(args),
        cwd=cwd,
        env=dict(env) if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )
    stats = None
    if stats_json is not None and stats_json.exists():
        stats = json.loads(stats_json.read_text())
    return Run(list(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started,
               stats)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# The database, read from outside


@dataclass
class DbState:
    """The rows that matter, read with plain sqlite3."""

    artists: dict[str, tuple[Any, ...]]  # id -> (name, detail, genres, uri, external_url)
    artist_rows: int
    tasks: list[tuple[str, str, int, int | None]]  # (kind, key, state, requests)
    meta: dict[str, str]
    search_nodes: dict[str, tuple[Any, ...]]
    integrity: str
    user_version: int

    @property
    def artist_ids(self) -> set[str]:
        return set(self.artists)

    def keys(self, state: int | None = None, kind: str | None = None) -> list[str]:
        return [
            key
            for k, key, s, _ in self.tasks
            if (state is None or s == state) and (kind is None or k == kind)
        ]

    def count(self, state: int, kind: str | None = None) -> int:
        return len(self.keys(state, kind))

    @property
    def requests_recorded(self) -> int:
        return sum(r or 0 for _, _, s, r in self.tasks if s == 2)


def read_db(path: Path) -> DbState:
    uri = f"file:{path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        rows = db.execute(
            "SELECT id, name, detail, genres, uri, external_url FROM artists"
        ).fetchall()
        tasks = db.execute("SELECT kind, key, state, requests FROM tasks").fetchall()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        nodes = {
            r[0]: tuple(r[1:])
            for r in db.execute("SELECT query, parent, total, status FROM search_nodes")
        }
    return DbState(
        artists={r[0]: tuple(r[1:]) for r in rows},
        artist_rows=len(rows),
        tasks=tasks,
        meta=meta,
        search_nodes=nodes,
        integrity=integrity,
        user_version=version,
    )


def stored_deadline(path: Path) -> dict[str, Any] | None:
    """The Retry-After deadline a crawl wrote (its meta row), or None; read-only, from outside."""
    if not path.exists():
        return None
    uri = f"file:{path}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as db:
            row = db.execute(
                "SELECT value FROM meta WHERE key LIKE 'retry_deadline:%' ORDER BY key LIMIT 1"
            ).fetchone()
    except sqlite3.Error:  # the schema is not there yet
        return None
    value: dict[str, Any] | None = json.loads(row[0]) if row else None
    return value


def expire_deadline(path: Path) -> None:
    """Let the stored Retry-After deadline pass (a test's stand-in for waiting hours)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for key, value in db.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'retry_deadline:%'"
        ).fetchall():
            row = json.loads(value)
            row["until"] = time.time() - 1.0
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(row), key))


def pass_time(path: Path, seconds: float) -> None:
    """Let ``seconds`` of wall-clock time pass for what the database remembers of the API's
    waits: every stored time (Retry-After deadlines, the quota's lockout end and call ledger)
    moves that far into the past. A test's stand-in for coming back hours later."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        rows = db.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'retry_deadline:%' OR key LIKE 'quota:%'"
        ).fetchall()
        for key, value in rows:
            row = json.loads(value)
            if key.startswith("retry_deadline:"):
                row["until"] -= seconds
                row["learned_at"] -= seconds
            else:
                row["estimate"]["lockout_until"] -= seconds
                width = row["ledger"]["bucket"]
                shift = math.ceil(seconds / width)
                row["ledger"]["ends"] = [[end - shift, n] for end, n in row["ledger"]["ends"]]
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(row), key))


def kill_while_paused(
    cmd: Sequence[str],
    *,
    cwd: Path,
    kills: int,
    pause_marker: Callable[[], Any],
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    before_start: Callable[[int], object] | None = None,
) -> list[Any]:
    """Start ``cmd``; once ``pause_marker()`` changes (not to None: the crawl met a new 429 and
    is paused), SIGKILL it and start it again at once, ``kills`` times. Returns the markers.
    ``before_start(i)`` runs before the i-th start (a test lowers the limit there)."""
    killed: list[Any] = []
    seen = pause_marker()
    for i in range(kills):
        if before_start is not None:
            before_start(i)
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env) if env is not None else cli_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            ends = time.monotonic() + timeout
            while (marker := pause_marker()) is None or marker == seen:
                if proc.poll() is not None:
                    raise RuntimeError(f"the crawl exited ({proc.returncode}) before a 429")
                if time.monotonic() > ends:
                    raise RuntimeError("no 429 within the timeout")
                time.sleep(0.005)
        finally:
            proc.kill()
            proc.wait()
        seen = marker
        killed.append(marker)
    return killed


def all_db_text(path: Path) -> str:
    """Every value of every row of every table, as text (for secret scans)."""
    out: list[str] = []
    uri = f"file:{path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                out.extend(str(v) for v in row)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# Figures for RELIABILITY.md


@dataclass
class Results:
    """Rows for RELIABILITY.md, merged into :data:`RESULTS_PATH` (one key per test)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # test node id -> passed / xfailed ...

    def add(self, key: str, **row: Any) -> None:
        """One row; it remembers the test that wrote it (to show that test's outcome)."""
        current = os.environ.get("PYTEST_CURRENT_TEST", "")
        row["test"] = current.rsplit(" (", 1)[0]
        self.rows[key] = row

    def save(self) -> None:
        if not self.rows:
            return
        RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
        merged: dict[str, Any] = {}
        if RESULTS_PATH.exists():
            with contextlib.suppress(ValueError):
                merged = json.loads(RESULTS_PATH.read_text())
        merged.update(self.rows)
        merged["_outcomes"] = {**merged.get("_outcomes", {}), **self.outcomes}
        RESULTS_PATH.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def served(
    config: SimConfig, wrap: Callable[[SimApp], ASGIApp] | None = None
) -> Iterator[ServedSim]:
    with ServedSim(config, wrap) as sim:
        yield sim


# ------------------------------------------------------------------------------------------------
# What a finished crawl must look like

SIM_ARGS = ("--artists", "3000", "--window", "1", "--limit", "200")
SIM_CONFIG: dict[str, Any] = {"artists": 3000, "window": 1.0, "limit": 200}


def task_params(key: str) -> dict[str, Any]:
    """The parameters of a task from its key (``kind:{canonical json}``)."""
    params: dict[str, Any] = json.loads(key.split(":", 1)[1])
    return params


def search_requests(state: DbState, task_state: int | None = 2) -> list[tuple[str, int]]:
    """(query, offset) of the search tasks in ``task_state`` (the role is not part of it: a child
    may be queued as ``node`` or ``spec`` depending on what was learned before its parent split)."""
    out = []
    for key in state.keys(task_state, "search"):
        p = task_params(key)
        out.append((str(p["q"]), int(p["offset"])))
    return out


def consistency_problems(state: DbState) -> list[str]:
    """What breaks the store's one-transaction-per-task promise, as found in ``state``.

    * the file passes ``PRAGMA integrity_check``;
    * no artist row twice, no task key twice, no search request (query, offset) queued twice;
    * every search node recorded has its first-page task done (node and task commit together);
    * every node recorded as ``paging`` has all its page tasks queued (spawned in that commit).
    """
    problems = []
    if state.integrity != "ok":
        problems.append(f"integrity_check: {state.integrity}")
    if state.artist_rows != len(state.artists):
        problems.append(f"{state.artist_rows - len(state.artists)} duplicate artist rows")
    keys = [key for _, key, _, _ in state.tasks]
    if len(keys) != len(set(keys)):
        problems.append(f"{len(keys) - len(set(keys))} duplicate task keys")
    requests = search_requests(state, None)
    if len(requests) != len(set(requests)):
        problems.append(f"{len(requests) - len(set(requests))} search requests queued twice")
    done = set(search_requests(state, 2))
    queued = set(requests)
    limit = 10
    for key in state.keys(None, "search"):
        limit = int(task_params(key)["limit"])
        break
    reach = 1000 + limit
    for query, (_parent, total, status) in state.search_nodes.items():
        if (query, 0) not in done:
            problems.append(f"search node {query!r} recorded but its first page is not done")
        if status == "paging":
            missing = [
                off for off in range(limit, min(int(total), reach), limit)
                if off <= 1000 and (query, off) not in queued
            ]  # fmt: skip
            if missing:
                problems.append(f"node {query!r} is paging but pages {missing[:3]} are missing")
    return problems


def artist_view(state: DbState) -> dict[str, tuple[Any, ...]]:
    return state.artists
