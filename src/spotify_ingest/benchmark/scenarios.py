"""Scenarios of the side-by-side benchmark, and how their time is compressed.

Time compression
================
Spotify counts calls in a rolling window of 30 seconds. Running whole crawls at that pace would
take hours per contender, so every run is *time-compressed* by a factor ``k = 30 / W``, with ``W``
the real length of one window (2 s by default, so ``k = 15``). The compression is done by the
simulator's own ``time_scale`` knob, not by shrinking the window:

* the simulator keeps a 30-second window, Retry-After in whole seconds, penalties that double up
  to a day, tokens that live 3,600 s, a mean latency of 100 ms... all in *simulated* seconds, of
  which ``k`` pass per real second;
* every contender runs on the same scaled clock: each duration in its policy is divided by ``k``
  in real time. The seed's "sleep 30 s after every 1,500 requests" becomes "sleep 30 simulated
  seconds (= W real seconds) after every 1,500 requests": **durations scale, request counts do
  not**. The same goes for Retry-After sleeps (seed, spotipy/urllib3), urllib3's backoff, token
  expiry (spotipy, ours), botocore's CUBIC curve and token bucket (they read a scaled clock), the
  fixed rate (60 per window = 60 per W real seconds) and our RateController (window = 30 on a
  ``ScaledClock``).

Why not shrink the window to 2 s and leave the simulator at real time: Retry-After is sent in whole
seconds (at least 1), so with a 2-second window a single 429 would cost half a window instead of a
thirtieth, and every other constant (latency, penalty growth, token life) would be out of
proportion. With ``time_scale`` every figure keeps its Spotify meaning, and limits are given in
requests per 30-second window exactly as users report them.

Limits and sizes
================
Users report 429s after 100-200 requests per 30 s in Development Mode. The scenarios use
``L = 100`` per window as the normal case and ``L = 20`` as the low one (the 1:5 ratio of "60 per
30 s" to "300 per 30 s"). One window is W = 2 real seconds, so L = 100 means 50 requests per real
second: on the 2 shared vCPUs this benchmark was built for, the crawler (~5 ms CPU per request)
and the simulator (~2 ms) then need well under one core, so every contender is limited by the
hidden limit and not by CPU (a CPU-bound run would show a low utilisation that says nothing about
its rate control). The catalogs are sized so that the 30-minute full run lets spotify-ingest reach
99% coverage in the main scenarios: 20,000 artists (5,000 with ``--quick``), and 100,000 (20,000
with ``--quick``) in ``large``.

Scenarios
=========
``extended``   Extended Quota profile (every endpoint, batch lookups, page limits 50), L = 100;
               budget x 1.4 so that the sequential contenders get a longer look.
``dev-2026``   Development Mode after February 2026 (search limit 10, no related artists, no
               featured playlists, no batch lookups), L = 100.
``low-limit``  dev-2026 with L = 20 (budget x 0.6: nobody gets far; rates are what it shows).
``halving``    dev-2026, L = 100 halving to 50 at 30% of the run's budget.
``faults``     dev-2026, L = 100, 2% of accepted requests answered 500/502/503.
``large``      dev-2026, L = 100, on the large catalog (100,000 artists).

All share the catalog seed 0 and a mean latency of 100 simulated ms (with the simulator's heavy
tail: 1% of answers 10x slower), so that a sequential client is bounded by round trips as it is
against the real API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # imported when needed: the CLI imports this module at start-up
    from spotify_ingest.sim.app import SimConfig

__all__ = [
    "CONTENDERS",
    "SCENARIOS",
    "SPOTIFY_WINDOW",
    "BenchScale",
    "Scenario",
    "scale_for",
]

SPOTIFY_WINDOW: Final = 30.0  # seconds, simulated

#: Contender names, in run order (see ``runner.py``).
CONTENDERS: Final = ("seed", "spotipy", "fixed-rate", "botocore-adaptive", "spotify-ingest")


@dataclass(frozen=True)
class BenchScale:
    """Sizes and time compression shared by every run of one benchmark invocation."""

    artists: int = 20_000
    large_artists: int = 100_000  # the ``large`` scenario's catalog
    window_real: float = 2.0  # real seconds per 30-second window
    budget: float = 75.0  # real seconds per run, at most (times the scenario's factor)
    target_coverage: float = 0.99  # a run stops once it has found this share of the catalog
    seed: int = 0
    latency_ms: float = 100.0  # simulated milliseconds (mean)
    concurrency: int = 8  # workers of the async contenders (spotify-ingest's default)
    hard_kill_grace: float = 30.0  # real seconds after the budget before a run is killed

    @property
    def time_scale(self) -> float:
        """Simulated seconds per real second."""
        return SPOTIFY_WINDOW / self.window_real

    def to_sim(self, real_seconds: float) -> float:
        return real_seconds * self.time_scale

    def windows(self, real_seconds: float) -> float:
        return real_seconds / self.window_real


FULL: Final = BenchScale()
QUICK: Final = BenchScale(artists=5_000, large_artists=20_000, budget=9.0)


def scale_for(quick: bool) -> BenchScale:
    return QUICK if quick else FULL


@dataclass(frozen=True)
class Scenario:
    """One simulator setting; every contender gets a fresh simulator built from it."""

    name: str
    description: str
    profile: str
    limit: int  # hidden limit per 30-second window
    halve_at: float | None = None  # share of the budget after which the limit halves
    fail_rate: float = 0.0
    large: bool = False  # the large catalog
    budget_factor: float = 1.0

    def artists(self, scale: BenchScale) -> int:
        return scale.large_artists if self.large else scale.artists

    def budget(self, scale: BenchScale) -> float:
        """Real seconds one contender may run in this scenario."""
        return scale.budget * self.budget_factor

    def sim_config(self, scale: BenchScale) -> SimConfig:
        from spotify_ingest.sim.app import SimConfig

        schedule = ""
        if self.halve_at is not None:
            schedule = f"{scale.to_sim(self.halve_at * self.budget(scale)):.3f}:half"
        return SimConfig(
            artists=self.artists(scale),
            seed=scale.seed,
            profile=self.profile,
            limit=self.limit,
            window=SPOTIFY_WINDOW,
            latency_ms=scale.latency_ms,
            fail_rate=self.fail_rate,
            limit_schedule=schedule,
            time_scale=scale.time_scale,
        )


SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario(
            "extended", "Extended Quota app, L = 100 per 30 s", "extended", 100, budget_factor=1.4
        ),
        Scenario("dev-2026", "Development Mode app (2026), L = 100 per 30 s", "dev-2026", 100),
        Scenario(
            "low-limit",
            "Development Mode app (2026), L = 20 per 30 s",
            "dev-2026",
            20,
            budget_factor=0.6,
        ),
        Scenario(
            "halving",
            "Development Mode app (2026), L = 100 halving to 50 at 30% of the budget",
            "dev-2026",
            100,
            halve_at=0.3,
        ),
        Scenario(
            "faults",
            "Development Mode app (2026), L = 100, 2% of requests answered 5xx",
            "dev-2026",
            100,
            fail_rate=0.02,
        ),
        Scenario(
            "large",
            "Development Mode app (2026), L = 100, the large catalog",
            "dev-2026",
            100,
            large=True,
        ),
    )
}
