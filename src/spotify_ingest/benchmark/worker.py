"""One contender run in its own process: ``python -m spotify_ingest.benchmark.worker``.

Its own process, so that its peak RSS and CPU seconds are its own (the harness reads them with
``os.wait4``). Handshake on stdin/stdout, so that the simulator starts only once the contender has
imported everything (the simulator's clock, limit schedule and the run's budget then start
together):

1. the worker imports its contender's modules and prints ``ready``;
2. the harness starts a fresh simulator and writes one line: the ``ContenderSpec`` as JSON;
3. the worker runs, writes its folder (``record.py``) and exits 0.

The sequential contenders (seed, spotipy) have a watchdog thread: at the budget it writes what
the run holds and ends the process, even in the middle of a long sleep (spotipy sleeping through a
Retry-After); the result says so. The async ones stop through the crawler's ``duration``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .record import ContenderSpec, Recorder

__all__ = ["SEQUENTIAL_CONTENDERS", "main"]

SEQUENTIAL_CONTENDERS = ("seed", "spotipy")


class _TrackedSleep:
    """``sleep(simulated seconds)`` in real time, remembering the sleep in progress."""

    def __init__(self, time_scale: float) -> None:
        self.scale = time_scale
        self.until: float | None = None
        self.longest = 0.0

    def __call__(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.longest = max(self.longest, seconds)
        self.until = time.monotonic() + seconds / self.scale
        try:
            time.sleep(seconds / self.scale)
        finally:
            self.until = None


def _run_sequential(spec: ContenderSpec, rec: Recorder) -> None:
    from .seed import HttpSeedApi, SeedPlan

    sleep = _TrackedSleep(spec.time_scale)
    shim: Any = None
    api: Any
    if spec.contender == "spotipy":
        from .spotipy_contender import SpotipySeedApi, use_scaled_time

        logging.getLogger("spotipy").setLevel(logging.CRITICAL)
        logging.getLogger("urllib3").setLevel(logging.CRITICAL)
        shim = use_scaled_time(spec.time_scale)
        api = SpotipySeedApi(
            spec.api_base, spec.token_url, spec.client_id, spec.client_secret, sleep=sleep
        )
    else:
        api = HttpSeedApi(
            spec.api_base, spec.token_url, spec.client_id, spec.client_secret, sleep=sleep
        )

    rec.start()
    deadline = rec.t0 + spec.budget

    def should_stop(found: int) -> str | None:
        if found >= spec.target_artists:
            return "target"
        if time.monotonic() >= deadline:
            return "budget"
        return None

    plan = SeedPlan(
        api, sleep=sleep, should_stop=should_stop, on_progress=lambda n: rec.sample(n, n)
    )

    def extra() -> dict[str, Any]:
        return {
            "script": {
                "requests_sent": api.requests_sent,
                "lost_units": plan.lost_units,
                "rate_limited_seen": plan.rate_limited,
                "token_refreshes": plan.token_refreshes,
                "to_visit_left": len(plan.artist_ids_to_visit),
                "longest_sleep_sim_s": max(
                    sleep.longest, shim.longest_sleep if shim is not None else 0.0
                ),
            }
        }

    def artists() -> list[tuple[str, bool]]:
        items = list(plan.artists.items())  # one C-level copy: safe against the main thread
        return [(sid, "genres" in obj) for sid, obj in items]

    def watchdog() -> None:
        time.sleep(max(0.0, deadline - time.monotonic()) + min(1.0, spec.window_real / 2))
        if rec.finished:
            return
        asleep = [s for s in (sleep.until, getattr(shim, "sleeping_until", None)) if s]
        reason = "budget"
        if asleep:
            left = (max(asleep) - time.monotonic()) * spec.time_scale
            reason = f"budget (cut in a sleep with {left:.0f} simulated s left)"
        if rec.finish(reason, artists(), extra()):
            os._exit(0)

    threading.Thread(target=watchdog, name="budget-watchdog", daemon=True).start()
    reason = plan.run()
    rec.finish(reason, artists(), extra())


def _preload(contender: str) -> Callable[[ContenderSpec, Recorder], None]:
    """Import everything the contender needs before the clock starts; return its runner."""
    if contender in SEQUENTIAL_CONTENDERS:
        from . import seed  # noqa: F401

        if contender == "spotipy":
            import spotipy  # noqa: F401

            from . import spotipy_contender  # noqa: F401
        return _run_sequential
    from .crawlers import CRAWLER_CONTENDERS, run_crawler_contender

    if contender not in CRAWLER_CONTENDERS:
        raise SystemExit(f"unknown contender {contender!r}")
    if contender == "fixed-rate":
        import aiolimiter  # noqa: F401
    elif contender == "botocore-adaptive":
        import botocore.retries.adaptive  # noqa: F401
    return run_crawler_contender


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m spotify_ingest.benchmark.worker CONTENDER", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    runner = _preload(args[0])
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the harness gave up
    spec = ContenderSpec.from_json(line)
    rec = Recorder(Path(spec.out_dir), interval=spec.window_real / 8)
    runner(spec, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
