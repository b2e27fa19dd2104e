"""The learned quota at full size: 2,000 calls per 10 simulated minutes, an hour of crawling.

The scenario of ``tests/test_quota_crawl.py`` (``run_quota_crawls``), longer: the simulator in
process on a compressed clock (``--time-scale`` simulated seconds per real second), a crawl that
meets the quota (exit 75), then one of ``--minutes`` simulated minutes that paces under what
the first lockout taught. Reports the simulator's ground truth: quota 429s after the lockout (must
be 0) and the calls it accepted in each whole period of the paced crawl, against the quota.

    .venv/bin/python bench/quota.py                          # 2,000 per 600 s, 60 min, k = 10
    .venv/bin/python bench/quota.py --quota 300 --time-scale 60 --minutes 30   # the test's size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_quota_crawl import QuotaScenario, run_quota_crawls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=int, default=2000)
    parser.add_argument("--period", type=float, default=600.0, help="simulated seconds")
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--limit", type=int, default=300, help="per 30 simulated seconds")
    parser.add_argument("--artists", type=int, default=200_000)
    parser.add_argument("--minutes", type=float, default=60.0, help="simulated, after the lockout")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    scenario = QuotaScenario(**{f.name: getattr(args, f.name) for f in fields(QuotaScenario)})
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(run_quota_crawls(Path(tmp) / "quota.db", scenario))
    figures = {
        "scenario": asdict(scenario),
        "first_run": out.first_run_error,
        "quota_429s_of_the_lockout": out.lockout_refusals,
        "learned": {k: out.learned[k] for k in ("budget", "period", "lockouts")},
        "quota_429s_after_the_lockout": out.refusals_after,
        "accepted_per_whole_period": out.per_period,
        "least_share_of_the_quota_used": round(out.usage(scenario.quota), 4),
        "requests_of_the_paced_crawl": out.requests,
        "last_quota_line": out.lines[-1] if out.lines else None,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
