"""The plain progress log: one line a snapshot, each figure named once."""

from __future__ import annotations

import io
import re
import time

from spotify_ingest.crawler import Progress
from spotify_ingest.display import CrawlDisplay


def _progress(**changes: object) -> Progress:
    fields: dict[str, object] = dict(
        elapsed=65.0, requests=1200, artists=9000, full=8800, rate=95.5, limit_estimate=287.0,
        window=3.0, rate_limited=4, paused_for=0.0, yields={}, capabilities={}, stop_reason=None,
    )  # fmt: skip
    fields.update(changes)
    return Progress(**fields)  # type: ignore[arg-type]


def test_a_progress_line_names_each_figure_once() -> None:
    out = io.StringIO()
    display = CrawlDisplay(live=False, log_every=0.0, stream=out, target_artists=18_000)
    display(_progress())
    display(_progress(retry_in=12.0, quota="28 of 142 calls left per 10s"))
    first, second = out.getvalue().splitlines()
    for line in (first, second):
        for figure in ("artists ", "requests ", "limit est. ", "429s ", "eta "):
            assert line.count(figure) == 1, (figure, line)
    assert re.search(r"limit est\. 287/3s\) 429s 4 eta 1m05s$", first), first
    assert "waiting: only tasks backing off" in second and "next retry in 12s" in second
    assert second.endswith(" quota: 28 of 142 calls left per 10s"), second


def test_a_wait_is_logged_once_it_lasts_unless_it_is_about_to_end() -> None:
    out = io.StringIO()
    display = CrawlDisplay(live=False, stream=out)
    display.waiting("probing endpoints")
    display.waiting("waiting for Spotify's Retry-After", time.time() + 0.3)  # over at once
    time.sleep(0.6)
    display(_progress())
    assert out.getvalue() == ""
    display.waiting("waiting for Spotify's Retry-After", time.time() + 600)  # long: at once
    (line,) = out.getvalue().splitlines()
    assert re.search(r"Retry-After: (9m59s|10m00s) left \(Ctrl-C stops", line), line
