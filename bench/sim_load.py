"""Load generator for the simulator's HTTP side: how many requests per second it serves.

The simulator runs as ``python -m spotify_ingest.sim.cli serve --no-rate-limit`` in a child
process (one uvicorn process, as users run it). The load comes from ``--procs`` other processes,
each an asyncio loop (uvloop when installed) with ``--connections`` keep-alive HTTP/1.1
connections over raw asyncio streams: a request is a pre-built byte string and a response is read
by its Content-Length, so the client costs a few microseconds per request and is not the
bottleneck. Each connection sends its next request when the previous answer is complete (no
pipelining). The scenarios, each for ``--seconds``:

* ``artist``: ``GET /v1/artists/{id}`` over the catalog's artist ids (random order);
* ``search``: ``GET /v1/search?q=<two letters>&type=artist,album,track&limit=10`` (dev-2026 max);
* ``search-cold``: the same with three-letter prefixes at offsets 0-90, in random order: mostly
  distinct requests, as a crawler's query tree sends them (little help from caches);
* ``mixed``: alternating artist and search requests.

Reports requests/s and latency percentiles (ms) per scenario, the status codes seen, and the
server's CPU time per request (from ``/proc``): its capacity on one free core, a figure that holds
even when other processes share the machine.

Run: ``.venv/bin/python bench/sim_load.py --seconds 8 --procs 1 --connections 32``
(``--json`` for machine-readable output; ``--url`` to load an already running simulator).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import string
import subprocess
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx

SCENARIOS = ("artist", "search", "search-cold", "mixed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_simulator(
    port: int, artists: int, profile: str, limit: int | None
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "spotify_ingest.sim.cli", "serve", "--port", str(port),
        "--artists", str(artists), "--profile", profile,
    ]  # fmt: skip
    cmd += ["--limit", str(limit)] if limit else ["--no-rate-limit"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"simulator exited early: {err.strip()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/__sim/stats", timeout=1.0).raise_for_status()
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("simulator did not start within 120 s")


def fetch_setup(base: str, n_ids: int) -> tuple[str, list[str]]:
    token = httpx.post(
        f"{base}/api/token",
        data={"grant_type": "client_credentials"},
        auth=("demo-client-id", "demo-client-secret"),
    ).json()["access_token"]
    ids = httpx.get(f"{base}/__sim/catalog", params={"format": "json", "limit": n_ids}).json()
    return token, list(ids["items"])


def build_requests(scenario: str, host: str, token: str, ids: list[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    head = f"Host: {host}\r\nAuthorization: Bearer {token}\r\nAccept: */*\r\n\r\n"
    artist = [f"GET /v1/artists/{sid} HTTP/1.1\r\n{head}".encode() for sid in ids]
    letters = string.ascii_lowercase
    search = [
        f"GET /v1/search?q={a}{b}&type=artist,album,track&limit=10 HTTP/1.1\r\n{head}".encode()
        for a in letters
        for b in letters
    ]
    rng.shuffle(artist)
    rng.shuffle(search)
    if scenario == "artist":
        return artist
    if scenario == "search":
        return search
    if scenario == "search-cold":
        cold = [
            f"GET /v1/search?q={a}{b}{c}&type=artist,album,track&limit=10"
            f"&offset={10 * rng.randrange(10)} HTTP/1.1\r\n{head}".encode()
            for a in letters
            for b in letters
            for c in letters
        ]
        rng.shuffle(cold)
        return cold
    mixed: list[bytes] = []
    for i in range(max(len(artist), len(search))):
        mixed.append(artist[i % len(artist)])
        mixed.append(search[i % len(search)])
    return mixed


async def _connection(
    host: str, port: int, requests: list[bytes], start: int, stop_at: float,
    latencies: list[float], statuses: Counter[int],
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    i = start
    n = len(requests)
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            t0 = clock()
            writer.write(requests[i % n])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            latencies.append(clock() - t0)
            statuses[status] += 1
    finally:
        writer.close()


async def _drive(host: str, port: int, requests: list[bytes], connections: int, seconds: float,
                 offset: int) -> dict[str, Any]:  # fmt: skip
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    step = max(1, len(requests) // max(1, connections))
    await asyncio.gather(
        *(
            _connection(host, port, requests, offset + c * step, stop_at, latencies, statuses)
            for c in range(connections)
        )
    )
    elapsed = time.perf_counter() - t0
    return {"latencies": latencies, "statuses": dict(statuses), "elapsed": elapsed,
            "cpu": time.process_time()}  # fmt: skip


def _worker(args: tuple[str, int, list[bytes], int, float, int], out: Any) -> None:
    host, port, requests, connections, seconds, offset = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cpu0 = time.process_time()
    result = asyncio.run(_drive(host, port, requests, connections, seconds, offset))
    result["cpu"] -= cpu0
    out.put(result)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux ``/proc``), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def run_scenario(
    scenario: str, host: str, port: int, token: str, ids: list[str], *, procs: int,
    connections: int, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    requests = build_requests(scenario, f"{host}:{port}", token, ids, seed=1)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    workers = [
        ctx.Process(
            target=_worker,
            args=((host, port, requests, connections, seconds, w * 7919), queue),
        )
        for w in range(procs)
    ]
    for w in workers:
        w.start()
    results = [queue.get(timeout=seconds + 60) for _ in workers]
    for w in workers:
        w.join()
    lat = sorted(x for r in results for x in r["latencies"])
    statuses: Counter[int] = Counter()
    for r in results:
        statuses.update({int(k): v for k, v in r["statuses"].items()})
    elapsed = max(r["elapsed"] for r in results)
    return {
        "scenario": scenario,
        "requests": len(lat),
        "seconds": round(elapsed, 2),
        "req_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p90_ms": round(percentile(lat, 90) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "statuses": dict(sorted(statuses.items())),
        "load_cpu_s": round(sum(r["cpu"] for r in results), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario (keep <= 20)")
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections/proc")
    parser.add_argument("--artists", type=int, default=20000)
    parser.add_argument("--profile", default="dev-2026")
    parser.add_argument("--ids", type=int, default=5000, help="distinct artist ids requested")
    parser.add_argument(
        "--limit",
        type=int,
        help="keep the rate limiter on with this (huge) limit, to measure its cost",
    )
    parser.add_argument("--url", help="an already running simulator (rate limit off!)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.seconds > 60:
        parser.error("--seconds must be <= 60")

    proc = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        port = free_port()
        t0 = time.perf_counter()
        proc = start_simulator(port, args.artists, args.profile, args.limit)
        if not args.json:
            limiter = f"limit {args.limit}" if args.limit else "rate limit off"
            print(f"simulator up in {time.perf_counter() - t0:.1f} s on port {port} "
                  f"({args.artists} artists, {args.profile}, {limiter})")  # fmt: skip
        base = f"http://127.0.0.1:{port}"
    parts = urlsplit(base)
    host, port_ = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        token, ids = fetch_setup(base, args.ids)
        scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
        # Warm-up: first touches of objects fill the simulator's caches.
        run_scenario("mixed", host, port_, token, ids, procs=1, connections=8, seconds=1.0)
        results = []
        for scenario in scenarios:
            cpu0 = process_cpu_seconds(proc.pid) if proc is not None else None
            r = run_scenario(scenario, host, port_, token, ids, procs=args.procs,
                             connections=args.connections, seconds=args.seconds)  # fmt: skip
            cpu1 = process_cpu_seconds(proc.pid) if proc is not None else None
            if cpu0 is not None and cpu1 is not None and r["requests"]:
                # Server CPU per request: its capacity on one free core, whatever else runs.
                per_request = (cpu1 - cpu0) / r["requests"]
                r["server_cpu_us_per_req"] = round(per_request * 1e6, 1)
                r["server_capacity_req_per_cpu_s"] = round(1 / per_request) if per_request else None
            results.append(r)
            if not args.json:
                capacity = r.get("server_capacity_req_per_cpu_s")
                print(
                    f"{scenario:>11}: {r['req_per_s']:>8.1f} req/s  p50 {r['p50_ms']:.2f} ms  "
                    f"p90 {r['p90_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']} ms  "
                    f"n={r['requests']}  statuses {r['statuses']}  "
                    f"load-gen cpu {r['load_cpu_s']} s"
                    + (
                        f"  server {r['server_cpu_us_per_req']} us cpu/req "
                        f"(~{capacity} req/s per core)"
                        if capacity
                        else ""
                    )
                )
        if args.json:
            print(
                json.dumps(
                    {
                        "cpus": os.cpu_count(),
                        "procs": args.procs,
                        "connections": args.connections,
                        "results": results,
                    },
                    indent=2,
                )
            )
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
