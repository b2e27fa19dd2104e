"""Kill a crawl while it is paused on a 429 and restart it at once: does any run send into the ban?

The simulator (``spotify-ingest sim serve``, 3,000 artists, a 1 s window, ``--limit``) doubles a
client's penalty on every request that arrives during a Retry-After (``--escalation-grace 0``).
The crawl (``--strategy search``, ``--concurrency``) is started; as soon as it is paused on a 429
it is SIGKILLed and started again at once, ``--kills`` times; then it runs to the end. Printed:
the requests the simulator saw inside a block after its first second, its escalations (penalty
doublings), the largest Retry-After it gave, the wall time, and whether the artists equal those of
an uninterrupted crawl of the same catalog.

"Paused" is read from the simulator: its count of 429s grew (``--trigger sim``, the default, which
works for any version of the crawler), or from the crawl's database: it wrote a new Retry-After
deadline (``--trigger deadline``). ``--crawler-src`` runs the crawls (not the simulator) from
another checkout's ``src``, to measure that code the same way.

    .venv/bin/python bench/kill_restart.py --kills 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.harness import (  # noqa: E402
    SimProcess,
    cli_env,
    crawl_cmd,
    kill_while_paused,
    read_db,
    run_cli,
    stored_deadline,
)


def _sim_args(limit: int) -> tuple[str, ...]:
    return ("--artists", "3000", "--window", "1", "--limit", str(limit), "--escalation-grace", "0")


def _crawl(sim: SimProcess, db: Path, concurrency: int) -> list[str]:
    return crawl_cmd(sim, db, "--strategy", "search", "--concurrency", str(concurrency))


def _env(args: argparse.Namespace) -> dict[str, str]:
    return cli_env(extra={"PYTHONPATH": args.crawler_src} if args.crawler_src else None)


def uninterrupted(folder: Path, args: argparse.Namespace) -> set[str]:
    db = folder / "reference.db"
    with SimProcess(*_sim_args(args.limit)) as sim:
        run = run_cli(_crawl(sim, db, args.concurrency), cwd=folder, env=_env(args), timeout=600)
    if run.code != 0:
        raise SystemExit(f"the uninterrupted crawl failed: {run}")
    return read_db(db).artist_ids


def killed_and_restarted(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    db = folder / "killed.db"
    with SimProcess(*_sim_args(args.limit)) as sim:
        cmd = _crawl(sim, db, args.concurrency)

        def marker() -> Any:
            if args.trigger == "deadline":
                return stored_deadline(db)
            return sim.stats()["rejected_429"] or None

        started = time.monotonic()
        kill_while_paused(
            cmd, cwd=folder, kills=args.kills, pause_marker=marker, timeout=120, env=_env(args)
        )
        final = run_cli(cmd, cwd=folder, env=_env(args), timeout=1800)
        elapsed = time.monotonic() - started
        stats = sim.stats()
    arrivals = stats["blocked_arrivals"]
    return {
        "final_exit": final.code,
        "seconds": round(elapsed, 1),
        "rejected_429": stats["rejected_429"],
        "blocked_arrivals": len(arrivals),
        "blocked_arrivals_after_1s": sum(1 for a in arrivals if a["into_block_s"] > 1.0),
        "escalations": stats["escalations"],
        "max_retry_after_s": stats["max_retry_after"],
        "artists": read_db(db).artist_ids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--limit", type=int, default=40, help="hidden limit per 1 s window")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--trigger", choices=("sim", "deadline"), default="sim")
    parser.add_argument("--crawler-src", help="run the crawls from this src folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kill-restart-") as tmp:
        folder = Path(tmp)
        reference = uninterrupted(folder, args)
        out = killed_and_restarted(folder, args)
    artists = out.pop("artists")
    out["artists_equal_uninterrupted"] = artists == reference
    out["artists"] = len(artists)
    out["artists_uninterrupted"] = len(reference)
    print(json.dumps({"kills": args.kills, "limit": args.limit, **out}, indent=2))


if __name__ == "__main__":
    main()
