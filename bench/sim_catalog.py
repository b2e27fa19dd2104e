"""Benchmark of the simulator catalog: build time, peak RSS and search latency per catalog size.

    .venv/bin/python bench/sim_catalog.py                 # 100k and 1M artists
    .venv/bin/python bench/sim_catalog.py --sizes 20000 5000000

Each size is measured in a fresh subprocess, so the peak RSS (``ru_maxrss``) is that catalog's
alone (it includes the interpreter and numpy, ~40 MB). Search latency: the mean and worst first
(uncached) call over every one-letter and a set of two-letter queries, per type; and the mean of
a cached call (paging the same three-type query through offsets 0..1000, limit 10).
Targets from the issue: 100k ready in <= 5 s; 1M in <= 30 s and <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import string
import subprocess
import sys
import time

TARGETS = {100_000: (5.0, None), 1_000_000: (30.0, 1536.0)}


def measure(n_artists: int, seed: int) -> dict[str, float]:
    from spotify_ingest.sim.catalog import Catalog

    start = time.perf_counter()
    cat = Catalog(n_artists, seed)
    build_s = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict[str, float] = {
        "artists": n_artists,
        "albums": cat.n_albums,
        "tracks": cat.n_tracks,
        "build_s": build_s,
        "peak_rss_mb": rss_mb,
    }
    queries = list(string.ascii_lowercase) + [a + b for a in "bcdmst" for b in "aeiour"]
    for kind in ("artist", "album", "track"):
        times = []
        for q in queries:
            cat._matches.clear()  # measure the uncached path
            t0 = time.perf_counter()
            cat.search(q, [kind], 0, 10)
            times.append(time.perf_counter() - t0)
        out[f"{kind}_uncached_mean_ms"] = 1000 * sum(times) / len(times)
        out[f"{kind}_uncached_max_ms"] = 1000 * max(times)
    cat.search("s", ["artist", "album", "track"], 0, 10)
    t0 = time.perf_counter()
    for offset in range(0, 1001, 10):
        cat.search("s", ["artist", "album", "track"], offset, 10)
    out["cached_3types_ms"] = 1000 * (time.perf_counter() - t0) / 101
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.seed)))
        return
    rows = []
    for n in args.sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    header = (
        f"{'artists':>9} {'albums':>9} {'tracks':>10} {'build s':>8} {'peak MB':>8} "
        f"{'artist ms':>11} {'album ms':>11} {'track ms':>11} {'cached ms':>9}  target"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        n = int(r["artists"])
        verdict = ""
        if n in TARGETS:
            max_s, max_mb = TARGETS[n]
            ok = r["build_s"] <= max_s and (max_mb is None or r["peak_rss_mb"] <= max_mb)
            verdict = (
                ("ok" if ok else "MISSED")
                + f" (<= {max_s:.0f} s"
                + (f", <= {max_mb:.0f} MB)" if max_mb else ")")
            )
        print(
            f"{n:>9,} {int(r['albums']):>9,} {int(r['tracks']):>10,} {r['build_s']:>8.2f} "
            f"{r['peak_rss_mb']:>8.0f} "
            f"{r['artist_uncached_mean_ms']:>5.2f}/{r['artist_uncached_max_ms']:<5.1f} "
            f"{r['album_uncached_mean_ms']:>5.2f}/{r['album_uncached_max_ms']:<5.1f} "
            f"{r['track_uncached_mean_ms']:>5.2f}/{r['track_uncached_max_ms']:<5.1f} "
            f"{r['cached_3types_ms']:>9.3f}  {verdict}"
        )
    print(
        "search columns: uncached mean/max ms over one- and two-letter queries, one type, limit 10;"
    )
    print("cached: one call for artist,album,track paging a cached query")


if __name__ == "__main__":
    main()
