"""Several workers, one budget: N crawl processes against ONE simulator process.

Three runs, each against a fresh simulator process (``spotify-ingest sim serve``) with a hidden
limit ``L`` per compressed window ``W`` (2 s), a fresh PostgreSQL schema and a fresh Redis key
prefix; every figure about the limit comes from the simulator's ground truth (``/__sim/stats``,
``/__sim/accepted``), never from the crawlers' own account:

1. ``shared``: ``spotify-ingest crawl --workers N --redis ...`` for ``--duration`` seconds over a
   catalog too big to finish: combined utilisation (accepted requests from 3 windows after the
   first one to one window before the last one, over ``L x time / W``), 429 ratio (429s over all
   requests), escalations (requests sent during a Retry-After), the most accepted in any window.
2. ``local``: the same without ``--redis``: each worker has its own RateController, as N separate
   crawls of one account would.
3. ``kill``: N shared workers crawl a small catalog to the end with ``--lease-seconds``; when the
   store holds ``--kill-at`` of the catalog, one worker is killed with SIGKILL. Measured: how long
   its leased tasks stayed leased after the kill (they must return within the lease), whether the
   crawl completed, and whether the final artist set equals that of a single-process crawl of the
   same seed (SQLite, ``crawl --simulate``) and the catalog's reachable artists.

    .venv/bin/python bench/workers.py                       # all three, L=80 per 2 s, 4 workers
    .venv/bin/python bench/workers.py --runs shared local --duration 60 --json out.json

Needs Redis and PostgreSQL (``--redis``, ``--pg``: the defaults are the local test servers).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import redis

DEMO_ID, DEMO_SECRET = "demo-client-id", "demo-client-secret"
PY = sys.executable


class Sim:
    """``spotify-ingest sim serve`` in a child process on a free loopback port."""

    def __init__(
        self, artists: int, seed: int, limit: int, window: float, grace: float = 1.0
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.limit, self.window = limit, window
        cmd = [PY, "-m", "spotify_ingest.sim.cli", "serve", "--port", str(self.port)]
        cmd += ["--artists", str(artists), "--seed", str(seed), "--limit", str(limit)]
        cmd += ["--window", str(window), "--escalation-grace", str(grace)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    def __enter__(self) -> Sim:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the simulator exited at start")
            try:
                httpx.get(self.base + "/__sim/stats", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the simulator did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.base + "/__sim/stats", timeout=30).json()

    def accepted(self) -> list[float]:
        return httpx.get(self.base + "/__sim/accepted", timeout=60).json()["times"]

    def catalog(self) -> set[str]:
        text = httpx.get(self.base + "/__sim/catalog", params={"format": "text"}, timeout=60).text
        return {line for line in text.splitlines() if line}


class Schema:
    """A fresh PostgreSQL schema (dropped at exit); ``url`` puts it first on the search_path."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"si_bench_{secrets.token_hex(5)}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        sep = "&" if "?" in server else "?"
        self.url = f"{server}{sep}options={quote(f'-csearch_path={self.name}', safe='')}"

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()

    def drop(self) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def crawl_cmd(sim: Sim, db: str, args: argparse.Namespace, *extra: str) -> list[str]:
    cmd = [PY, "-m", "spotify_ingest.cli", "crawl", "--workers", str(args.workers), "--db", db]
    cmd += ["--api-base", sim.base + "/v1", "--token-url", sim.base + "/api/token"]
    cmd += ["--window", str(args.window), "--concurrency", str(args.concurrency)]
    return [*cmd, *extra]


def env() -> dict[str, str]:
    return {**os.environ, "SPOTIFY_CLIENT_ID": DEMO_ID, "SPOTIFY_CLIENT_SECRET": DEMO_SECRET}


def figures(sim: Sim) -> dict[str, Any]:
    """Ground truth: utilisation in the busy part of the run, 429s, escalations, peak window."""
    stats = sim.stats()
    times = sim.accepted()
    w, limit = sim.window, sim.limit
    out: dict[str, Any] = {
        "requests": stats["requests_total"],
        "accepted": stats["accepted"],
        "rejected_429": stats["rejected_429"],
        "ratio_429": round(stats["rejected_429"] / max(1, stats["requests_total"]), 5),
        "escalations": stats["escalations"],
        "max_retry_after": stats["max_retry_after"],
        "max_accepted_in_any_window": stats["max_accepted_in_any_window"],
        "limit": limit,
        "window": w,
    }
    if len(times) > 2:
        t0, t1 = times[0] + 3 * w, times[-1] - w
        if t1 > t0:
            n = bisect.bisect_right(times, t1) - bisect.bisect_left(times, t0)
            out["utilisation"] = round(n / (limit * (t1 - t0) / w), 4)
            out["measured_seconds"] = round(t1 - t0, 1)
    return out


def run_duration(args: argparse.Namespace, shared: bool) -> dict[str, Any]:
    prefix = f"si-bench:{secrets.token_hex(5)}"
    schema = Schema(args.pg)
    try:
        with Sim(args.artists, args.seed, args.limit, args.window, args.grace) as sim:
            extra = ["--duration", str(args.duration)]
            if shared:
                extra += ["--redis", args.redis, "--redis-prefix", prefix]
            cmd = crawl_cmd(sim, schema.url, args, *extra)
            started = time.monotonic()
            proc = subprocess.run(
                cmd, env=env(), capture_output=True, text=True, timeout=args.duration + 600
            )
            elapsed = time.monotonic() - started
            out = figures(sim)
            out["artists"] = schema.query("SELECT count(*) FROM artists")[0][0]
    finally:
        schema.drop()
        cleanup_redis(args.redis, prefix)
    out.update(
        run="shared" if shared else "local",
        exit_code=proc.returncode,
        elapsed=round(elapsed, 1),
        tail=[line for line in proc.stderr.splitlines() if "error" in line.lower()][-4:]
        + proc.stdout.splitlines()[-1:],
    )
    return out


def cleanup_redis(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + ":*"))
    if keys:
        client.delete(*keys)
    client.close()


def worker_pid(worker_id: str) -> int | None:
    """The pid of the process whose command line has ``--worker-id worker_id`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if worker_id.encode() in argv and b"--worker-id" in argv:
            return int(entry.name)
    return None


def single_process_ids(args: argparse.Namespace, tmp: Path) -> set[str]:
    """The artist set of a one-process crawl of the same catalog (SQLite, fast limit)."""
    db = tmp / "single.db"
    cmd = [PY, "-m", "spotify_ingest.cli", "crawl", "--simulate", "--db", str(db)]
    cmd += ["--sim-artists", str(args.kill_artists), "--sim-seed", str(args.seed)]
    cmd += ["--sim-limit", "2000", "--sim-window", str(args.window)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    import sqlite3

    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM artists")}


def run_kill(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"si-bench:{secrets.token_hex(5)}"
    schema = Schema(args.pg)
    out: dict[str, Any] = {"run": "kill", "lease_seconds": args.lease_seconds}
    try:
        with Sim(args.kill_artists, args.seed, args.kill_limit, args.window, args.grace) as sim:
            catalog = sim.catalog()
            cmd = crawl_cmd(sim, schema.url, args, "--redis", args.redis, "--redis-prefix", prefix)
            cmd += ["--lease-seconds", str(args.lease_seconds)]
            started = time.monotonic()
            parent = subprocess.Popen(
                cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            victim = f"{socket.gethostname()}:{parent.pid}:w2"
            goal = args.kill_at * len(catalog)
            while parent.poll() is None:
                try:
                    have = schema.query("SELECT count(*) FROM artists")[0][0]
                except psycopg.Error:
                    have = 0
                if have >= goal:
                    break
                time.sleep(0.2)
            pid = worker_pid(victim)
            leased = [
                r[0]
                for r in schema.query(
                    "SELECT id FROM tasks WHERE state = 1 AND leased_by = %s", victim
                )
            ]
            if pid is None or parent.poll() is not None:
                raise RuntimeError("the worker to kill is not running")
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            out.update(killed_pid=pid, killed_after=round(killed_at - started, 1))
            out["leased_at_kill"] = len(leased)
            returned = None
            while parent.poll() is None and returned is None:
                left = schema.query(
                    "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND state = 1 "
                    "AND leased_by = %s",
                    leased,
                    victim,
                )[0][0]
                if left == 0:
                    returned = time.monotonic() - killed_at
                else:
                    time.sleep(0.1)
            stdout, stderr = parent.communicate(timeout=900)
            out["returned_after"] = None if returned is None else round(returned, 2)
            out["exit_code"] = parent.returncode
            out["elapsed"] = round(time.monotonic() - started, 1)
            out["summary"] = stdout.strip().splitlines()[-1:]
            out["supervisor_lines"] = [
                line for line in stderr.splitlines() if line.startswith(("[all]", "[w2]"))
            ][-3:]
            done_by_others = schema.query(
                "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND state = 2", leased
            )[0][0]
            out["victims_tasks_done_by_others"] = done_by_others
            # Tasks claimed again although their worker lived: a lease that ran out in its hands
            # (the crawler renews leases every 15 s whatever --lease-seconds is).
            out["other_tasks_claimed_twice"] = schema.query(
                "SELECT count(*) FROM tasks WHERE attempts > 1 AND NOT (id = ANY(%s))", leased
            )[0][0]
            left = schema.query("SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state")
            out["tasks_by_state"] = {str(s): n for s, n in left}
            ids = {r[0] for r in schema.query("SELECT id FROM artists")}
            out.update(figures(sim))
    finally:
        schema.drop()
        cleanup_redis(args.redis, prefix)
    with tempfile.TemporaryDirectory() as tmp:
        single = single_process_ids(args, Path(tmp))
    out["artists"] = len(ids)
    out["single_process_artists"] = len(single)
    out["equal_to_single_process"] = ids == single
    out["catalog"] = len(catalog)
    out["foreign_ids"] = len(ids - catalog)
    return out


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| run | workers | L / W | utilisation | 429s | 429 ratio | escalations | max in a window "
        "| longest Retry-After | exit |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["run"] == "kill":
            continue
        util = r.get("utilisation")
        rows.append(
            f"| {r['run']} | {r['workers']} | {r['limit']} / {r['window']:g} s | "
            f"{'n/a' if util is None else f'{util:.3f}'} | {r['rejected_429']} | "
            f"{100 * r['ratio_429']:.2f} % | {r['escalations']} | "
            f"{r['max_accepted_in_any_window']} | {r['max_retry_after']} s | {r['exit_code']} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=["shared", "local", "kill"])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--artists", type=int, default=100_000)
    p.add_argument("--limit", type=int, default=80, help="hidden limit per window")
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=45.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--kill-artists", type=int, default=5000)
    p.add_argument("--kill-limit", type=int, default=120)
    p.add_argument("--kill-at", type=float, default=0.35, help="share of the catalog stored")
    p.add_argument("--lease-seconds", type=float, default=5.0)
    p.add_argument(
        "--grace",
        type=float,
        default=0.1,
        help="simulator's escalation grace (s): a request this long into a Retry-After doubles "
        "the penalty (1 s of a 30 s window in production, so 0.1 s of a 2 s one)",
    )
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = []
    for run in args.runs:
        r = run_kill(args) if run == "kill" else run_duration(args, shared=run == "shared")
        r["workers"] = args.workers
        print(json.dumps(r), file=sys.stderr, flush=True)
        results.append(r)
    print(table(results))
    for r in results:
        if r["run"] == "kill":
            print(
                f"\nkill: worker w2 SIGKILLed after {r['killed_after']} s holding "
                f"{r['leased_at_kill']} leased tasks; they were back after {r['returned_after']} s "
                f"(lease {r['lease_seconds']:g} s), {r['victims_tasks_done_by_others']} done by "
                f"others; exit {r['exit_code']} in {r['elapsed']} s; {r['artists']} artists, "
                f"equal to a single-process crawl ({r['single_process_artists']}): "
                f"{r['equal_to_single_process']}; 429s {r['rejected_429']} of {r['requests']}, "
                f"max in a window {r['max_accepted_in_any_window']} (L {r['limit']})"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
