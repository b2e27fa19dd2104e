"""Run one contender in one scenario: fresh simulator, contender process, ground truth, figures.

Steps of ``run_contender``:

1. build a fresh catalog (same size and seed for every contender: the same artists, ids,
   playlists...) and start the contender's process (``worker.py``), which imports what it needs
   and says ``ready``;
2. start a fresh simulator (uvicorn in a thread of this process, on a free loopback port) with the
   scenario's profile, hidden limit, schedule, faults, latency and time scale; send the contender
   its ``ContenderSpec``: the simulator's clock and the contender's start are then within
   milliseconds of each other;
3. wait for the process (``os.wait4``, which also gives its CPU seconds; its peak RSS it reports
   itself, see ``record.peak_rss_mb``); past the budget plus a grace it is terminated, then
   killed (reported as such);
4. read the ground truth (``/__sim/stats``, ``/__sim/accepted``, ``/__sim/catalog``) and the
   limit in force over time (the simulator's configured limit and schedule), stop the simulator,
   and compute the figures (``metrics.py``).
   ``simulator_cpu_s`` is this process's CPU time during the run: the simulator's share of the
   machine, to tell a CPU-starved run from a rate-limited one.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.ratelimit import ScheduleStep
from spotify_ingest.sim.server import SimServer

from .metrics import (
    COVERAGE_MARKS,
    RunTimes,
    coverage_times,
    rate_series,
    summarise_numbers,
    utilisation,
)
from .record import ContenderSpec
from .scenarios import SPOTIFY_WINDOW, BenchScale, Scenario

__all__ = ["run_contender"]

FIXED_RATE_PER_WINDOW = 60
READY_TIMEOUT = 120.0


def _wait(pid: int, deadline: float) -> tuple[int, Any, str | None]:
    """Reap ``pid`` (status, rusage); past ``deadline`` SIGTERM, 10 s later SIGKILL."""
    killed: str | None = None
    term_at: float | None = None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == pid:
            return status, usage, killed
        now = time.monotonic()
        if term_at is None and now >= deadline:
            os.kill(pid, signal.SIGTERM)
            killed = "terminated after the budget and its grace"
            term_at = now
        elif term_at is not None and now >= term_at + 10.0 and killed and "SIGKILL" not in killed:
            os.kill(pid, signal.SIGKILL)
            killed = "killed (SIGKILL) after the budget and its grace"
        time.sleep(0.05)


def _read_samples(path: Path) -> list[tuple[float, int, int]]:
    out: list[tuple[float, int, int]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            t, found, full = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        out.append((float(t), int(found), int(full)))
    return out


def _read_found(path: Path) -> tuple[set[str], set[str]]:
    found: set[str] = set()
    full: set[str] = set()
    if not path.exists():
        return found, full
    with path.open() as fh:
        for line in fh:
            sid, _, flag = line.rstrip("\n").partition("\t")
            if sid:
                found.add(sid)
                if flag == "1":
                    full.add(sid)
    return found, full


def limit_function(initial: int, steps: Sequence[ScheduleStep]) -> Callable[[float], int]:
    """The hidden limit at ``t`` simulated seconds since the simulator started (the schedule
    replayed from its steps: the simulator's own ``LimitSchedule`` only moves forward)."""

    def limit_at(t: float) -> int:
        current = initial
        for step in steps:
            if step.at > t:
                break
            current = step.apply(current)
        return current

    return limit_at


def _estimate_series(path: Path, times: RunTimes) -> dict[str, list[Any]] | None:
    """The controller's beliefs over time (crawler contenders): windows, estimate, target."""
    if not path.exists():
        return None
    keys = ("limit", "target", "window_count", "in_flight", "cpu_s", "loadavg")
    out: dict[str, list[Any]] = {"windows": [], **{k: [] for k in keys}}
    for line in path.read_text().splitlines():
        try:
            t, *values = json.loads(line)
        except ValueError:
            continue
        out["windows"].append(round(times.windows_since_start(float(t)), 4))
        for k, v in zip(keys, values, strict=False):
            out[k].append(v)
    return out


def run_contender(
    scenario: Scenario, contender: str, scale: BenchScale, out_dir: Path
) -> dict[str, Any]:
    """Run ``contender`` in ``scenario``; its folder is ``out_dir/runs/<scenario>/<contender>``."""
    run_dir = out_dir / "runs" / scenario.name / contender
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    config = scenario.sim_config(scale)
    catalog = Catalog(config.artists, config.seed)
    target = math.ceil(scale.target_coverage * config.artists)
    budget = scenario.budget(scale)
    k = scale.time_scale

    stderr = (run_dir / "stderr.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotify_ingest.benchmark.worker", contender],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=run_dir,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            proc.wait()
            raise RuntimeError(
                f"{contender} did not start (see {run_dir / 'stderr.log'}): {line!r}"
            )
        with SimServer(config, catalog=catalog) as server:
            state = server.app.sim
            origin_mono = state.origin / k
            spec = ContenderSpec(
                contender=contender,
                api_base=server.api_base,
                token_url=server.token_url,
                client_id=server.client_id,
                client_secret=server.client_secret,
                time_scale=k,
                window_sim=SPOTIFY_WINDOW,
                budget=budget,
                target_artists=target,
                out_dir=str(run_dir),
                concurrency=scale.concurrency,
                fixed_rate=FIXED_RATE_PER_WINDOW,
            )
            cpu_before = time.process_time()
            proc.stdin.write(spec.to_json() + "\n")
            proc.stdin.flush()
            proc.stdin.close()
            status, usage, killed = _wait(
                proc.pid, time.monotonic() + budget + scale.hard_kill_grace
            )
            proc.returncode = os.waitstatus_to_exitcode(status)
            sim_cpu = time.process_time() - cpu_before  # the simulator's thread, mostly
            with httpx.Client(timeout=120.0) as http:
                stats = http.get(server.stats_url).json()
                accepted = http.get(server.base_url + "/__sim/accepted").json()
                catalog_ids = set(http.get(server.base_url + "/__sim/catalog").text.split())
            # The raw ground truth, so that figures can be recomputed without the simulator.
            (run_dir / "sim_stats.json").write_text(json.dumps(stats, indent=1))
            (run_dir / "sim_accepted.json").write_text(json.dumps(accepted))
            limit_at = limit_function(config.resolved_limit(), config.schedule_steps())

            figures = _figures(
                run_dir=run_dir,
                scenario=scenario,
                contender=contender,
                scale=scale,
                origin_mono=origin_mono,
                stats=stats,
                accepted_times=[float(t) for t in accepted["times"]],
                catalog_ids=catalog_ids,
                limit_at=limit_at,
                usage=usage,
                returncode=proc.returncode,
                killed=killed,
            )
            figures["simulator_cpu_s"] = round(sim_cpu, 3)
    finally:
        stderr.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (run_dir / "figures.json").write_text(json.dumps(figures, indent=1))
    return figures


def _figures(
    *,
    run_dir: Path,
    scenario: Scenario,
    contender: str,
    scale: BenchScale,
    origin_mono: float,
    stats: dict[str, Any],
    accepted_times: list[float],
    catalog_ids: set[str],
    limit_at: Any,
    usage: Any,
    returncode: int,
    killed: str | None,
) -> dict[str, Any]:
    n = len(catalog_ids)
    result: dict[str, Any] = {}
    if (run_dir / "result.json").exists():
        result = json.loads((run_dir / "result.json").read_text())
    samples = _read_samples(run_dir / "samples.jsonl")
    found, full = _read_found(run_dir / "found.tsv")
    t0 = float(result.get("t0", samples[0][0] if samples else origin_mono))
    t_end = float(result.get("t_end", samples[-1][0] if samples else t0))
    times = RunTimes(origin_mono, scale.time_scale, SPOTIFY_WINDOW, t0)
    budget = scenario.budget(scale)
    # Utilisation and rates over the budget at most: a crawl stopped by its budget may take a few
    # more seconds to finish the requests in flight (or to give up a wait).
    start_sim, end_sim = times.sim(t0), times.sim(min(t_end, t0 + budget))
    found_in = found & catalog_ids
    full_in = full & catalog_ids
    if not result and samples:  # killed before writing: the last sample is all we know
        covered = samples[-1][1]
        covered_full = samples[-1][2]
    else:
        covered, covered_full = len(found_in), len(full_in)
    by_endpoint = stats.get("requests_by_endpoint", {})
    token_requests = int(by_endpoint.get("/api/token", {}).get("total", 0))
    requests = int(stats["requests_total"]) - token_requests  # API calls (/v1), not tokens
    rejected = int(stats["rejected_429"]) + int(stats.get("rejected_quota", 0))
    util, accepted_in_run, cap = utilisation(
        accepted_times, limit_at, start_sim, end_sim, SPOTIFY_WINDOW
    )
    ramp = 2 * SPOTIFY_WINDOW  # the first two windows: every adaptive contender's warm-up
    util_after = utilisation(accepted_times, limit_at, start_sim + ramp, end_sim, SPOTIFY_WINDOW)
    ttc = coverage_times(samples, n, t0, COVERAGE_MARKS)
    cpu_crawl = result.get("cpu_seconds")
    cpu_total = float(usage.ru_utime + usage.ru_stime)
    stop_reason = result.get("stop_reason") or killed or f"exit code {returncode}"
    elapsed = min(max(0.0, t_end - t0), budget)
    figures: dict[str, Any] = {
        "scenario": scenario.name,
        "contender": contender,
        "profile": scenario.profile,
        "limit": scenario.limit,
        "artists": n,
        "window_real_s": scale.window_real,
        "time_scale": scale.time_scale,
        "budget_s": scenario.budget(scale),
        "stop_reason": stop_reason,
        "returncode": returncode,
        "killed": killed,
        "elapsed_s": elapsed,
        "elapsed_windows": elapsed / times.window_real,
        "elapsed_sim_s": elapsed * scale.time_scale,
        "requests": requests,
        "requests_by_status": stats.get("requests_by_status", {}),
        "token_requests": token_requests,
        "accepted": int(stats["accepted"]),
        "accepted_in_run": accepted_in_run,
        "capacity_in_run": cap,
        "utilisation": util,
        "utilisation_after_2_windows": util_after[0],
        "start_sim_s": start_sim,
        "rejected_429": rejected,
        "ratio_429": rejected / requests if requests else 0.0,
        "escalations": int(stats["escalations"]),
        "max_retry_after": stats.get("max_retry_after"),
        "max_accepted_in_any_window": stats.get("max_accepted_in_any_window"),
        "found": covered,
        "full": covered_full,
        "coverage": covered / n if n else 0.0,
        "full_coverage": covered_full / n if n else 0.0,
        "not_in_catalog": len(found - catalog_ids),
        "requests_per_artist": requests / covered if covered else None,
        "time_to_coverage_s": ttc,
        "time_to_coverage_windows": {
            k: (None if v is None else v / times.window_real) for k, v in ttc.items()
        },
        "time_to_coverage_sim_s": {
            k: (None if v is None else v * scale.time_scale) for k, v in ttc.items()
        },
        "peak_rss_mb": result.get("peak_rss_mb"),
        "cpu_seconds_total": cpu_total,
        "cpu_seconds_crawl": cpu_crawl,
        "cpu_s_per_1000_requests": (
            1000.0 * float(cpu_crawl if cpu_crawl is not None else cpu_total) / requests
            if requests
            else None
        ),
        "contender_extra": {
            k: v
            for k, v in result.items()
            if k
            not in {"t0", "t_end", "cpu_seconds", "stop_reason", "found", "full", "peak_rss_mb"}
        },
        "coverage_series": {
            "windows": [round(times.windows_since_start(t), 4) for t, _, _ in samples],
            "coverage": [round(f / n, 6) if n else 0.0 for _, f, _ in samples],
            "full": [round(f / n, 6) if n else 0.0 for _, _, f in samples],
        },
        "estimate_series": _estimate_series(run_dir / "controller.jsonl", times),
        "rate_series": rate_series(
            accepted_times, limit_at, start_sim, max(end_sim, start_sim), SPOTIFY_WINDOW
        ),
    }
    return summarise_numbers(figures)
