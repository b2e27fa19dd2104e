"""What a contender process is told (``ContenderSpec``) and what it leaves behind (``Recorder``).

A contender writes, in its run folder:

* ``samples.jsonl``: one ``[t, found, full]`` line per sample, ``t`` on ``time.monotonic()``
  (system-wide on Linux, so the harness maps it onto the simulator's clock), ``found`` the artists
  it holds, ``full`` those with full details; written as it goes, so a killed run keeps them;
* ``found.tsv``: ``id<TAB>1|0`` per artist held at the end (1: full details);
* ``result.json``: start and end times, CPU seconds spent crawling, peak RSS, why it stopped, and
  anything contender-specific (client counters, the learned limit...).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ContenderSpec", "Recorder", "peak_rss_mb"]


@dataclass(frozen=True)
class ContenderSpec:
    """Everything a contender process needs to run once against one simulator."""

    contender: str
    api_base: str
    token_url: str
    client_id: str
    client_secret: str
    time_scale: float  # simulated seconds per real second
    window_sim: float  # the API's window in simulated seconds (30)
    budget: float  # real seconds
    target_artists: int  # stop once this many artists are held
    out_dir: str
    concurrency: int = 8
    fixed_rate: int = 60  # requests per window of the fixed-rate contender

    @property
    def window_real(self) -> float:
        return self.window_sim / self.time_scale

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ContenderSpec:
        data = json.loads(text)
        return cls(**data)


def peak_rss_mb() -> float | None:
    """This process's peak resident set since its ``exec`` (``VmHWM``), in MB.

    Not ``getrusage``: Linux keeps ``ru_maxrss`` across ``execve``, so a child forked from a big
    harness would report the harness's size.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class Recorder:
    """Coverage samples during the run, artists and figures at its end (thread-safe finish)."""

    def __init__(self, out_dir: Path, interval: float) -> None:
        self.out_dir = out_dir
        self.interval = interval
        out_dir.mkdir(parents=True, exist_ok=True)
        self._samples = (out_dir / "samples.jsonl").open("w")
        self._last = -1e18
        self._last_counts = (-1, -1)
        self._lock = threading.Lock()
        self._finished = False
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()

    def start(self) -> None:
        """Mark the start of the crawl proper (after imports and set-up)."""
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()
        self.sample(0, 0, force=True)

    def sample(self, found: int, full: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (now - self._last < self.interval or (found, full) == self._last_counts):
            return
        with self._lock:
            if self._finished:
                return
            self._last = now
            self._last_counts = (found, full)
            self._samples.write(f"[{now:.6f},{found},{full}]\n")
            self._samples.flush()

    @property
    def finished(self) -> bool:
        return self._finished

    def finish(
        self,
        stop_reason: str,
        artists: Iterable[tuple[str, bool]],
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write the artists and ``result.json`` once; False if already finished (by another
        thread)."""
        t_end = time.monotonic()
        cpu = time.process_time() - self.cpu0
        with self._lock:
            if self._finished:
                return False
            self._finished = True
            found = full = 0
            with (self.out_dir / "found.tsv").open("w") as fh:
                for sid, is_full in artists:
                    found += 1
                    full += int(is_full)
                    fh.write(f"{sid}\t{int(is_full)}\n")
            self._samples.write(f"[{t_end:.6f},{found},{full}]\n")
            self._samples.close()
            result = {
                "peak_rss_mb": peak_rss_mb(),
                "t0": self.t0,
                "t_end": t_end,
                "cpu_seconds": cpu,
                "stop_reason": stop_reason,
                "found": found,
                "full": full,
                **(extra or {}),
            }
            tmp = self.out_dir / "result.json.tmp"
            tmp.write_text(json.dumps(result, default=str))
            tmp.replace(self.out_dir / "result.json")
            return True
