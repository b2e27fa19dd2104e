"""Tables, plots and raw JSON of a benchmark run; the BENCHMARKS.md section.

Per scenario: a Markdown table (one row per contender), ``plots/<scenario>-coverage.png``
(coverage over time, every contender; dashed: artists with full details) and
``plots/<scenario>-rate.png`` (accepted requests in the last window over time, one panel per
contender, with the hidden limit drawn, and dotted what the crawler contenders' controllers aimed
at: our RateController's target, aiolimiter's fixed rate, botocore's token-bucket rate x W).
``results.json`` holds every figure and series; ``report.md`` every table with the command and
the machine.

``python -m spotify_ingest.benchmark.report OUT_DIR [--benchmarks BENCHMARKS.md --png-dir DIR]``
rewrites the "Contenders side by side (issue 5)" section of BENCHMARKS.md from a finished run and
copies its plots into ``DIR`` (``bench/results``, as ``issue5-<scenario>-<kind>.png``); other
sections are left as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SECTION_TITLE",
    "machine_info",
    "plot_scenario",
    "publish",
    "scenario_table",
    "write_report",
]

SECTION_TITLE = "## Contenders side by side (issue 5)"
_NOT_REACHED_STOPS = ("done", "endpoint-unavailable", "target")


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, RAM, load average, Python."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": ram_gb,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def _fmt_time(fig: dict[str, Any], mark: str) -> str:
    w = fig.get("time_to_coverage_windows", {}).get(mark)
    s = fig.get("time_to_coverage_sim_s", {}).get(mark)
    if w is not None and s is not None:
        return f"{w:.1f} w ({s:,.0f} s)"
    stop = str(fig.get("stop_reason", ""))
    if stop.startswith(_NOT_REACHED_STOPS):
        return "never"
    return f"> {fig.get('elapsed_windows', 0):.0f} w"


def _pct(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * float(value):.{digits}f}%"


def _escalations(f: dict[str, Any]) -> str:
    ra = f.get("max_retry_after") or 0
    return f"{f['escalations']} ({ra:g} s)" if f["escalations"] else str(f["escalations"])


def _num(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def scenario_table(figures: Sequence[dict[str, Any]]) -> str:
    """One Markdown table for the runs of one scenario."""
    head = (
        "| contender | stopped | coverage | full details | 50% | 90% | 99% | utilisation "
        "| 429s | escalations (max Retry-After) | requests/artist | requests | peak RSS MB "
        "| CPU s/1k req |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for f in figures:
        if "error" in f:
            rows.append(f"| {f['contender']} | error: {f['error']} |" + " |" * 12)
            continue
        rows.append(
            "| "
            + " | ".join(
                [
                    f["contender"],
                    str(f["stop_reason"]).replace("|", "/"),
                    _pct(f["coverage"]),
                    _pct(f["full_coverage"]),
                    _fmt_time(f, "50"),
                    _fmt_time(f, "90"),
                    _fmt_time(f, "99"),
                    _num(f["utilisation"], ".3f"),
                    _pct(f["ratio_429"], 2),
                    _escalations(f),
                    _num(f["requests_per_artist"], ".3f"),
                    f"{f['requests']:,}",
                    _num(f["peak_rss_mb"], ".0f"),
                    _num(f["cpu_s_per_1000_requests"], ".2f"),
                ]
            )
            + " |"
        )
    return head + "\n".join(rows) + "\n"


_COLOURS = {
    "seed": "tab:brown",
    "spotipy": "tab:green",
    "fixed-rate": "tab:orange",
    "botocore-adaptive": "tab:purple",
    "spotify-ingest": "tab:blue",
}


def plot_scenario(
    scenario: str, description: str, figures: Sequence[dict[str, Any]], plot_dir: Path
) -> list[Path]:
    """Write the coverage and rate plots of one scenario; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    runs = [f for f in figures if "error" not in f]
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(9, 5))
    for f in runs:
        series = f["coverage_series"]
        colour = _COLOURS.get(f["contender"])
        ax.step(series["windows"], series["coverage"], where="post", color=colour,
                label=f["contender"], linewidth=1.8)  # fmt: skip
        ax.step(series["windows"], series["full"], where="post", color=colour,
                linestyle="--", linewidth=0.9, alpha=0.7)  # fmt: skip
    for mark in (0.5, 0.9, 0.99):
        ax.axhline(mark, color="grey", linewidth=0.5, linestyle=":")
    ax.set_xlabel("time (windows of 30 simulated seconds)")
    ax.set_ylabel("share of the catalog found (dashed: with full details)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{scenario}: coverage over time\n{description}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    path = plot_dir / f"{scenario}-coverage.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    n = max(1, len(runs))
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.9 * n + 0.8), sharex=True, squeeze=False)
    top = max((max(f["rate_series"]["limit"] or [1]) for f in runs), default=1)
    for ax, f in zip(axes[:, 0], runs, strict=False):
        rs = f["rate_series"]
        window = 30.0
        xs = [t / window for t in rs["t_sim"]]
        ax.plot(xs, rs["accepted_in_window"], color=_COLOURS.get(f["contender"]), linewidth=1.2,
                label="accepted in the last window")  # fmt: skip
        ax.step(xs, rs["limit"], where="post", color="black", linestyle="--", linewidth=1.0,
                label="hidden limit")  # fmt: skip
        est = f.get("estimate_series")
        if est and est["windows"]:
            belief = [t if t is not None else e for t, e in zip(est["target"], est["limit"],
                                                                strict=False)]  # fmt: skip
            ax.step(est["windows"], belief, where="post", color=_COLOURS.get(f["contender"]),
                    linestyle=":", linewidth=1.0, label="contender's cap / estimate")  # fmt: skip
        if len(rs["t_sim"]) < 2:
            ax.text(0.5, 0.5, f"stopped at once: {f['stop_reason']}", ha="center",
                    va="center", transform=ax.transAxes, fontsize=9)  # fmt: skip
        util = f.get("utilisation")
        ax.set_title(
            f"{f['contender']}: utilisation {_num(util, '.2f')}, "
            f"429s {_pct(f['ratio_429'], 2)}, escalations {f['escalations']}",
            fontsize=9,
        )
        ax.set_ylim(0, top * 1.25)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.legend(loc="lower right", fontsize=6)
    axes[-1, 0].set_xlabel("time (windows of 30 simulated seconds)")
    fig.suptitle(f"{scenario}: requests per rolling window vs the hidden limit", fontsize=10)
    fig.tight_layout()
    path = plot_dir / f"{scenario}-rate.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def _setting_line(meta: dict[str, Any]) -> str:
    s = meta["scale"]
    return (
        f"catalog seed {s['seed']}, one 30-second window = {s['window_real']:g} real s "
        f"(time scale {30 / s['window_real']:g}), a run stops at "
        f"{100 * s['target_coverage']:g}% coverage or its budget, mean latency "
        f"{s['latency_ms']:g} simulated ms, {s['concurrency']} workers for the async contenders"
    )


def _scenario_line(desc: str, figs: Sequence[dict[str, Any]]) -> str:
    f = next((f for f in figs if "artists" in f), None)
    if f is None:
        return desc + "."
    windows = f["budget_s"] / f["window_real_s"]
    return (
        f"{desc}; {f['artists']:,} artists; budget {f['budget_s']:g} real s "
        f"({windows:.0f} windows) per contender."
    )


def write_report(out: Path, meta: dict[str, Any], runs: Sequence[dict[str, Any]]) -> Path:
    """``report.md`` with every scenario's table; returns its path."""
    lines = [
        "# Contenders side by side",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Setting: " + _setting_line(meta) + ".",
        "",
        "Machine: " + _machine_line(meta["machine"]) + ".",
        "",
    ]
    for name, desc in meta["scenarios"].items():
        figs = [f for f in runs if f["scenario"] == name]
        if not figs:
            continue
        lines += [f"## {name}", "", _scenario_line(desc, figs), "", scenario_table(figs)]
        lines += [
            f"![coverage](plots/{name}-coverage.png)",
            f"![rate](plots/{name}-rate.png)",
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['nproc']} vCPU ({m['cpu_model']}), {m['ram_gb']} GB RAM, Python {m['python']}, "
        f"load average {m['loadavg'][0]} at the start and "
        f"{m.get('loadavg_end', ['?'])[0]} at the end"
    )


def publish(out: Path, benchmarks: Path, png_dir: Path, notes: str = "") -> None:
    """Rewrite the issue-5 section of ``benchmarks`` from the run in ``out``; copy its plots."""
    data = json.loads((out / "results.json").read_text())
    meta, runs = data["meta"], data["runs"]
    png_dir.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(png_dir, benchmarks.parent)
    body = [
        SECTION_TITLE,
        "",
        "Every contender crawls a fresh simulator (same seed, profile, catalog and hidden limit) "
        "in its own process, on compressed time; figures come from the simulator's ground truth "
        "(`/__sim/stats`, `/__sim/accepted`, `/__sim/catalog`) and the contender's own record. "
        "Time is compressed with the simulator's `time_scale`: one 30-second window lasts "
        "W = 2 real seconds, every duration (Retry-After, penalties, latency, token life, the "
        "seed's 30 s sleep, urllib3's and botocore's clocks, our controller's window) is in "
        "simulated seconds, and request counts are not scaled (the seed still sleeps after "
        "every 1,500 requests; limits are per 30-second window, as users report them). "
        "Contenders: *seed* (the seed's algorithm from its README: featured playlists, batch "
        "details, related-artists BFS, sequential, loses the popped artist on a 429), *spotipy* "
        "(the same algorithm through the real spotipy, default retries), *fixed-rate* and "
        "*botocore-adaptive* (our client and planner behind `aiolimiter` at 60 per window, or "
        "botocore's adaptive `ClientRateLimiter`), *spotify-ingest* (ours, `--strategy auto`). "
        "Method and definitions: `src/spotify_ingest/benchmark/` (module docstrings).",
        "",
        "Command:",
        "",
        f"    {meta['command']}",
        "",
        "Setting: " + _setting_line(meta) + ".",
        "",
        "Machine: " + _machine_line(meta["machine"]) + ".",
        "",
        "Times are in windows of 30 simulated seconds (and simulated seconds); `> N w`: not "
        "reached within the budget; `never`: the run ended (done, endpoint gone) without it.",
        "",
    ]
    for name, desc in meta["scenarios"].items():
        figs = [f for f in runs if f["scenario"] == name]
        if not figs:
            continue
        body += [f"### {name}", "", _scenario_line(desc, figs), ""]
        body += [scenario_table(figs).rstrip("\n"), ""]
        links = []
        for kind in ("coverage", "rate"):
            src = out / "plots" / f"{name}-{kind}.png"
            if src.exists():
                dest = png_dir / f"issue5-{src.name}"
                shutil.copy2(src, dest)
                links.append(f"[{kind}]({rel}/{dest.name})")
        if links:
            body += ["Plots: " + ", ".join(links) + ".", ""]
    if notes:
        body += [notes.rstrip("\n"), ""]
    section = "\n".join(body)

    text = benchmarks.read_text() if benchmarks.exists() else "# Benchmarks\n"
    start = text.find(SECTION_TITLE)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(SECTION_TITLE))
        tail = "" if nxt < 0 else text[nxt + 1 :]
        text = text[:start] + section + ("\n" + tail if tail else "")
    benchmarks.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Publish a benchmark run into BENCHMARKS.md.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--png-dir", type=Path, default=Path("bench/results"))
    ap.add_argument("--notes", type=Path, help="Markdown appended to the section")
    args = ap.parse_args(argv)
    notes = args.notes.read_text() if args.notes else ""
    publish(args.out, args.benchmarks, args.png_dir, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
