"""The learned limit while a crawl runs: committed as soon as a 429 bounds it, so ``limits`` shows
it during the crawl and a SIGKILL does not lose it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from .harness import CLI, cli_env, run_cli


def limits_line(db: Path, cwd: Path) -> str | None:
    """The line ``spotify-ingest limits`` prints for the simulator (None: nothing learned yet)."""
    run = run_cli([*CLI, "limits", "--db", str(db)], cwd=cwd, timeout=30)
    found = [line for line in run.stdout.splitlines() if "requests per 1s" in line]
    return found[0] if run.code == 0 and found else None


def test_limits_shows_the_learned_limit_while_the_crawl_runs(tmp_path: Path) -> None:
    db = tmp_path / "crawl.db"
    argv = [*CLI, "crawl", "--simulate", "--sim-limit", "50", "--sim-window", "1"]
    argv += ["--db", str(db), "--duration", "30"]
    crawl = subprocess.Popen(
        argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        started = time.monotonic()
        shown = None
        while shown is None and crawl.poll() is None and time.monotonic() - started < 20:
            time.sleep(0.5)
            if db.exists():
                shown = limits_line(db, tmp_path)
        running = crawl.poll() is None
        crawl.send_signal(signal.SIGKILL)  # a crash: what was committed is all there is
        crawl.wait(30)
    finally:
        if crawl.poll() is None:
            crawl.kill()
            crawl.wait()
    assert shown is not None, "no limit learned within 20 s of the crawl's start"
    assert running  # seen during the crawl, not at its end
    assert limits_line(db, tmp_path) is not None  # and kept by the crash
