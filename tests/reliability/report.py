"""Turn ``build/reliability.json`` (written by ``pytest tests/reliability``) into the tables of
RELIABILITY.md: ``.venv/bin/python -m tests.reliability.report [results.json]``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from .harness import RESULTS_PATH


def _status(data: dict[str, Any], row: dict[str, Any]) -> str:
    outcome = str(data.get("_outcomes", {}).get(row.get("test", ""), "?"))
    return {"passed": "ok", "xfailed": "**BUG** (xfail)", "XPASS": "fixed? (XPASS)"}.get(
        outcome, outcome
    )


def _cell(value: Any) -> str:
    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/ ]+(/|\b)", "TMP/", str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def crash(data: dict[str, Any]) -> str:
    out = []
    k = data.get("crash_resume_sigkill")
    if k:
        out.append(
            table(
                ["figure", "value"],
                [
                    ["status", _status(data, k)],
                    ["SIGKILLs of the crawl (by kind)", f"{len(k['kills'])} {k['kill_modes']}"],
                    [
                        "kills that left tasks leased (recovered at restart)",
                        k["kills_with_leased_tasks_left"],
                    ],
                    [
                        "SIGKILLs of an export",
                        f"{len(k['exports'])}: target {k['export_targets']}"
                        f", .part files left {k['export_part_files_left']}",
                    ],
                    [
                        "artists at the end / uninterrupted",
                        f"{k['artists']} / {k['artists_reference']}",
                    ],
                    ["search requests done (each exactly once)", k["search_requests_done"]],
                    [
                        "requests recorded in tasks / uninterrupted",
                        f"{k['requests_recorded']} / {k['requests_recorded_reference']}",
                    ],
                    [
                        "requests sent / uninterrupted",
                        f"{k['requests_sent']} / {k['requests_sent_reference']}",
                    ],
                    [
                        "requests repeated (lost with a killed process)",
                        f"{k['requests_repeated']} ({k['repeated_per_restart']} per restart)",
                    ],
                    ["lost", k["lost"]],
                    ["wall time of the test", f"{k['elapsed_s']} s"],
                ],
            )
        )
        kills = [
            [i + 1, r["mode"], r["at"], r["exit"], r["requests_this_run"], r["leased_left"],
             r["done"], r["artists"]]
            for i, r in enumerate(k["kills"])
        ]  # fmt: skip
        out.append(
            "\nEach kill (``at``: requests seen / ms from start / COMMIT number / response "
            "number, by kind):\n\n"
            + table(
                ["#", "kind", "at", "exit", "requests", "leased left", "tasks done", "artists"],
                kills,
            )
        )
    s = data.get("crash_resume_signals")
    if s:
        rows = [
            [r["signal"], r["exit"], r["stopped_in_s"], r["artists_at_stop"], r["leased_left"]]
            for r in s["runs"]
        ]
        out.append(
            f"\nClean stops ({_status(data, s)}; resumed to {s['artists']} / "
            f"{s['artists_reference']} artists, lost {s['lost']}):\n\n"
            + table(["signal", "exit", "stopped in (s)", "artists at stop", "leased left"], rows)
        )
    return "\n".join(out)


def faults(data: dict[str, Any]) -> str:
    rows = []
    for key, r in sorted(data.items()):
        if not key.startswith("fault_"):
            continue
        sent = r.get("requests_sent", "")
        ref = r.get("requests_sent_reference")
        rows.append(
            [
                r["fault"],
                r["crawler_did"],
                " then ".join(str(c) for c in r.get("exit_codes", [])),
                r.get("injected", ""),
                f"{sent} ({ref})" if ref is not None else sent,
                r.get("lost", ""),
                r.get("requests_repeated", ""),
                r.get("elapsed_s", ""),
                _status(data, r),
            ]
        )
    return table(
        ["fault", "what the crawler did", "exit", "faults", "sent (ref.)", "lost", "repeated",
         "s", "status"],
        rows,
    )  # fmt: skip


def bad_input(data: dict[str, Any]) -> str:
    rows = [
        [r["bad_input"], r["exit_code"], f"`{r['message']}`", _status(data, r)]
        for key, r in sorted(data.items())
        if key.startswith("input_")
    ]
    return table(["bad input", "exit", "the one line on stderr", "status"], rows)


def secrets(data: dict[str, Any]) -> str:
    r = data.get("secrets")
    if not r:
        return ""
    return (
        f"Secret and {r['tokens_checked']} issued tokens searched in: "
        + ", ".join(r["checked"])
        + f" ({r['debug_log_lines']} lines of --debug log). Found: {r['leaks']}. "
        f"Status: {_status(data, r)}."
    )


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_PATH
    data = json.loads(path.read_text())
    for title, body in (
        ("Crash safety", crash(data)),
        ("Fault matrix", faults(data)),
        ("Bad input", bad_input(data)),
        ("Secrets", secrets(data)),
    ):
        print(f"### {title}\n\n{body}\n")


if __name__ == "__main__":
    main()
