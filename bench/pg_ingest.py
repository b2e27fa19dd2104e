"""Artist upsert throughput of the PostgreSQL store: how fast a crawl's results land.

Every phase writes through :meth:`PostgresStore.complete`, one task per batch and one transaction
per task, exactly as the crawler does (claims included, in batches of 100 tasks):

* ``crawl new``      — 50 new simplified artists per task (album / track pages);
* ``crawl re-seen``  — the same artists again (most of a crawl: known artists seen once more);
* ``crawl upgrade``  — 50 full objects per task replacing simplified ones (hydration);
* ``bulk N``         — N new full artists per task (big batches: search pages merged, imports).

Run against a throw-away schema (created, dropped afterwards)::

    .venv/bin/python bench/pg_ingest.py                     # 200k artists per phase
    .venv/bin/python bench/pg_ingest.py --artists 50000 --synchronous-commit

The DSN comes from ``--dsn``, else ``SPOTIFY_INGEST_TEST_PG``, else
``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from spotify_ingest.models import Artist, Image, SimplifiedArtist
from spotify_ingest.store.base import TaskOutcome, TaskSpec
from spotify_ingest.store.postgres import PostgresStore, describe_dsn

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLAIM_BATCH = 100


def simplified(start: int, n: int) -> list[SimplifiedArtist]:
    return [
        SimplifiedArtist(
            id=f"{i:022d}",
            name=f"Artist {i}",
            uri=f"spotify:artist:{i:022d}",
            external_urls={"spotify": f"https://open.spotify.com/artist/{i:022d}"},
        )
        for i in range(start, start + n)
    ]


def full(start: int, n: int) -> list[Artist]:
    return [
        Artist(
            id=f"{i:022d}",
            name=f"Artist {i}",
            uri=f"spotify:artist:{i:022d}",
            external_urls={"spotify": f"https://open.spotify.com/artist/{i:022d}"},
            genres=["indie pop", "bedroom pop"][: i % 3],
            popularity=i % 100,
            followers=i * 7,
            images=[Image(url=f"https://i.scdn.co/image/{i:040x}", height=640, width=640)],
        )
        for i in range(start, start + n)
    ]


def backend_cpu(pid: int) -> float | None:
    """CPU seconds the server process ``pid`` has used (None: not on this host / not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(
    store: PostgresStore,
    label: str,
    batches: Sequence[Sequence[Artist | SimplifiedArtist]],
    backend_pid: int,
) -> float:
    """Complete one task per batch; returns artists per second (wall clock, claims included).

    Also prints artists per CPU-second (this process + its PostgreSQL backend), which does not
    depend on what else the machine is running.
    """
    store.add_tasks(TaskSpec(label, {"n": n}) for n in range(len(batches)))
    done = 0
    server0 = backend_cpu(backend_pid)
    client0 = time.process_time()
    t0 = time.perf_counter()
    while done < len(batches):
        for task in store.claim(label, CLAIM_BATCH):
            store.complete(task, TaskOutcome(artists=batches[done]))
            done += 1
    elapsed = time.perf_counter() - t0
    client = time.process_time() - client0
    server1 = backend_cpu(backend_pid)
    artists = sum(len(b) for b in batches)
    rate = artists / elapsed
    per_cpu = ""
    if server0 is not None and server1 is not None:
        per_cpu = f"  {artists / (client + server1 - server0):10,.0f} artists/CPU-s"
    print(
        f"{label:<16} {len(batches):>6} tasks x {len(batches[0]):>5} artists  "
        f"{elapsed:7.2f} s  {rate:10,.0f} artists/s  {len(batches) / elapsed:8,.0f} tasks/s"
        f"{per_cpu}",
        flush=True,
    )
    return rate


def chunk(items: Sequence[Artist | SimplifiedArtist], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("SPOTIFY_INGEST_TEST_PG", DEFAULT_DSN))
    parser.add_argument("--artists", type=int, default=200_000, help="artists per phase")
    parser.add_argument("--batch", type=int, default=50, help="artists per crawl task")
    parser.add_argument("--bulk", default="1000,10000", help="bulk batch sizes, comma-separated")
    parser.add_argument(
        "--synchronous-commit",
        action="store_true",
        help="wait for the WAL flush on every commit (default: off, like SQLite's NORMAL)",
    )
    args = parser.parse_args(argv)

    schema = f"si_bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        version = admin.execute("SHOW server_version").fetchone()
    print(
        f"PostgreSQL {version[0] if version else '?'} at {describe_dsn(args.dsn)}, schema {schema},"
        f" synchronous_commit={'on' if args.synchronous_commit else 'off'},"
        f" {args.artists:,} artists per phase"
    )
    n = args.artists
    rates: dict[str, float] = {}
    try:
        dsn = make_conninfo(args.dsn, options=f"-c search_path={schema}")
        with PostgresStore(
            dsn, worker_id="bench", synchronous_commit=args.synchronous_commit
        ) as store:
            pid = store.backend_pid
            rates["crawl new"] = run_phase(
                store, "crawl new", chunk(simplified(0, n), args.batch), pid
            )
            rates["crawl re-seen"] = run_phase(
                store, "crawl re-seen", chunk(simplified(0, n), args.batch), pid
            )
            rates["crawl upgrade"] = run_phase(
                store, "crawl upgrade", chunk(full(0, n), args.batch), pid
            )
            start = n
            for size in (int(s) for s in args.bulk.split(",") if s.strip()):
                label = f"bulk {size}"
                rates[label] = run_phase(store, label, chunk(full(start, n), size), pid)
                start += n
            counts = store.artist_counts()
            assert counts.total == counts.full == start, counts
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    worst = min(rates.values())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"slowest phase: {worst:,.0f} artists/s (target >= 20,000); "
        f"load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
