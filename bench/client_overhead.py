"""CPU cost and throughput of the Spotify client against the simulator in another process.

The simulator runs under uvicorn in a child process (rate limit off), so ``time.process_time()``
of this process counts the client side only: event loop, HTTP library, our client, the rate
controller and model parsing. Scenarios, each over the same artist ids, ``--concurrency`` tasks:

* ``httpx-raw``: ``httpx.AsyncClient.get`` with a bearer token, body read, not parsed;
* ``httpx-over-aiohttp-raw``: the same through the client's transport (httpx's interface on
  aiohttp's wire, :mod:`spotify_ingest.transport`; the baseline of the "over raw" column, which
  is then the cost of our client code and parsing);
* ``aiohttp-raw``: the same with aiohttp alone;
* ``client-artist``: ``SpotifyClient.artist(id)`` (no controller): error mapping, stats, parsing;
* ``client+rc-artist``: the same with a ``RateController`` (if ``ratecontrol`` is importable);
* ``client-search``: ``SpotifyClient.search(q, types=artist,album,track, limit=10)``: 30 objects.

Run: ``.venv/bin/python bench/client_overhead.py --requests 4000 --concurrency 16``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from spotify_ingest.client import SpotifyClient
from spotify_ingest.config import Credentials
from spotify_ingest.transport import AiohttpTransport

_SERVER = textwrap.dedent(
    """
    import sys
    from spotify_ingest.sim.app import SimConfig
    from spotify_ingest.sim.server import serve
    serve(SimConfig(artists=int(sys.argv[2]), rate_limit=False, profile="extended"),
          "127.0.0.1", int(sys.argv[1]))
    """
)


@dataclass
class Result:
    name: str
    requests: int
    wall_s: float
    cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000.0 * self.cpu_s / self.requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator(artists: int) -> Iterator[str]:
    """Start the simulator in a child process; yield its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port), str(artists)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"simulator did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


async def _run(name: str, n: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> Result:
    """Run ``one(i)`` for i in range(n) on ``concurrency`` workers; measure wall and CPU time."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    # warm-up (connections, caches), not measured
    await asyncio.gather(*(one(i) for i in range(min(concurrency * 4, n))))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, n, time.perf_counter() - wall0, time.process_time() - cpu0)


async def bench(base: str, n: int, concurrency: int) -> list[Result]:
    creds = Credentials(client_id="demo-client-id", client_secret="demo-client-secret")  # type: ignore[arg-type]
    api = base + "/v1"
    async with httpx.AsyncClient() as http:
        ids = (
            await http.get(base + "/__sim/catalog", params={"format": "json", "limit": 2000})
        ).json()["items"]
        token = (
            await http.post(
                base + "/api/token",
                data={"grant_type": "client_credentials"},
                auth=(creds.client_id, creds.secret_value()),
            )
        ).json()["access_token"]
    results: list[Result] = []
    headers = {"Authorization": f"Bearer {token}"}

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    for name, transport in (
        ("httpx-raw", httpx.AsyncHTTPTransport(limits=limits)),
        ("httpx-over-aiohttp-raw", AiohttpTransport(64)),
    ):
        async with httpx.AsyncClient(transport=transport) as http:

            async def raw(i: int, http: httpx.AsyncClient = http) -> None:
                r = await http.get(f"{api}/artists/{ids[i % len(ids)]}", headers=headers)
                assert r.status_code == 200

            results.append(await _run(name, n, concurrency, raw))

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def raw_aiohttp(i: int) -> None:
            async with session.get(f"{api}/artists/{ids[i % len(ids)]}", headers=headers) as r:
                await r.read()
                assert r.status == 200

        results.append(await _run("aiohttp-raw", n, concurrency, raw_aiohttp))

    async with SpotifyClient(creds, api_base=api, token_url=base + "/api/token") as sp:

        async def artist(i: int) -> None:
            await sp.artist(ids[i % len(ids)])

        results.append(await _run("client-artist", n, concurrency, artist))

        queries = [f"{a}{b}" for a in "abcdefghij" for b in "aeiou"]

        async def search(i: int) -> None:
            await sp.search(queries[i % len(queries)], types=("artist", "album", "track"))

        results.append(await _run("client-search", n, concurrency, search))

    try:
        from spotify_ingest.ratecontrol import RateController
    except ImportError:
        print("ratecontrol not importable: skipping client+rc-artist", file=sys.stderr)
    else:
        rc = _unbounded_controller(RateController, concurrency)
        async with SpotifyClient(
            creds, api_base=api, token_url=base + "/api/token", controller=rc
        ) as sp:

            async def artist_rc(i: int) -> None:
                await sp.artist(ids[i % len(ids)])

            results.append(await _run("client+rc-artist", n, concurrency, artist_rc))
    return results


def _unbounded_controller(cls: Any, concurrency: int) -> Any:
    """A controller whose pacing does not bind: a warm start far above what we will send."""
    try:
        from spotify_ingest.ratecontrol import LimitEstimate

        warm = LimitEstimate(
            limit=10**7, lower=10**7, upper=10**7, window=30.0, observed_at=time.time()
        )
        return cls(30.0, warm_start=warm, max_concurrency=concurrency)
    except Exception as exc:  # the controller's API may differ: fall back to its defaults
        print(f"controller warm start failed ({exc!r}); using defaults", file=sys.stderr)
        return cls(30.0, max_concurrency=concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--artists", type=int, default=2000)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    with simulator(args.artists) as base:
        results = asyncio.run(bench(base, args.requests, args.concurrency))
    raw = next(r for r in results if r.name == "httpx-over-aiohttp-raw")
    print(f"{'scenario':<18} {'requests':>8} {'req/s':>8} {'CPU ms/req':>11} {'over raw':>9}")
    print(f"(concurrency {args.concurrency}; 'over raw': CPU ms/req minus httpx-over-aiohttp-raw)")
    for r in results:
        over = r.cpu_ms_per_request - raw.cpu_ms_per_request
        print(
            f"{r.name:<18} {r.requests:>8} {r.rps:>8.0f} "
            f"{r.cpu_ms_per_request:>11.3f} {over:>+9.3f}"
        )
    print(f"(python {sys.version.split()[0]}, httpx {httpx.__version__}, {os.cpu_count()} CPUs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [r.__dict__ | {"rps": r.rps, "cpu_ms": r.cpu_ms_per_request} for r in results],
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
