"""What a running crawl shows: a live Rich panel on a terminal, plain log lines otherwise.

Both start before the crawl's first request and name what it waits for (a Retry-After deadline,
the token, the endpoint probe) within the wait's first second: the panel at once; the log with a
line once a wait has lasted ``WAIT_LOG_AFTER`` (a wait that is over sooner, as most token fetches
and probes are, leaves no line; one known to end more than ``LONG_WAIT`` from now gets it at
once), then a countdown line every ``log_every`` seconds while it lasts. Log lines start with the
time since the crawl started (``[0m05s]``), as progress lines do.
"""

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

WAIT_LOG_AFTER = 0.5  # seconds a wait lasts before the log names it
LONG_WAIT = 2.0  # ... unless it is known to last longer than this


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def retry_text(seconds: float) -> str:
    """The wait for tasks that back off after passing trouble, when nothing else is left."""
    return f"only tasks backing off after errors remain; next retry in {seconds:.0f}s"


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
        self._started = time.monotonic()
        self._last_log = self._started  # the first progress line after log_every
        self._live: Live | None = None
        self._waiting: str | None = None  # what the crawl waits for, with its end if known
        self._waiting_until: float | None = None  # epoch seconds
        self._wait_since = 0.0  # monotonic start of that wait
        self._wait_logged = False
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
        """The client's countdown of a long Retry-After or a quota (``--wait``), as a wait."""
        if seconds_left <= 0:
            self.waiting(None)
        elif self._waiting is None:  # else the crawl named this wait already
            what = "quota to refill" if reason == "QUOTA_EXCEEDED" else "Retry-After"
            self.waiting(f"waiting for Spotify's {what}", time.time() + seconds_left)

    def waiting(self, reason: str | None, until: float | None = None) -> None:
        """What the crawl waits for now (None: nothing), and until when (epoch seconds or None).

        The panel shows it at once; the log once it has lasted ``WAIT_LOG_AFTER``."""
        now = time.monotonic()
        if reason != self._waiting:
            long_wait = until is not None and until - time.time() > LONG_WAIT
            self._wait_since = now - WAIT_LOG_AFTER if long_wait else now
            self._wait_logged = False
        self._waiting, self._waiting_until = reason, until if reason is not None else None
        if self._live is not None:
            self._live.update(self._render(self.last))
        else:
            self._log_wait(now)

    def _log_wait(self, now: float) -> None:
        """Plain mode: a line for a wait that has lasted long enough, has none yet and will not
        be over before it is read."""
        if self._waiting is None or self._wait_logged or now - self._wait_since < WAIT_LOG_AFTER:
            return
        if self._waiting_until is not None and self._waiting_until - time.time() < WAIT_LOG_AFTER:
            return
        self._wait_logged = True
        self._last_log = now
        line = f"[{format_duration(now - self._started)}] {self._wait_line()}"
        print(line, file=self.stream, flush=True)

    def _wait_line(self) -> str:
        if self._waiting is None:
            return ""
        if self._waiting_until is None:
            return f"{self._waiting} ..."
        left = format_duration(self._waiting_until - time.time())
        return f"{self._waiting}: {left} left (Ctrl-C stops, state is saved)"

    def __call__(self, progress: Progress) -> None:
        self.last = progress
        if self._live is not None:
            self._live.update(self._render(progress))
            return
        now = time.monotonic()
        self._log_wait(now)
        if now - self._last_log >= self.log_every or progress.stop_reason is not None:
            self._last_log = now
            print(self.line(progress), file=self.stream, flush=True)
            if self._waiting is not None and progress.stop_reason is None:
                prefix = f"[{format_duration(progress.elapsed)}] "
                print(prefix + self._wait_line(), file=self.stream, flush=True)

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
        retry = f" waiting: {retry_text(p.retry_in)}" if p.retry_in is not None else ""
        return (
            f"[{format_duration(p.elapsed)}] artists {p.artists} (full {p.full}) "
            f"requests {p.requests} rate {p.rate:.1f}/s of ~{limit_rate:.1f}/s "
            f"(limit est. {est}/{p.window:g}s) 429s {p.rate_limited}{paused}{retry} "
            f"eta {self._eta(p)}{_quota_suffix(p)}"
        )

    def _render(self, p: Progress | None) -> Group:
        waiting = Text(self._wait_line(), style="yellow") if self._waiting else None
        if p is None:  # before the first progress snapshot: start-up
            return Group(waiting or Text("starting ..."))
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
        if p.retry_in is not None:
            summary.add_row("waiting", retry_text(p.retry_in))

        if p.quota:
            summary.add_row("quota", p.quota)
        yields = Table(title="yield per request (artists + details)", title_justify="left")
        yields.add_column("task kind")
        yields.add_column("value/request", justify="right")
        yields.add_column("requests", justify="right")
        for kind, (mean, n) in sorted(p.yields.items(), key=lambda kv: -kv[1][1]):
            yields.add_row(kind, f"{mean:.2f}", f"{n:,}")
        parts: list[Table | Text] = [summary, yields]
        if waiting is not None:
            parts.append(waiting)
        if p.stop_reason:
            parts.append(Text(f"stopping: {p.stop_reason}", style="bold"))
        return Group(*parts)


def _quota_suffix(p: Progress) -> str:
    """The log line's quota part (the crawler's one-line summary of the learned quota)."""
    return f" quota: {p.quota}" if p.quota else ""
