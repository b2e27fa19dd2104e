"""``spotify-ingest crawl --workers N``: N crawl processes on this host, one frontier, one budget.

Each worker is a ``crawl`` of its own (``python -m spotify_ingest.cli crawl`` with the same flags,
``--debug`` included, its own ``--worker-id`` and ``--stats-json``): it claims tasks from the
shared PostgreSQL frontier (leases: no task is run by two live workers, a dead worker's tasks come
back when their lease expires) and takes every request from the Redis-shared rate budget
(:mod:`spotify_ingest.shared_rate`), so the fleet stays under the account's one limit and pauses
together on a 429. The same command on another host with the same ``--db`` and ``--redis`` joins
the crawl: nothing in it is specific to this host.

Secrets never travel on a worker's command line, which every user of the host can read (``ps``,
``/proc/PID/cmdline``): the ``--db`` and ``--redis`` URLs (either may hold a password) go in the
worker's environment (:data:`DB_ENV`, :data:`REDIS_ENV`, read and removed by :func:`from_parent`),
and so do the simulator's credentials; a real client id and secret come from the environment or
``--env-file`` as in any crawl.

The parent only supervises:

* it checks the flags first (``--workers > 1`` needs a PostgreSQL ``--db``; without ``--redis`` it
  warns that every worker will learn the limit alone and together exceed it), creates the schema
  once, and with ``--simulate`` runs ONE simulator for all workers;
* it prints each worker's lines prefixed ``[w1]``, ``[w2]`` ..., a combined line every 5 s (artists
  in the store, tasks, live workers, the shared budget's window count and estimate), each worker's
  end as it happens (exit code or killing signal, and its figures: its ``--stats-json``, which a
  worker writes also when it stops on an error such as Redis going away; for a worker killed before
  it could, the tasks it finished as the database holds them) and the combined figures at the end
  (new artists: the store's growth over the run);
* Ctrl-C / SIGTERM is forwarded to every worker (they run in their own sessions, so a terminal's
  Ctrl-C reaches them once, through the parent): each finishes its requests in flight, commits and
  gives its leases back; a second signal is forwarded too (stop now, still committing); a third
  kills them. A worker whose parent disappears (even by SIGKILL) stops by itself: it watches its
  stdin, a pipe from the parent, and SIGTERMs itself at end of file;
* a worker stops when it finds nothing to claim; tasks still leased by a worker that died (killed,
  host lost) are picked up by the others once the lease expires, but if every worker had already
  stopped, nobody would: so when all workers end "done" and tasks are still leased, the parent
  waits for those leases to expire and runs another round of workers (at most three rounds).

Exit code: the signal's (130 / 143) after Ctrl-C / SIGTERM, else the first failing worker's, else 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import EXIT_SIGINT, EXIT_SIGTERM, SpotifyIngestError, UsageError
from .store import display_db, is_postgres_url, open_store

if TYPE_CHECKING:
    from .runner import CrawlRequest

__all__ = [
    "DB_ENV",
    "REDIS_ENV",
    "WORKER_ENV",
    "from_parent",
    "run_workers",
    "watch_parent",
    "worker_argv",
]

#: Set in a worker's environment to the parent's pid: the worker watches its stdin (see above).
WORKER_ENV = "SPOTIFY_INGEST_WORKER_OF"
#: The ``--db`` and ``--redis`` of a worker, in its environment rather than its command line (they
#: may hold a password).
DB_ENV, REDIS_ENV = "SPOTIFY_INGEST_WORKER_DB", "SPOTIFY_INGEST_WORKER_REDIS"
PROGRESS_EVERY = 5.0
MAX_ROUNDS = 3


def watch_parent() -> None:
    """In a worker of ``--workers``: SIGTERM ourselves when the parent's stdin pipe closes."""
    if not os.environ.get(WORKER_ENV):
        return

    def watch() -> None:
        # The raw descriptor, not sys.stdin: a buffered reader's lock held by a daemon thread
        # aborts the interpreter at exit.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        # Our output went to the parent: from now on it goes nowhere (a write to the broken pipe
        # would raise in the middle of the clean stop, and the leases would not be given back).
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def from_parent(req: CrawlRequest) -> CrawlRequest:
    """In a worker: ``req`` with the ``--db`` and ``--redis`` the parent put in our environment.

    The variables are removed once read: nothing this process starts inherits them.
    """
    if not os.environ.get(WORKER_ENV):
        return req
    db, redis = os.environ.pop(DB_ENV, None), os.environ.pop(REDIS_ENV, None)
    return dataclasses.replace(req, db=db or req.db, redis=redis or req.redis)


def worker_env(req: CrawlRequest) -> dict[str, str]:
    """What :func:`from_parent` reads: ``--db``, and ``--redis`` when given."""
    return {DB_ENV: req.db, **({REDIS_ENV: req.redis} if req.redis else {})}


def worker_argv(
    req: CrawlRequest, worker_id: str, stats_json: Path, endpoint: _Endpoint, *, debug: bool = False
) -> list[str]:
    """The command line of one worker: the parent's crawl flags, its id and its stats file.

    No secret in it: see :func:`worker_env`.
    """
    argv = [sys.executable, "-m", "spotify_ingest.cli", *(["--debug"] if debug else []), "crawl"]
    argv += ["--strategy", req.strategy, "--concurrency", str(req.concurrency)]
    argv += ["--max-wait", repr(req.max_wait)]
    if req.env_file.exists():  # the default .env may be absent; a named one may not
        argv += ["--env-file", str(req.env_file)]
    argv += ["--worker-id", worker_id, "--stats-json", str(stats_json)]
    if endpoint.api_base:
        argv += ["--api-base", endpoint.api_base]
    if endpoint.token_url:
        argv += ["--token-url", endpoint.token_url]
    if endpoint.window:
        argv += ["--window", repr(endpoint.window)]
    optional: list[tuple[str, object]] = [
        ("--max-requests", req.max_requests),
        ("--max-artists", req.max_artists),
        ("--duration", req.duration),
        ("--redis-prefix", req.redis_prefix),
        ("--lease-seconds", req.lease_seconds),
        *(("--" + name.replace("_", "-"), seconds) for name, seconds in req.timeouts),
    ]
    for flag, value in optional:
        if value is not None:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    if not req.hydrate:
        argv.append("--no-hydrate")
    if req.wait:
        argv.append("--wait")
    return argv


@dataclass
class _Endpoint:
    """What the workers are pointed at (None: their own default) and their extra environment."""

    api_base: str | None
    token_url: str | None
    window: float | None
    env: dict[str, str] = field(default_factory=dict)
    client_id: str | None = None  # for reading the shared budget (None: not known here)


@contextlib.contextmanager
def _endpoint(req: CrawlRequest) -> Iterator[_Endpoint]:
    """With ``--simulate``: ONE simulator for every worker (their own would not share a limit)."""
    if not req.simulate:
        from .config import Credentials

        # Missing credentials: one error here rather than one per worker.
        client_id = Credentials.from_env(env_file=req.env_file).client_id
        yield _Endpoint(req.api_base, req.token_url, req.window, client_id=client_id)
        return
    from .runner import simulator_config
    from .sim.server import SimServer

    with SimServer(simulator_config(req)) as server:
        yield _Endpoint(
            server.api_base,
            server.token_url,
            req.window or req.sim_window,
            env={
                "SPOTIFY_CLIENT_ID": server.client_id,
                "SPOTIFY_CLIENT_SECRET": server.client_secret,
            },
            client_id=server.client_id,
        )


class _Worker:
    def __init__(
        self, name: str, worker_id: str, argv: list[str], env: dict[str, str], stats: Path
    ) -> None:
        self.name = name
        self.worker_id = worker_id
        self.stats = stats
        self.report: dict[str, Any] | None = None  # once it has exited: see _Fleet.announce
        self.announced = False
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,  # closed when the parent dies: the worker then stops
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # signals reach it once, through the parent
            bufsize=0,
        )
        self.last_line = ""
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._forward, args=(self.proc.stdout,), name=f"out-{name}", daemon=True
        )
        self._reader.start()

    def _forward(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith("stopped; state saved"):
                continue  # its resume hint names the worker's command: the parent gives its own
            if line:
                self.last_line = line
                print(f"[{self.name}] {line}", file=sys.stderr, flush=True)

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def finish(self) -> dict[str, Any] | None:
        """After exit: wait for its output, close our pipes, read its stats file."""
        self._reader.join(5.0)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            data: dict[str, Any] = json.loads(self.stats.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Fleet:
    def __init__(
        self, req: CrawlRequest, n: int, endpoint: _Endpoint, tmp: Path, *, debug: bool = False
    ) -> None:
        self.req = req
        self.n = n
        self.debug = debug
        self.endpoint = endpoint
        self.tmp = tmp
        self.signals: list[int] = []
        self.workers: list[_Worker] = []
        self.host = socket.gethostname()
        self.started = time.monotonic()
        self._redis: Any = None

    # -- signals --------------------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)
        if len(self.signals) == 1:
            _stderr(f"[all] {signal.Signals(signum).name}: stopping every worker cleanly ...")
        if len(self.signals) <= 2:
            for w in self.workers:
                w.signal(signum)
        else:
            for w in self.workers:
                w.signal(signal.SIGKILL)

    # -- one round ------------------------------------------------------------------------------

    def run_round(self, rnd: int) -> list[_Worker]:
        env = {**os.environ, **self.endpoint.env, **worker_env(self.req)}
        env[WORKER_ENV] = str(os.getpid())
        self.workers = []
        for i in range(1, self.n + 1):
            name = f"w{i}" if rnd == 1 else f"w{i}.{rnd}"
            worker_id = f"{self.host}:{os.getpid()}:{name}"
            stats = self.tmp / f"{name}.json"
            argv = worker_argv(self.req, worker_id, stats, self.endpoint, debug=self.debug)
            self.workers.append(_Worker(name, worker_id, argv, env, stats))
            if self.signals:  # interrupted while starting: the rest need not start
                break
        next_line = time.monotonic() + PROGRESS_EVERY
        while True:
            for w in self.workers:  # each exit is told as it happens, not at the round's end
                if not w.announced and w.proc.poll() is not None:
                    self.announce(w)
            if all(w.announced for w in self.workers):
                return self.workers
            time.sleep(0.1)
            if time.monotonic() >= next_line:
                next_line += PROGRESS_EVERY
                self.progress()

    def announce(self, w: _Worker) -> None:
        """A worker has exited: read its figures and say how it ended, now."""
        w.announced = True
        code = w.proc.returncode
        w.report = w.finish()
        if w.report is not None:
            _stderr(f"[{w.name}] exit {code}: {_summary(w.report)}")
            return
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit {code}"
        w.report = self.finished_by(w.worker_id)
        if w.report is None:
            _stderr(f"[{w.name}] {how} (no report): {w.last_line}")
            return
        w.report["stop_reason"] = "killed" if code < 0 else "error"
        text = (
            f"[{w.name}] {how}, no report; the database holds {w.report['tasks']['done']:,} "
            f"tasks it finished ({w.report['requests']:,} requests)"
        )
        if code < 0 and not self.signals:  # a signal we did not send (OOM killer, kill -9 ...)
            text += ": the others take over its tasks"
        _stderr(text)

    def progress(self) -> None:
        alive = sum(1 for w in self.workers if w.proc.poll() is None)
        parts = [f"[all {_clock(time.monotonic() - self.started)}] workers {alive}/{self.n}"]
        with contextlib.suppress(SpotifyIngestError):
            with open_store(self.req.db, create=False) as store:
                counts = store.artist_counts()
                tasks = store.task_counts()
            by_state: dict[str, int] = {}
            for states in tasks.values():
                for state, k in states.items():
                    by_state[state] = by_state.get(state, 0) + k
            parts.append(f"artists {counts.total:,} (full {counts.full:,})")
            parts.append(
                "tasks " + ", ".join(f"{s} {by_state.get(s, 0):,}" for s in ("pending", "leased"))
            )
        budget = self._budget()
        if budget:
            parts.append(budget)
        _stderr(" ".join(parts))

    def _budget(self) -> str:
        """The shared budget as Redis holds it: window count and estimate (best effort)."""
        req, ep = self.req, self.endpoint
        if not req.redis or ep.client_id is None:
            return ""
        try:
            import redis

            from .config import ClientSettings
            from .shared_rate import DEFAULT_KEY_PREFIX, shared_keys

            api_base = ep.api_base or ClientSettings.from_env(env_file=req.env_file).api_base
            state, log = shared_keys(ep.client_id, api_base, req.redis_prefix or DEFAULT_KEY_PREFIX)
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    req.redis, socket_connect_timeout=1, socket_timeout=1, decode_responses=True
                )
            lo, hi, w, paused = self._redis.hmget(state, ["lo", "hi", "w", "paused"])
            if w is None:
                return ""
            sec, usec = self._redis.time()
            now = float(sec) + float(usec) / 1e6
            count = self._redis.zcount(log, f"({now - float(w)}", "+inf")
        except Exception:  # display only: never let it stop the crawl
            return ""
        text = f"shared budget {count} in the last {float(w):g}s, limit est. {lo}"
        if hi is not None and int(hi) >= 0:
            text += f" (<= {hi})"
        if float(paused) > now + 0.5:
            text += f", paused {float(paused) - now:.0f}s"
        return text

    def _tasks_query(self, sql: str, *args: object) -> list[tuple[Any, ...]] | None:
        """Rows of a query of the ``tasks`` table (None: the database did not answer).

        Read straight from the table (``state``, ``leased_by``, which a finished task keeps,
        ``lease_until`` on the server's clock, ``requests``: see ``store/postgres.py``), which the
        store API does not break down by worker.
        """
        import psycopg

        try:
            with psycopg.connect(self.req.db.strip(), connect_timeout=10) as conn:
                return list(conn.execute(sql, args).fetchall())  # type: ignore[arg-type]
        except psycopg.Error:
            return None

    def leases(self) -> dict[str, tuple[int, float]]:
        """Tasks still leased, by holder: (count, seconds until the last of them expires)."""
        rows = self._tasks_query(
            "SELECT leased_by, count(*), "
            "  extract(epoch FROM max(lease_until) - clock_timestamp()) "
            "FROM tasks WHERE state = 1 GROUP BY leased_by"
        )
        return {str(who): (int(n), float(left or 0.0)) for who, n, left in rows or ()}

    def finished_by(self, worker_id: str) -> dict[str, Any] | None:
        """The figures of a worker that left no report: the tasks it finished, their requests."""
        rows = self._tasks_query(
            "SELECT count(*), COALESCE(sum(requests), 0) FROM tasks "
            "WHERE state = 2 AND leased_by = %s",
            worker_id,
        )
        if not rows:
            return None
        done, requests = rows[0]
        return {"source": "database", "requests": int(requests), "tasks": {"done": int(done)}}

    def wait_for_dead_leases(self) -> int:
        """Wait until the leases of dead workers have expired and gone back to pending.

        Ours (every worker of this parent has exited) are dead. A holder elsewhere is taken for
        alive as soon as its leases are renewed (expiry moving later): its tasks are its own.
        Returns how many tasks went back to pending.
        """
        mine = f"{self.host}:{os.getpid()}:"
        first = self.leases()
        recovered = 0
        with open_store(self.req.db, create=False) as store:
            while not self.signals:
                recovered += store.recover_leases()
                now = self.leases()
                waiting = {
                    who: left
                    for who, (_, left) in now.items()
                    if who.startswith(mine) or left <= first.get(who, (0, 0.0))[1] + 1.0
                }
                if not waiting:
                    return recovered
                time.sleep(min(1.0, max(0.1, min(waiting.values()))))
        return recovered


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def run_workers(req: CrawlRequest, n: int, *, debug: bool = False) -> tuple[dict[str, Any], int]:
    """Run ``n`` workers to the end; (combined report, exit code: signal or failing worker's).

    ``debug``: the workers run with ``--debug`` too.
    """
    if not is_postgres_url(req.db):
        raise UsageError(
            f"--workers {n} needs a frontier every worker can share: --db postgresql://... "
            f"({display_db(req.db)} is an SQLite file, which serves one process)"
        )
    if req.worker_id:
        raise UsageError("--worker-id names one worker: drop it with --workers")
    if req.redis:
        from .shared_rate import check_redis

        check_redis(req.redis)  # one error here rather than one per worker
    else:
        _stderr(
            f"warning: --workers {n} without --redis: every worker learns the limit on its own "
            "and together they will exceed it (429s, growing penalties). Add --redis "
            "redis://host:6379/0 to share one budget."
        )
    with (
        _endpoint(req) as endpoint,
        tempfile.TemporaryDirectory(prefix="spotify-ingest-workers-") as tmp,
    ):
        # Create (or upgrade) the schema once, before the workers race for it.
        with open_store(req.db) as store:
            fleet_start = store.artist_counts().total
        fleet = _Fleet(req, n, endpoint, Path(tmp), debug=debug)
        previous = {s: signal.signal(s, fleet.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return _supervise(fleet, req, n, fleet_start)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if fleet._redis is not None:
                with contextlib.suppress(Exception):
                    fleet._redis.close()


def _supervise(
    fleet: _Fleet, req: CrawlRequest, n: int, artists_before: int
) -> tuple[dict[str, Any], int]:
    reports: list[dict[str, Any]] = []
    codes: list[int] = []
    failed: list[tuple[str, int]] = []
    rounds = 0
    for rnd in range(1, MAX_ROUNDS + 1):
        rounds = rnd
        all_done = True  # every worker that lived to the end found nothing left to do
        for worker in fleet.run_round(rnd):
            code, report = worker.proc.returncode, worker.report
            codes.append(code)
            if report is not None:
                report["worker"] = worker.name
                reports.append(report)
            if code < 0:  # killed by a signal: the others (or the next round) take over its tasks
                continue
            if code not in (0, EXIT_SIGINT, EXIT_SIGTERM):
                failed.append((worker.name, code))
            if code != 0 or report is None or report.get("stop_reason") != "done":
                all_done = False
        if fleet.signals or failed or not all_done:
            break
        held = fleet.leases()
        if not held:
            break
        leased = sum(n for n, _ in held.values())
        if rnd == MAX_ROUNDS:
            _stderr(f"[all] {leased} tasks still leased after {rnd} rounds: run the command again")
            break
        longest = max(left for _, left in held.values())
        _stderr(
            f"[all] {leased} tasks are still leased by a worker that died (or lives elsewhere): "
            f"waiting for their leases to expire (at most {max(0.0, longest):.0f}s), then "
            f"{n} workers finish them"
        )
        if not fleet.wait_for_dead_leases():
            _stderr(f"[all] the {leased} leased tasks are held by live workers: they finish them")
            break
        if fleet.signals:
            break
    elapsed = time.monotonic() - fleet.started
    combined = _combine(req, n, reports, codes, rounds, elapsed, artists_before)
    artists = combined["artists"]
    print(
        f"{combined['stop_reason']}: {artists['total'] or 0:,} artists "
        f"({artists['full'] or 0:,} full) in {display_db(req.db)}, "
        f"{combined['new_artists_this_run']:,} new this run, {combined['requests']:,} requests "
        f"({combined['requests_by_status'].get('429', 0):,} answered 429) by {n} workers in "
        f"{combined['elapsed_seconds']:.1f}s",
        flush=True,
    )
    if fleet.signals:
        return combined, EXIT_SIGTERM if fleet.signals[0] == signal.SIGTERM else EXIT_SIGINT
    if failed:
        name, code = failed[0]
        _stderr(f"error: worker {name} stopped with exit code {code} (its error is above)")
        return combined, code
    return combined, 0


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _summary(report: dict[str, Any]) -> str:
    artists = report.get("artists", {})
    return (
        f"{report.get('stop_reason')}: {report.get('requests', 0):,} requests, "
        f"{report.get('new_artists_this_run', 0):,} new artists in "
        f"{report.get('elapsed_seconds', 0):.1f}s (store: {artists.get('total', 0):,})"
    )


def _combine(
    req: CrawlRequest,
    n: int,
    reports: list[dict[str, Any]],
    codes: list[int],
    rounds: int,
    elapsed: float,
    artists_before: int,
) -> dict[str, Any]:
    """The fleet's figures: the workers' summed, the artists' from the store.

    New artists are the store's growth over the run (what every worker added, a worker that left
    no report included); requests are summed from the workers' reports, the finished tasks'
    requests in the database standing in for a worker that left none.
    """
    by_status: dict[str, int] = {}
    for r in reports:
        for status, k in (r.get("requests_by_status") or {}).items():
            by_status[status] = by_status.get(status, 0) + int(k)
    counts = None
    with contextlib.suppress(SpotifyIngestError), open_store(req.db, create=False) as store:
        counts = store.artist_counts()
    reasons = {r.get("stop_reason") for r in reports}
    stop = reasons.pop() if len(reasons) == 1 else "mixed"
    return {
        "stop_reason": stop,
        "workers": n,
        "rounds": rounds,
        "exit_codes": codes,
        "elapsed_seconds": round(elapsed, 3),
        "requests": sum(int(r.get("requests", 0)) for r in reports),
        "requests_by_status": dict(sorted(by_status.items())),
        "artists": {
            "total": counts.total if counts else None,
            "full": counts.full if counts else None,
        },
        "new_artists_this_run": (
            counts.total - artists_before
            if counts
            else sum(int(r.get("new_artists_this_run", 0)) for r in reports)
        ),
        "per_worker": reports,
    }
