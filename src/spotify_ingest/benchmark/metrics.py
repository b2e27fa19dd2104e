"""Figures of one run, from the simulator's ground truth and the contender's own record.

Time axes. The contender's samples and its start/end are on ``time.monotonic()`` (real seconds);
the simulator's accepted-request times are simulated seconds since its origin. With the origin's
monotonic time ``o`` and the scale ``k``: ``sim = (mono - o) * k``. Durations are reported in
windows (``real / W``) and in simulated seconds (``real * k``), the run's start ``t0`` being when
the contender began crawling (after its imports, right after the simulator started).

Definitions:

* coverage: artists held at the end that are catalog ids, over the catalog's size
  (``/__sim/catalog``); full: the same for artists held with full details;
* time to p% coverage: the first sample at which the contender held ``p% x N`` artists (samples
  count what the contender holds; the catalog check at the end shows whether any were foreign);
* utilisation: requests the simulator accepted between ``t0`` and the end, over what the hidden
  limit allowed in that time: ``integral of L(t) / W dt`` (``L(t)`` from the simulator's own
  schedule). Accepted includes every request that counted against the window (5xx included), so
  1.0 means "as fast as the hidden limit allows" (a run may pass 1.0 by up to one window's worth:
  the first window starts empty). A run shorter than a window has none (n/a).
  ``utilisation_after_2_windows`` is the same without the first two windows (the warm-up of every
  adaptive contender), in the JSON only;
* 429 ratio: 429 answers over all requests (``/__sim/stats``); escalations: penalties doubled by
  a request during a Retry-After; requests per artist: requests over artists covered;
* peak RSS: the contender process's ``VmHWM`` (its own peak since ``exec``); CPU per 1,000
  requests: the CPU seconds the process spent from ``t0`` to its end (imports excluded), over its
  API requests (token requests are not counted as requests anywhere).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COVERAGE_MARKS",
    "RunTimes",
    "capacity",
    "coverage_times",
    "rate_series",
    "summarise_numbers",
    "utilisation",
]

COVERAGE_MARKS = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class RunTimes:
    """Maps the contender's monotonic times onto the simulator's axis."""

    origin_mono: float  # real monotonic time of the simulator's origin
    time_scale: float
    window_sim: float
    t0: float  # contender start (monotonic)

    @property
    def window_real(self) -> float:
        return self.window_sim / self.time_scale

    def sim(self, mono: float) -> float:
        return (mono - self.origin_mono) * self.time_scale

    def windows_since_start(self, mono: float) -> float:
        return (mono - self.t0) / self.window_real


def coverage_times(
    samples: Sequence[tuple[float, int, int]], n: int, t0: float, marks: Sequence[float]
) -> dict[str, float | None]:
    """Real seconds from ``t0`` to the first sample holding ``mark * n`` artists (None: never)."""
    out: dict[str, float | None] = {}
    for mark in marks:
        need = math.ceil(mark * n - 1e-9)
        hit = next((t for t, found, _ in samples if found >= need), None)
        out[f"{round(mark * 100)}"] = None if hit is None else max(0.0, hit - t0)
    return out


def capacity(
    limit_at: Callable[[float], int], start: float, end: float, window: float, step: float
) -> float:
    """``integral of L(t) / W dt`` over [start, end] (simulated seconds), by steps of ``step``."""
    if end <= start:
        return 0.0
    total = 0.0
    t = start
    while t < end:
        dt = min(step, end - t)
        total += limit_at(t + dt / 2) * dt / window
        t += dt
    return total


def utilisation(
    accepted_times: Sequence[float],
    limit_at: Callable[[float], int],
    start: float,
    end: float,
    window: float,
) -> tuple[float | None, int, float]:
    """(accepted / capacity or None for runs under a window, accepted in [start, end], capacity)."""
    lo = bisect.bisect_left(accepted_times, start)
    hi = bisect.bisect_right(accepted_times, end)
    accepted = hi - lo
    cap = capacity(limit_at, start, end, window, window / 60)
    if end - start < window or cap <= 0:
        return None, accepted, cap
    return accepted / cap, accepted, cap


def rate_series(
    accepted_times: Sequence[float],
    limit_at: Callable[[float], int],
    start: float,
    end: float,
    window: float,
    points_per_window: int = 8,
) -> dict[str, list[float]]:
    """Accepted requests in the window ending at each point, and the hidden limit there.

    Points every ``window / points_per_window`` from ``start`` to ``end`` (the first window's
    points look back over less than a window); times in simulated seconds since ``start``.
    """
    step = window / points_per_window
    ts: list[float] = []
    counts: list[float] = []
    limits: list[float] = []
    t = start + step
    while t <= end + 1e-9:
        hi = bisect.bisect_right(accepted_times, t)
        lo = bisect.bisect_right(accepted_times, t - window)
        ts.append(round(t - start, 3))
        counts.append(hi - lo)
        limits.append(limit_at(t))
        t += step
    return {"t_sim": ts, "accepted_in_window": counts, "limit": limits}


def summarise_numbers(values: dict[str, Any]) -> dict[str, Any]:
    """Round floats for the JSON output."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        out[k] = round(v, 5) if isinstance(v, float) else v
    return out
