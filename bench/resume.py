"""What resuming a large crawl costs before its first request: time, CPU and peak memory.

A crawl that starts on an existing database rebuilds its known index (the artists held under
each name-word prefix, :mod:`spotify_ingest.discovery.known`) from the store's artists before it
sends anything. This script makes a database like one a long crawl leaves (``--artists`` full
artists with the simulator catalog's names and ids, three images each, in the order a crawl
would have stored them), then runs the README's resume command on it in a child process,

    spotify-ingest crawl --simulate --db DB --max-requests 1

and reports the child's wall time, CPU time and peak RSS (``ru_maxrss``; the in-process
simulator it starts serves a 2,000-artist catalog, a few MB). Run it with ``PYTHONPATH`` set to
another checkout's ``src`` to measure that code on the same database (``--db`` reuses one).

    .venv/bin/python bench/resume.py --artists 1000000 --db /tmp/resume-1m.db
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import spotify_ingest
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.store.sqlite import SQLiteStore

_INSERT = (
    "INSERT INTO artists (id, name, detail, genres, popularity, followers, images, uri, "
    "external_url, found_by, first_seen, updated_at) VALUES (?, ?, 1, ?, NULL, NULL, ?, ?, ?, "
    "'search', ?, ?)"
)


def build(path: Path, n_artists: int, seed: int) -> None:
    """A database of ``n_artists`` full artists (the schema from SQLiteStore, rows by SQL)."""
    SQLiteStore(path).close()
    catalog = Catalog(n_artists, seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    now = time.time()
    for start in range(0, n_artists, 10_000):
        rows = []
        for i in range(start, min(n_artists, start + 10_000)):
            artist_id = catalog.artist_id(i)
            images = json.dumps(
                [
                    {"url": f"https://i.scdn.co/image/{artist_id}{size}", "height": size,
                     "width": size}
                    for size in (640, 320, 160)
                ]
            )  # fmt: skip
            genres = json.dumps(["indie pop"] if i % 5 == 0 else [])
            url = f"https://open.spotify.com/artist/{artist_id}"
            rows.append(
                (artist_id, catalog.artist_name(i), genres, images, f"spotify:artist:{artist_id}",
                 url, now, now)
            )  # fmt: skip
        db.executemany(_INSERT, rows)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def resume(path: Path) -> dict[str, float]:
    """Run the resume command once in a child process; its wall time, CPU and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "spotify_ingest.cli", "crawl", "--simulate", "--db", str(path)]
    cmd += ["--max-requests", "1", "--sim-artists", "2000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"resume failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artists", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", type=Path, required=True, help="built here unless it exists")
    args = ap.parse_args(argv)
    if not args.db.exists():
        t0 = time.perf_counter()
        build(args.db, args.artists, args.seed)
        print(f"built {args.db} ({args.artists:,} artists) in {time.perf_counter() - t0:.0f} s")
    n = sqlite3.connect(args.db).execute("SELECT COUNT(*) FROM artists").fetchone()[0]
    figures = resume(args.db)
    print(json.dumps({"artists": n, "code": str(Path(spotify_ingest.__file__).parent), **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
