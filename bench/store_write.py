"""The SQLite store's write path alone: a crawl's finished tasks, without HTTP or discovery.

Each finished task brings 7 new full artists (with three images, as the API gives them), 2 new
simplified ones and the full form of 2 artists seen simplified 5,000 tasks before, and spawns
one task, the way a search page does in the middle of a large dev-2026 crawl (where 40 % of the
artists are first seen simplified, on an album or a track); artists arrive in random id order.
The store runs as in a crawl (``CRAWL_OPTIONS``: group commits, background checkpoints), and the
figures are milliseconds of CPU per finished task: ``complete`` and ``claim`` on the calling
thread, and the whole process (the checkpoint thread included).

Variants, each in a process of its own, all run at once (side by side, on the same machine):

* ``v1``: the artists table of schema version 1, keyed by artist id (WITHOUT ROWID);
* ``v2``: today's rowid table with a unique index on the ids;
* ``v2+unseen``: and the task's new ids passed as ``TaskOutcome.unseen``, as a crawl does.

    .venv/bin/python bench/store_write.py --artists 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("v1", "v2", "v2+unseen")
# Tasks between an artist's simplified sighting and its full one.
UPGRADE_LAG = 5_000


def _v1_layout() -> None:
    """Make this process's stores stop at schema version 1 (the layout before the rowid table)."""
    from spotify_ingest.store import schema, sqlite

    del schema.MIGRATIONS[2]
    schema.SCHEMA_VERSION = 1
    sqlite.SCHEMA_VERSION = 1  # type: ignore[attr-defined]


def run_variant(variant: str, n_artists: int) -> dict[str, object]:
    if variant == "v1":
        _v1_layout()
    from spotify_ingest.models import Artist, Image, SimplifiedArtist
    from spotify_ingest.store.base import TaskOutcome, TaskSpec
    from spotify_ingest.store.sqlite import CRAWL_OPTIONS, SQLiteStore

    rnd = random.Random(1)
    alphabet = string.ascii_letters + string.digits
    ids = ["".join(rnd.choices(alphabet, k=22)) for _ in range(n_artists)]
    rnd.shuffle(ids)

    def common(i: int) -> dict[str, Any]:  # what simplified and full artists both carry
        sid = ids[i]
        return {
            "id": sid,
            "name": f"Artist {i}",
            "uri": f"spotify:artist:{sid}",
            "external_urls": {"spotify": f"https://open.spotify.com/artist/{sid}"},
        }

    def full(i: int) -> Artist:
        images = [
            Image(url=f"https://i.scdn.co/image/ab67{i:036d}", height=h, width=h)
            for h in (640, 300, 64)
        ]
        return Artist(**common(i), genres=["rock"] if i % 3 == 0 else [], images=images)

    def simplified(i: int) -> SimplifiedArtist:
        return SimplifiedArtist(**common(i))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crawl.db"
        store = SQLiteStore(path, **CRAWL_OPTIONS)
        with sqlite3.connect(path) as db:  # the layout is the variant's
            (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'artists'").fetchone()
        assert ("WITHOUT ROWID" in sql) == (variant == "v1"), sql
        store.add_tasks([TaskSpec("search", {"q": "0"})])
        t_complete = t_claim = 0.0
        tasks = 0
        at = 0
        cpu0 = time.process_time()
        while at < n_artists:
            t = time.thread_time()
            (task,) = store.claim("search", 1)
            t_claim += time.thread_time() - t
            artists: list[Artist | SimplifiedArtist] = [
                full(i) for i in range(at, min(n_artists, at + 7))
            ]
            # two artists seen simplified first (an album's, a track's) and full only later,
            # as 40 % of a dev-2026 crawl's artists are: their rows are upgraded in place
            artists += [simplified(i) for i in range(at + 7, min(n_artists, at + 9))]
            new = frozenset(a.id for a in artists)
            earlier = at - 9 * UPGRADE_LAG
            if earlier >= 0:
                artists += [full(i) for i in range(earlier + 7, earlier + 9)]
            at += 9
            tasks += 1
            unseen = new if variant.endswith("+unseen") else None
            outcome = TaskOutcome(
                artists=artists, spawn=[TaskSpec("search", {"q": str(tasks)})], unseen=unseen
            )
            t = time.thread_time()
            store.complete(task, outcome)
            t_complete += time.thread_time() - t
        store.close()
        cpu = time.process_time() - cpu0
        size_mb = os.path.getsize(path) / 1e6
    return {
        "variant": variant,
        "artists": n_artists,
        "tasks": tasks,
        "complete_ms_per_task": round(1000 * t_complete / tasks, 3),
        "claim_ms_per_task": round(1000 * t_claim / tasks, 3),
        "process_ms_per_task": round(1000 * cpu / tasks, 3),
        "db_mb": round(size_mb),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artists", type=int, default=200_000)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process
    ap.add_argument("--json", type=Path, help="append results as JSON lines here")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_variant(args.one, args.artists)), flush=True)
        return 0
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--one", v, "--artists", str(args.artists)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for v in args.variants
    ]
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            return child.returncode
        print(out.strip(), flush=True)
        if args.json:
            with args.json.open("a") as fh:
                fh.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
