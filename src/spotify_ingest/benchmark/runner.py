"""``bench()``: every chosen contender in every chosen scenario, one after the other.

Runs are sequential (the machine's cores are shared by the simulator and the contender; two runs
at once would take CPU from each other and blur utilisation). After each run ``results.json`` is
rewritten (an interrupted benchmark keeps what it measured); after each scenario its table and
plots are written; at the end ``report.md``.

Contenders, in run order (``scenarios.CONTENDERS``): ``seed`` (``seed.py``), ``spotipy``
(``spotipy_contender.py``), ``fixed-rate`` and ``botocore-adaptive`` (``adapters.py`` behind our
client and planner, ``crawlers.py``), ``spotify-ingest`` (ours, ``crawlers.py``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .harness import run_contender
from .report import machine_info, plot_scenario, scenario_table, write_report
from .scenarios import CONTENDERS, SCENARIOS, BenchScale, scale_for

__all__ = ["bench", "run_bench"]


def _command(
    quick: bool,
    scenarios: list[str] | None,
    out: Path,
    contenders: list[str] | None,
    budget: float | None = None,
) -> str:
    parts = ["spotify-ingest", "bench"]
    if quick:
        parts.append("--quick")
    if budget is not None:
        parts += ["--budget", f"{budget:g}"]
    for s in scenarios or []:
        parts += ["--scenario", s]
    for c in contenders or []:
        parts += ["--contender", c]
    parts += ["--out", str(out)]
    return shlex.join(parts)


def _print(line: str) -> None:
    print(line, flush=True)


def _summary_line(f: dict[str, Any], seconds: float) -> str:
    if "error" in f:
        return f"[{f['scenario']}] {f['contender']}: ERROR {f['error']}"
    t90 = f["time_to_coverage_windows"].get("90")
    util = f["utilisation"]
    return (
        f"[{f['scenario']}] {f['contender']}: {f['stop_reason']}, coverage {f['coverage']:.3f}, "
        f"90% at {'-' if t90 is None else f'{t90:.1f} w'}, "
        f"utilisation {'n/a' if util is None else f'{util:.3f}'}, "
        f"429s {100 * f['ratio_429']:.2f}%, escalations {f['escalations']}, "
        f"{f['requests']:,} requests ({seconds:.0f} s)"
    )


def run_bench(
    scale: BenchScale,
    scenario_names: list[str],
    contender_names: list[str],
    out: Path,
    *,
    command: str,
    log: Callable[[str], None] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Run and report; returns (exit code, figures of every run)."""
    log = log or _print
    out = out.resolve()  # contender processes run in their own folders
    out.mkdir(parents=True, exist_ok=True)
    scenarios = [SCENARIOS[name] for name in scenario_names]
    meta: dict[str, Any] = {
        "command": command,
        "scale": {**asdict(scale), "time_scale": scale.time_scale},
        "machine": machine_info(),
        "scenarios": {s.name: s.description for s in scenarios},
        "contenders": contender_names,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    runs: list[dict[str, Any]] = []
    failures = 0

    def save() -> None:
        meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps({"meta": meta, "runs": runs}))
        tmp.replace(out / "results.json")

    for scenario in scenarios:
        figures: list[dict[str, Any]] = []
        for contender in contender_names:
            started = time.monotonic()
            load = os.getloadavg()[0]
            try:
                f = run_contender(scenario, contender, scale, out)
            except Exception as exc:  # one broken run must not lose the others
                failures += 1
                f = {
                    "scenario": scenario.name,
                    "contender": contender,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            f["loadavg_before"] = round(load, 2)
            f["wall_s"] = round(time.monotonic() - started, 2)
            figures.append(f)
            runs.append(f)
            save()
            log(_summary_line(f, time.monotonic() - started))
        (out / f"{scenario.name}.md").write_text(
            f"# {scenario.name}\n\n{scenario.description}\n\n" + scenario_table(figures)
        )
        plot_scenario(scenario.name, scenario.description, figures, out / "plots")
    save()
    write_report(out, meta, runs)
    log(f"report: {out / 'report.md'}")
    return (1 if failures else 0), runs


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def bench(
    quick: bool,
    scenarios: list[str] | None,
    out: Path,
    contenders: list[str] | None,
    *,
    budget: float | None = None,
) -> int:
    """Run the side-by-side benchmark; 0 when every run produced its figures, 2 on bad names.

    ``budget`` replaces the base budget per run (real seconds; scenarios scale it by their factor).
    """
    if budget is not None and not budget > 0:
        print("budget must be > 0", file=sys.stderr)
        return 2
    unknown = [s for s in scenarios or [] if s not in SCENARIOS]
    unknown += [c for c in contenders or [] if c not in CONTENDERS]
    if unknown:
        print(
            f"unknown scenario or contender: {', '.join(unknown)} (scenarios: "
            f"{', '.join(SCENARIOS)}; contenders: {', '.join(CONTENDERS)})",
            file=sys.stderr,
        )
        return 2
    # SIGTERM ends the benchmark like Ctrl-C: the running contender process is killed on the way
    # out (``harness.run_contender``'s ``finally``), not left orphaned.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    scale = scale_for(quick)
    if budget is not None:
        scale = replace(scale, budget=float(budget))
    code, _ = run_bench(
        scale,
        list(dict.fromkeys(scenarios or SCENARIOS)),
        [c for c in CONTENDERS if c in (contenders or CONTENDERS)],
        out,
        command=_command(quick, scenarios, out, contenders, budget),
    )
    return code
