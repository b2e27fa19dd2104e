"""``spotify-ingest stats`` on a finished crawl: what it prints agrees with the crawl's own report.

The reference crawl ran the real CLI against the simulator in another process; ``stats`` reads
its database in a third. The human form must give the same figures as ``--json``, and tell the
requests of finished tasks (what the store recorded) from all the last run sent (capability
probes and 429s included), which ``--stats-json`` reported when the crawl ended.
"""

from __future__ import annotations

import json
from pathlib import Path

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
