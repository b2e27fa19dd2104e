"""The known index's own cost in a large crawl, without HTTP, the store or the planner.

A crawl asks :class:`~spotify_ingest.discovery.known.KnownNames` two things a page:
``for_store`` (which of the page's artists can change the store, and which were never held)
and ``apply`` (what the store's commit changed). This script feeds it pages shaped like the
middle of a large dev-2026 crawl: 10 artists listed in full (half of them new, a third seen
simplified before, the rest held full already) and 20 album and track artists in simplified
form (a quarter new), with names from the simulator's catalog and ids in random order. It
prints milliseconds of CPU a page and the peak RSS, so two versions of the module can be run
side by side on the same machine:

    .venv/bin/python bench/known_index.py --artists 1000000
    PYTHONPATH=<other checkout>/src .venv/bin/python bench/known_index.py --artists 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import string
import sys
import time

from spotify_ingest.discovery.known import KnownNames
from spotify_ingest.models import Artist, SimplifiedArtist
from spotify_ingest.sim.catalog import Catalog


def _random_id(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=22))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artists", type=int, default=1_000_000, help="artists held at the end")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    catalog = Catalog(min(args.artists, 200_000), args.seed)  # names only: reused past 200k
    names = [catalog.artist_name(i) for i in range(catalog.n_artists)]
    del catalog

    known = KnownNames()
    held_full: list[tuple[str, str]] = []  # (id, name) held in full
    held_simplified: list[tuple[str, str]] = []
    simplified_ids: set[str] = set()
    made = 0

    def new_artist() -> tuple[str, str]:
        nonlocal made
        made += 1
        return _random_id(rng), names[made % len(names)]

    pages = 0
    start = time.process_time()
    while made < args.artists:
        listed: list[Artist | SimplifiedArtist] = []
        for k in range(10):
            if k < 5 or not held_full:
                artist_id, name = new_artist()
            elif k < 8 and held_simplified:
                artist_id, name = held_simplified.pop(rng.randrange(len(held_simplified)))
            else:
                artist_id, name = held_full[rng.randrange(len(held_full))]
            listed.append(Artist(id=artist_id, name=name, genres=["pop"], images=[]))
        for k in range(20):
            if k < 5 or not held_full:
                artist_id, name = new_artist()
            else:
                artist_id, name = held_full[rng.randrange(len(held_full))]
            listed.append(SimplifiedArtist(id=artist_id, name=name))
        kept, unseen = known.for_store(listed)
        # what the store's commit reports (CompletionResult.changes): new ids, and upgrades
        changes: list[tuple[str, str, int, int]] = []
        done: set[str] = set()
        for artist in kept:
            if artist.id in done:
                continue
            done.add(artist.id)
            full = isinstance(artist, Artist)
            if artist.id in unseen:
                changes.append((artist.id, artist.name, 1, int(full)))
                (held_full if full else held_simplified).append((artist.id, artist.name))
                if not full:
                    simplified_ids.add(artist.id)
            elif full and artist.id in simplified_ids:
                simplified_ids.discard(artist.id)
                changes.append((artist.id, artist.name, 0, 1))
                held_full.append((artist.id, artist.name))
        known.apply(changes)
        known.stored(a for a in kept if isinstance(a, Artist))
        pages += 1
    cpu = time.process_time() - start
    known.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "artists": made,
        "pages": pages,
        "cpu_s": round(cpu, 1),
        "ms_per_page": round(1000 * cpu / pages, 3),
        "peak_rss_mb": round(rss, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
