"""``spotify-ingest stats`` on a finished crawl: what it prints agrees with the crawl's own report.

The reference crawl ran the real CLI against the simulator in another process; ``stats`` reads
its database in a third. The human form must give the same figures as ``--json``, and tell the
requests of finished tasks (what the store recorded) from all the last run sent (capability
probes and 429s included), which ``--stats-json`` reported when the crawl ended.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from spotify_ingest.store.base import TaskSpec
from spotify_ingest.store.sqlite import SQLiteStore

from .conftest import Reference
from .harness import CLI, run_cli


def test_stats_tells_task_requests_from_all_the_last_run_sent(
    tmp_path: Path, reference: Reference
) -> None:
    as_json = run_cli([*CLI, "stats", "--json", "--db", str(reference.db)], cwd=tmp_path)
    assert as_json.code == 0, str(as_json)
    data = json.loads(as_json.stdout)
    assert data["last_report"]["requests"] == reference.requests_sent
    # the run's probes are not tasks, so the store's count is the smaller one
    assert 0 < data["requests"] < reference.requests_sent

    human = run_cli([*CLI, "stats", "--db", str(reference.db)], cwd=tmp_path)
    assert human.code == 0, str(human)
    assert f"full {data['artists']['full']:,}" in human.stdout
    assert f"requests of finished tasks {data['requests']:,}" in human.stdout
    assert f"last run: {reference.requests_sent:,} requests" in human.stdout
    assert "stopped: done" in human.stdout


def test_stats_lists_failed_and_backing_off_tasks_and_why(tmp_path: Path) -> None:
    db = tmp_path / "problems.db"
    with SQLiteStore(db) as store:
        store.add_tasks(TaskSpec("search", {"q": q, "offset": 0}) for q in "abc")
        store.add_tasks([TaskSpec("album", {"album": "gone"})])
        a, b, c = store.claim("search", 3)
        (album,) = store.claim("album", 1)
        store.fail(album, "NotFoundError 404: GET /v1/albums/gone: not found (404)")
        store.back_off(a, "ServerError 503: GET /v1/search: server error 503", time.time() + 60,
                       attempted=True)  # fmt: skip
        store.back_off(b, "ServerError 503: GET /v1/search: server error 503", time.time() + 30,
                       attempted=True)  # fmt: skip
        store.back_off(c, "TransportError: GET /v1/search: no response (ReadTimeout)",
                       time.time() + 90, attempted=True)  # fmt: skip

    as_json = run_cli([*CLI, "stats", "--json", "--db", str(db)], cwd=tmp_path)
    assert as_json.code == 0, str(as_json)
    data = json.loads(as_json.stdout)
    assert data["tasks"]["search"] == {"backoff": 3}
    problems = {(p["kind"], p["state"], p["reason"]): p for p in data["task_problems"]}
    assert {k: p["tasks"] for k, p in problems.items()} == {
        ("album", "failed", "NotFoundError 404"): 1,
        ("search", "backoff", "ServerError 503"): 2,
        ("search", "backoff", "TransportError"): 1,
    }
    assert problems[("album", "failed", "NotFoundError 404")]["next_retry"] is None
    soonest = problems[("search", "backoff", "ServerError 503")]["next_retry"]
    assert 25 < datetime.fromisoformat(soonest).timestamp() - time.time() <= 30

    human = run_cli([*CLI, "stats", "--db", str(db)], cwd=tmp_path)
    assert human.code == 0, str(human)
    assert "tasks failed or backing off" in human.stdout
    for reason in ("NotFoundError 404", "ServerError 503", "TransportError", soonest):
        assert reason in human.stdout, human.stdout
