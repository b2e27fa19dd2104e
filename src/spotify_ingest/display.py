"""What a running crawl shows: a live Rich panel on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .crawler import Progress

__all__ = ["CrawlDisplay", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class CrawlDisplay:
    """A progress sink for :class:`~spotify_ingest.crawler.Crawler`.

    ``live`` (default: stderr is a terminal) redraws a panel four times a second; otherwise a log
    line goes to stderr every ``log_every`` seconds, which suits files and CI logs.
    """

    def __init__(
        self,
        *,
        target_artists: int | None = None,
        target_requests: int | None = None,
        live: bool | None = None,
        log_every: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.live_mode = self.stream.isatty() if live is None else live
        self.console = Console(file=self.stream)
        self.target_artists = target_artists
        self.target_requests = target_requests
        self.log_every = log_every
        self._last_log = 0.0
        self._live: Live | None = None
        self._countdown: str | None = None
        self.last: Progress | None = None

    def __enter__(self) -> CrawlDisplay:
        if self.live_mode:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            if self.last is not None:
                self._live.update(self._render(self.last))
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def countdown(self, seconds_left: float, reason: str | None) -> None:
        """Shown while the client waits out a long Retry-After or a quota (``--wait``)."""
        why = "quota spent" if reason == "QUOTA_EXCEEDED" else "rate limited"
        self._countdown = (
            f"{why}: waiting {format_duration(seconds_left)} (Ctrl-C stops, state is saved)"
        )
        if self._live is None and time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            print(self._countdown, file=self.stream, flush=True)
        if seconds_left <= 0:
            self._countdown = None

    def __call__(self, progress: Progress) -> None:
        self.last = progress
        if self._live is not None:
            self._live.update(self._render(progress))
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every or progress.stop_reason is not None:
            self._last_log = now
            print(self.line(progress), file=self.stream, flush=True)

    def _eta(self, p: Progress) -> str:
        if self.target_artists and p.artists and p.elapsed > 0:
            left = self.target_artists - p.artists
            rate = p.artists / p.elapsed
            return format_duration(left / rate) if left > 0 and rate > 0 else "0m00s"
        if self.target_requests and p.requests and p.elapsed > 0:
            left = self.target_requests - p.requests
            return format_duration(left / (p.requests / p.elapsed)) if left > 0 else "0m00s"
        return "-"

    def line(self, p: Progress) -> str:
        est = f"{p.limit_estimate:.0f}" if p.limit_estimate else "?"
        limit_rate = p.limit_estimate / p.window if p.limit_estimate else 0.0
        paused = f" paused {p.paused_for:.0f}s" if p.paused_for > 0.5 else ""
        return (
            f"[{format_duration(p.elapsed)}] artists {p.artists} (full {p.full}) "
            f"requests {p.requests} rate {p.rate:.1f}/s of ~{limit_rate:.1f}/s "
            f"(limit est. {est}/{p.window:g}s) 429s {p.rate_limited}{paused} eta {self._eta(p)}"
            f"{_quota_suffix(p)}"
        )

    def _render(self, p: Progress) -> Group:
        summary = Table.grid(padding=(0, 2))
        summary.add_column(style="bold")
        summary.add_column()
        est = f"{p.limit_estimate:.0f} per {p.window:g}s" if p.limit_estimate else "learning"
        limit_rate = p.limit_estimate / p.window if p.limit_estimate else 0.0
        summary.add_row("elapsed", format_duration(p.elapsed))
        summary.add_row(
            "artists", f"{p.artists:,}  (full {p.full:,}, simplified {p.artists - p.full:,})"
        )
        summary.add_row("requests", f"{p.requests:,}   429s {p.rate_limited}")
        summary.add_row("rate", f"{p.rate:.1f}/s  of estimated limit {limit_rate:.1f}/s ({est})")
        summary.add_row("eta", self._eta(p))
        if p.paused_for > 0.5:
            summary.add_row("paused", f"{p.paused_for:.0f}s (Retry-After)")
        if p.quota:
            summary.add_row("quota", p.quota)
        yields = Table(title="yield per request (artists + details)", title_justify="left")
        yields.add_column("task kind")
        yields.add_column("value/request", justify="right")
        yields.add_column("requests", justify="right")
        for kind, (mean, n) in sorted(p.yields.items(), key=lambda kv: -kv[1][1]):
            yields.add_row(kind, f"{mean:.2f}", f"{n:,}")
        parts: list[Table | Text] = [summary, yields]
        if self._countdown:
            parts.append(Text(self._countdown, style="yellow"))
        if p.stop_reason:
            parts.append(Text(f"stopping: {p.stop_reason}", style="bold"))
        return Group(*parts)


def _quota_suffix(p: Progress) -> str:
    """The log line's quota part (the crawler's one-line summary of the learned quota)."""
    return f" quota: {p.quota}" if p.quota else ""
