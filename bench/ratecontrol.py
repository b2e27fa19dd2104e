"""Benchmark of the adaptive rate controller, beside the seed's policy and a fixed rate.

Three parts, each optional:

``--virtual``  the discrete-event model (``spotify_ingest.ratemodel``) on virtual time: a hidden
    ``(L, W)`` sliding log with Retry-After blocks and escalating penalties like the simulator's,
    20-100 ms round trips; our controller, the seed's policy (unpaced, sleep W after every 1,500
    requests, sleep Retry-After on a 429) and a fixed rate of 60 per window (``aiolimiter``'s
    leaky bucket, modelled), each with the same concurrency. Seconds for the whole grid.
``--cpu``      CPU per request of the controller alone: a tight loop of ``try_acquire`` +
    ``on_success`` (the synchronous core), and ``await acquire()`` + ``on_success`` on a running
    event loop when no wait is needed (the async fast path), and with pacing (every acquire
    waits for its slot: sleep, wake-up, FIFO hand-over).
``--ramp``     the cold start alone on the model: per window, limit and latency, the overshoot
    (requests refused after the first refusal, during its Retry-After; bound ``max(2, 5 % L)``)
    and the ramp time (first refusal; accepted count in the trailing window first at 95 % of
    ``L``), median and worst over ``--seeds`` runs. With ``--base SRC``, the same for the
    controller of another checkout's ``src`` directory, side by side (e.g. the code before a
    change: ``git archive REV src | tar -x -C /tmp/base``, then ``--base /tmp/base/src``).
``--real``     real time against the simulator in process (``httpx.ASGITransport``), window ``W``
    real seconds, hidden ``L`` per window, each run ``--windows`` windows long: our
    ``SpotifyClient`` + ``RateController`` cold, warm (from a stored estimate), with ``L``
    halving and doubling after 12 windows; the seed's policy and ``aiolimiter.AsyncLimiter(60,
    W)`` with a bare httpx loop, side by side with our cold run. Ground truth from the
    simulator: ``/__sim/accepted`` (times of accepted requests) and ``/__sim/stats``
    (429s, escalations). Runs of one limit go concurrently, one simulator each; limits go one
    after the other (one event loop: a whole core at most, shared with the simulators).

Figures per run: steady-state utilisation (accepted / (L x elapsed / W) after the first 3
windows; with a schedule, the integral of L), 429 ratio (429s / requests), escalations, time to
90 % of L/W (first time the accepted count in the trailing window reaches 0.9 L; after a change,
counted from the change), and for the halving: when the last 429 not due to a probe came.

Run::

    .venv/bin/python bench/ratecontrol.py --virtual --cpu
    .venv/bin/python bench/ratecontrol.py --ramp --base /tmp/base/src
    .venv/bin/python bench/ratecontrol.py --real --window 3 --windows 40 --limits 10,40,150,600
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import random
import statistics
import sys
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spotify_ingest.ratecontrol import LimitEstimate, RateController
from spotify_ingest.ratemodel import (
    ControllerPolicy,
    FixedRatePolicy,
    Latency,
    ManualClock,
    RunResult,
    SeedPolicy,
    SlidingLogServer,
    run,
)

CONCURRENCY = 64  # virtual runs; real runs use --concurrency


# ------------------------------------------------------------------------------------ metrics


def utilisation(
    times: Sequence[float], t0: float, t1: float, limit_at: Any, window: float
) -> float:
    """Accepted in [t0, t1) over the integral of L(t) / W (L piecewise constant)."""
    n = bisect_left(times, t1) - bisect_left(times, t0)
    steps = 200
    dt = (t1 - t0) / steps
    allowed = sum(limit_at(t0 + (i + 0.5) * dt) for i in range(steps)) * dt / window
    return n / allowed if allowed > 0 else math.nan


def time_to_fraction(
    times: Sequence[float], limit_at: Any, window: float, since: float, fraction: float = 0.9
) -> float:
    lo = i = bisect_left(times, since)
    for j in range(i, len(times)):
        t = times[j]
        while times[lo] <= t - window:
            lo += 1
        if j - lo + 1 >= fraction * limit_at(t):
            return t - since
    return math.inf


def limit_fn(limit: int, schedule: Sequence[tuple[float, int]]) -> Any:
    def at(t: float) -> int:
        current = limit
        for when, value in schedule:
            if t >= when:
                current = value
        return current

    return at


@dataclass
class Row:
    part: str  # virtual / real
    policy: str  # ours / seed / fixed
    scenario: str  # cold / warm / halve / double
    limit: int
    window: float
    util: float
    ratio: float
    escalations: int
    t90_windows: float
    requests: int
    settle_windows: float | None = None  # halving: last 429 not from a probe, after the change
    util_after: float | None = None  # with a change: utilisation of the new L from change + 3 W
    extra: dict[str, Any] = field(default_factory=dict)


SCHEDULES = {
    "cold": lambda lim, w: [],
    "warm": lambda lim, w: [],
    "halve": lambda lim, w: [(12 * w, lim // 2)],
    "double": lambda lim, w: [(12 * w, 2 * lim)],
}


def _warm(limit: int, window: float) -> LimitEstimate:
    """What the crawler stored after a previous run against this limit."""
    return LimitEstimate.from_json(
        LimitEstimate(
            limit=limit, lower=limit, upper=limit, window=window, observed_at=time.time() - 600
        ).to_json()
    )


# ------------------------------------------------------------------------------------ virtual


def virtual_rows(limits: Sequence[int], windows_s: Sequence[float], n_windows: int) -> list[Row]:
    rows: list[Row] = []
    for window in windows_s:
        for limit in limits:
            for scenario, make in SCHEDULES.items():
                schedule = make(limit, window)
                policies: list[tuple[str, Any, RateController | None, ManualClock]] = []
                clock = ManualClock()
                rc = RateController(
                    window,
                    max_concurrency=CONCURRENCY,
                    clock=clock,
                    warm_start=_warm(limit, window) if scenario != "cold" else None,
                )
                policies.append(("ours", ControllerPolicy(rc), rc, clock))
                if scenario == "cold":
                    policies.append(("seed", SeedPolicy(window, CONCURRENCY), None, ManualClock()))
                    policies.append(
                        ("fixed", FixedRatePolicy(window, 60.0, CONCURRENCY), None, ManualClock())
                    )
                for name, policy, ctl, clk in policies:
                    server = SlidingLogServer(limit, window, schedule)
                    res = run(policy, server, n_windows * window, clock=clk)
                    rows.append(_virtual_row(name, scenario, limit, window, res, schedule, ctl))
    return rows


def _virtual_row(
    name: str,
    scenario: str,
    limit: int,
    window: float,
    res: RunResult,
    schedule: Sequence[tuple[float, int]],
    rc: RateController | None,
) -> Row:
    change = schedule[0][0] if schedule else 0.0
    settle = None
    if scenario == "halve" and rc is not None:
        late = [t for t, k in rc.refusals if t > change and k not in ("probe", "echo")]
        settle = (max(late) - change) / window if late else 0.0
    return Row(
        part="virtual",
        policy=name,
        scenario=scenario,
        limit=limit,
        window=window,
        util=res.utilisation(3 * window),
        ratio=res.refusal_ratio(),
        escalations=res.escalations,
        t90_windows=res.time_to_fraction(0.9, since=change) / window,
        requests=len(res.accepted) + len(res.refused),
        settle_windows=settle,
        util_after=res.utilisation(change + 3 * window) if schedule else None,
    )


# ------------------------------------------------------------------------------------ ramp

RAMP_LATENCIES = {"sim 30 ms": Latency.simulator(), "20-100 ms": Latency()}


def _controller_class(src: str) -> Any:
    """``RateController`` of another checkout's ``src`` directory, as a module of its own."""
    path = Path(src) / "spotify_ingest" / "ratecontrol.py"
    spec = importlib.util.spec_from_file_location("base_ratecontrol", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--base: no {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module.RateController


def _ramp_figures(
    make: Any, limit: int, window: float, latency: Latency, seeds: Sequence[int]
) -> dict[str, float]:
    over: list[int] = []
    first: list[float] = []
    t95: list[float] = []
    duration = (3 if window >= 10 else 12) * window
    for seed in seeds:
        clock = ManualClock()
        rc = make(window, max_concurrency=CONCURRENCY, clock=clock)
        server = SlidingLogServer(limit, window)
        res = run(ControllerPolicy(rc), server, duration, latency=latency, seed=seed, clock=clock)
        over.append(res.overshoot())
        first.append(res.refused[0] if res.refused else math.inf)
        t95.append(res.time_to_fraction(0.95))
    return {
        "overshoot_median": statistics.median(over),
        "overshoot_max": max(over),
        "first_429_s": statistics.median(first),
        "to_95_s": statistics.median(t95),
    }


def ramp_rows(
    limits: Sequence[int], windows_s: Sequence[float], seeds: Sequence[int], base: str | None
) -> list[dict[str, Any]]:
    makers: list[tuple[str, Any]] = [("ours", RateController)]
    if base:
        makers.append(("base", _controller_class(base)))
    rows: list[dict[str, Any]] = []
    for window in windows_s:
        for limit in limits:
            for lat_name, latency in RAMP_LATENCIES.items():
                row: dict[str, Any] = {"window": window, "limit": limit, "latency": lat_name}
                for name, make in makers:
                    row[name] = _ramp_figures(make, limit, window, latency, seeds)
                rows.append(row)
    return rows


RAMP_COLUMNS = (
    ("overshoot_median", "overshoot median"),
    ("overshoot_max", "overshoot max"),
    ("first_429_s", "first 429 s"),
    ("to_95_s", "to 95 % s"),
)


def ramp_table(rows: Sequence[dict[str, Any]]) -> str:
    names = [n for n in ("ours", "base") if rows and n in rows[0]]
    head = "| W s | L | round trips | bound |"
    rule = "|---:|---:|---|---:|"
    for _, label in RAMP_COLUMNS:
        for name in names:
            head += f" {label} ({name}) |"
            rule += "---:|"
    lines = [head, rule]
    for r in rows:
        line = f"| {r['window']:g} | {r['limit']} | {r['latency']} | {max(2, r['limit'] // 20)} |"
        for key, _ in RAMP_COLUMNS:
            for name in names:
                value = r[name][key]
                text = f"{value:g}" if key.startswith("overshoot") else f"{value:.2f}"
                line += f" {'never' if math.isinf(value) else text} |"
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ cpu


def cpu_figures() -> dict[str, float]:
    out: dict[str, float] = {}
    # 1. The synchronous core: acquire + success, never waiting (limit far above the rate).
    clock = ManualClock()
    rc = RateController(30.0, max_concurrency=10**9, clock=clock, warm_start=_warm(10**7, 30.0))
    n = 200_000
    t0 = time.process_time()
    for i in range(n):
        clock.t = i * 1e-6
        ticket = rc.try_acquire()
        if ticket is not None:
            rc.on_success(ticket)
    out["core_us"] = (time.process_time() - t0) / n * 1e6

    # 2. The async facade, fast path (no waiting).
    async def fast() -> float:
        rc = RateController(30.0, max_concurrency=10**9, warm_start=_warm(10**8, 30.0))
        m = 100_000
        t0 = time.process_time()
        for _ in range(m):
            ticket = await rc.acquire()
            rc.on_success(ticket)
        return (time.process_time() - t0) / m * 1e6

    out["async_fast_us"] = asyncio.run(fast())

    # 3. The async facade paced at 2,000 requests/s by 16 workers: every acquire sleeps for its
    #    slot (pacing, FIFO hand-over, wake-ups). Includes asyncio's own sleep/wake cost.
    async def paced() -> float:
        rc = RateController(
            1.0, max_concurrency=16, warm_start=LimitEstimate(2000, 2000, 2000, 1.0, 0.0)
        )
        count = 0
        stop = time.monotonic() + 2.0

        async def worker() -> None:
            nonlocal count
            while time.monotonic() < stop:
                ticket = await rc.acquire()
                await asyncio.sleep(0)  # the "request"
                rc.on_success(ticket)
                count += 1

        t0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(16)))
        return (time.process_time() - t0) / max(1, count) * 1e6

    out["async_paced_us"] = asyncio.run(paced())
    return out


# ------------------------------------------------------------------------------------ real


def _sim_app(
    limit: int,
    window: float,
    schedule: Sequence[tuple[float, int]],
    latency_ms: float,
    catalog: Any,
    seed: int,
) -> Any:
    from spotify_ingest.sim.app import SimConfig, create_app

    config = SimConfig(
        artists=catalog.n_artists,
        seed=seed,
        limit=limit,
        window=window,
        latency_ms=latency_ms,
        limit_schedule=list(schedule),
        profile="extended",
    )
    return config, create_app(config, catalog=catalog)


async def _ground_truth(transport: Any, client_id: str) -> tuple[list[float], dict[str, Any]]:
    import httpx

    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        accepted = (await http.get("/__sim/accepted", params={"client_id": client_id})).json()
        stats = (await http.get("/__sim/stats")).json()
    return sorted(accepted["times"]), stats


async def _run_ours(
    limit: int,
    window: float,
    scenario: str,
    n_windows: int,
    latency_ms: float,
    catalog: Any,
    seed: int,
    concurrency: int,
) -> Row:
    import httpx

    from spotify_ingest.client import SpotifyClient
    from spotify_ingest.config import Credentials

    schedule = SCHEDULES[scenario](limit, window)
    config, app = _sim_app(limit, window, schedule, latency_ms, catalog, seed)
    transport = httpx.ASGITransport(app=app)
    warm = _warm(limit, window) if scenario != "cold" else None
    rc = RateController(window, warm_start=warm, max_concurrency=concurrency)
    creds = Credentials(client_id=config.client_id, client_secret=config.client_secret)
    ids = [catalog.artist_id(i) for i in range(min(2000, catalog.n_artists))]
    rng = random.Random(seed)
    async with SpotifyClient(
        creds,
        api_base="http://sim/v1",
        token_url="http://sim/api/token",
        controller=rc,
        transport=transport,
    ) as sp:
        await sp.tokens.get()  # the token request is not part of the timing
        loop = asyncio.get_running_loop()
        origin = loop.time()
        stop = origin + n_windows * window

        async def worker() -> None:
            while loop.time() < stop:
                await sp.artist(ids[rng.randrange(len(ids))])

        t_cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = time.process_time() - t_cpu
    times, stats = await _ground_truth(transport, config.client_id)
    end = stats["uptime_s"]
    lim = limit_fn(limit, schedule)
    change = schedule[0][0] if schedule else 0.0
    settle = None
    if scenario == "halve":
        # Controller times are loop times; the simulator's count from its origin.
        sim_origin = loop.time() - stats["uptime_s"]
        late = [
            t - sim_origin
            for t, k in rc.refusals
            if k not in ("probe", "echo") and t - sim_origin > change
        ]
        settle = (max(late) - change) / window if late else 0.0
    requests = stats["accepted"] + stats["rejected_429"]
    return Row(
        part="real",
        policy="ours",
        scenario=scenario,
        limit=limit,
        window=window,
        util=utilisation(times, 3 * window, end, lim, window),
        ratio=stats["rejected_429"] / max(1, requests),
        escalations=stats["escalations"],
        t90_windows=time_to_fraction(times, lim, window, change) / window,
        requests=requests,
        settle_windows=settle,
        util_after=utilisation(times, change + 3 * window, end, lim, window) if schedule else None,
        extra={
            "estimate": json.loads(rc.estimate().to_json()),
            "probes": rc.probes,
            "refusals": dict(Counter(k for _, k in rc.refusals)),
            "max_in_any_window": stats["max_accepted_in_any_window"],
            "process_cpu_share": round(cpu / max(1e-9, n_windows * window), 3),
        },
    )


async def _run_baseline(
    policy: str,
    limit: int,
    window: float,
    n_windows: int,
    latency_ms: float,
    catalog: Any,
    seed: int,
    concurrency: int,
) -> Row:
    """The seed's policy or aiolimiter's fixed rate, with a bare httpx loop."""
    import httpx
    from aiolimiter import AsyncLimiter

    config, app = _sim_app(limit, window, [], latency_ms, catalog, seed)
    transport = httpx.ASGITransport(app=app)
    ids = [catalog.artist_id(i) for i in range(min(2000, catalog.n_artists))]
    rng = random.Random(seed)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        token = (
            await http.post(
                "/api/token",
                data={"grant_type": "client_credentials"},
                auth=(config.client_id, config.client_secret),
            )
        ).json()["access_token"]
        headers = {"Authorization": "Bearer " + token}
        loop = asyncio.get_running_loop()
        stop = loop.time() + n_windows * window
        paused_until = 0.0
        sent = 0
        limiter = AsyncLimiter(60, window)

        async def worker() -> None:
            nonlocal paused_until, sent
            while loop.time() < stop:
                wait = paused_until - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if policy == "fixed":
                    await limiter.acquire()
                    if paused_until > loop.time():
                        continue
                sent += 1
                if policy == "seed" and sent % 1500 == 0:
                    paused_until = max(paused_until, loop.time() + window)  # "sleep 30 s"
                path = f"/v1/artists/{ids[rng.randrange(len(ids))]}"
                response = await http.get(path, headers=headers)
                if response.status_code == 429:
                    retry_after = float(response.headers.get("retry-after", "1"))
                    paused_until = max(paused_until, loop.time() + retry_after)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    times, stats = await _ground_truth(transport, config.client_id)
    lim = limit_fn(limit, [])
    requests = stats["accepted"] + stats["rejected_429"]
    return Row(
        part="real",
        policy=policy,
        scenario="cold",
        limit=limit,
        window=window,
        util=utilisation(times, 3 * window, stats["uptime_s"], lim, window),
        ratio=stats["rejected_429"] / max(1, requests),
        escalations=stats["escalations"],
        t90_windows=time_to_fraction(times, lim, window, 0.0) / window,
        requests=requests,
        extra={"max_in_any_window": stats["max_accepted_in_any_window"]},
    )


async def real_rows(
    limits: Sequence[int],
    window: float,
    n_windows: int,
    latency_ms: float,
    scenarios: Sequence[str],
    baselines: bool,
    max_rate: float,
    concurrency: int,
) -> list[Row]:
    from spotify_ingest.sim.catalog import Catalog

    catalog = Catalog(2000, 0)
    rows: list[Row] = []
    for limit in limits:
        jobs: list[Any] = []
        for i, scenario in enumerate(scenarios):
            jobs.append(
                _run_ours(limit, window, scenario, n_windows, latency_ms, catalog, i, concurrency)
            )
        if baselines:
            for policy in ("seed", "fixed"):
                jobs.append(
                    _run_baseline(
                        policy, limit, window, n_windows, latency_ms, catalog, 7, concurrency
                    )
                )
        # Heavy limits in smaller batches: one event loop carries every client and simulator.
        size = max(1, min(len(jobs), int(max_rate // (limit / window))))
        for k in range(0, len(jobs), size):
            started = time.monotonic()
            cpu = time.process_time()
            batch = await asyncio.gather(*jobs[k : k + size])
            cpu = time.process_time() - cpu
            # Client + controller + the in-process simulators, per request the servers saw.
            per_request = cpu / max(1, sum(r.requests for r in batch))
            for r in batch:
                r.extra["batch_cpu_ms_per_request"] = round(1000 * per_request, 3)
            rows.extend(batch)
            print(
                f"  L={limit}: {len(batch)} runs in {time.monotonic() - started:.0f} s, "
                f"{1000 * per_request:.2f} ms CPU per request (client + simulator)",
                file=sys.stderr,
            )
    return rows


# ------------------------------------------------------------------------------------ output


def table(rows: Sequence[Row]) -> str:
    head = (
        "| policy | scenario | L | W s | utilisation | 429 ratio | escalations | "
        "to 90 % (windows) | drop settled (windows) | new L from +3 W | requests |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        settle = "" if r.settle_windows is None else f"{r.settle_windows:.2f}"
        after = "" if r.util_after is None else f"{r.util_after:.3f}"
        t90 = "never" if math.isinf(r.t90_windows) else f"{r.t90_windows:.2f}"
        lines.append(
            f"| {r.policy} | {r.scenario} | {r.limit} | {r.window:g} | {r.util:.3f} | "
            f"{100 * r.ratio:.2f} % | {r.escalations} | {t90} | {settle} | {after} | "
            f"{r.requests} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--virtual", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--ramp", action="store_true")
    parser.add_argument("--base", help="--ramp: also the controller of this src directory")
    parser.add_argument("--seeds", type=int, default=5, help="--ramp: runs per case")
    parser.add_argument("--ramp-limits", default="40,200,600")
    parser.add_argument("--ramp-windows", default="1,3,30")
    parser.add_argument("--limits", default="10,40,150,600")
    parser.add_argument("--window", type=float, default=3.0, help="real seconds (--real)")
    parser.add_argument("--virtual-windows", default="2,3,30")
    parser.add_argument("--windows", type=int, default=40, help="run length in windows")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="simulator's mean latency")
    parser.add_argument("--scenarios", default="cold,warm,halve,double")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--max-rate", type=float, default=450.0, help="requests/s of the runs done at once"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="workers per real run")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    if not (args.virtual or args.cpu or args.real or args.ramp):
        args.virtual = args.cpu = True
    limits = [int(x) for x in args.limits.split(",")]
    out: dict[str, Any] = {}
    if args.virtual:
        started = time.monotonic()
        rows = virtual_rows(
            limits, [float(w) for w in args.virtual_windows.split(",")], args.windows
        )
        print(f"## virtual time ({time.monotonic() - started:.1f} s)\n")
        print(table(rows) + "\n")
        out["virtual"] = [asdict(r) for r in rows]
    if args.ramp:
        started = time.monotonic()
        ramp = ramp_rows(
            [int(x) for x in args.ramp_limits.split(",")],
            [float(w) for w in args.ramp_windows.split(",")],
            range(1, args.seeds + 1),
            args.base,
        )
        print(f"## cold start, {args.seeds} seeds ({time.monotonic() - started:.1f} s)\n")
        print(ramp_table(ramp) + "\n")
        out["ramp"] = ramp
    if args.cpu:
        figures = cpu_figures()
        print("## controller CPU per request\n")
        for key, value in figures.items():
            print(f"- {key}: {value:.2f} us")
        print()
        out["cpu"] = figures
    if args.real:
        started = time.monotonic()
        rows = asyncio.run(
            real_rows(
                limits,
                args.window,
                args.windows,
                args.latency_ms,
                args.scenarios.split(","),
                not args.no_baselines,
                args.max_rate,
                args.concurrency,
            )
        )
        print(f"## real time, W = {args.window:g} s ({time.monotonic() - started:.0f} s)\n")
        print(table(rows) + "\n")
        for r in rows:
            if r.policy == "ours":
                print(f"- L={r.limit} {r.scenario}: {json.dumps(r.extra)}")
        out["real"] = [asdict(r) for r in rows]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
