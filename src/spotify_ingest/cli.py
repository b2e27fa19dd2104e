"""The ``spotify-ingest`` command line: a thin layer over the library.

Only this module prints and chooses exit codes. Every error the package raises on purpose
(:class:`~spotify_ingest.errors.SpotifyIngestError`) becomes one line on stderr and the exit code
of its class; flag errors exit 2; anything unforeseen exits 1 with a one-line summary.
``--debug`` prints the traceback before that line; the exit code is the same.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import __version__
from .benchmark.cli import bench_command
from .config import MAX_RUN_TIMEOUT, MAX_TRY_TIMEOUT
from .deadline import DEADLINE_PREFIX, RetryDeadline, format_local
from .errors import (
    EXIT_INTERNAL,
    EXIT_MUST_WAIT,
    EXIT_OK,
    EXIT_SIGHUP,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    MustWaitError,
    SpotifyIngestError,
    UsageError,
)
from .sim.cli import sim_app

if TYPE_CHECKING:
    from .store.base import TaskProblem
    from .store.postgres import PostgresStore
    from .store.sqlite import SQLiteStore

__all__ = ["app", "main"]

app = typer.Typer(
    name="spotify-ingest",
    help="Ingest the Spotify artist catalog as fast as the Web API's unknown rate limit allows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
app.add_typer(sim_app, name="sim", help="Run the offline Spotify Web API simulator.")
app.command(
    name="bench",
    help="Benchmark spotify-ingest side by side with the seed, spotipy, fixed-rate and "
    "botocore-adaptive clients on fresh simulators (needs the 'bench' extra).",
)(bench_command)

_state: dict[str, bool] = {"debug": False}
DB = "spotify.db"
ENV = Path(".env")


def _version(value: bool) -> None:
    if value:
        print(f"spotify-ingest {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


class Strategy(StrEnum):
    auto = "auto"
    seed = "seed"
    search = "search"
    albums = "albums"


class Profile(StrEnum):
    extended = "extended"
    dev_2024 = "dev-2024"
    dev_2026 = "dev-2026"


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


def _seconds(what: str, most: float) -> Any:
    """A flag of seconds, ``0.1`` to ``most``."""
    return typer.Option(min=0.1, max=most, help=f"Seconds {what}.")


@app.command()
def crawl(
    db: Annotated[
        str, typer.Option(help="SQLite file or postgresql:// URL; resumes when it exists.")
    ] = DB,
    simulate: Annotated[
        bool, typer.Option(help="Crawl the built-in simulator (demo credentials, no internet).")
    ] = False,
    sim_artists: Annotated[
        int | None, typer.Option(min=1, max=5_000_000, help="Simulator catalog size [20000].")
    ] = None,
    sim_profile: Annotated[
        Profile | None, typer.Option(help="Simulated app's API generation [dev-2026].")
    ] = None,
    sim_seed: Annotated[int | None, typer.Option(help="Simulator catalog seed [0].")] = None,
    sim_limit: Annotated[
        int | None,
        typer.Option(min=1, help="Simulator's hidden limit per window [drawn from seed]."),
    ] = None,
    sim_window: Annotated[
        float | None, typer.Option(min=0.1, help="Simulator's rolling window in seconds [3].")
    ] = None,
    api_base: Annotated[str | None, typer.Option(help="Web API base URL.")] = None,
    token_url: Annotated[str | None, typer.Option(help="Token endpoint URL.")] = None,
    window: Annotated[
        float | None, typer.Option(min=0.1, help="The API's rolling window in seconds [30].")
    ] = None,
    strategy: Annotated[Strategy, typer.Option(help="Discovery strategy.")] = Strategy.auto,
    max_requests: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many requests.")
    ] = None,
    max_artists: Annotated[
        int | None, typer.Option(min=1, help="Stop at this many artists.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Requests in flight at most.")
    ] = 16,
    no_hydrate: Annotated[
        bool, typer.Option("--no-hydrate", help="Skip hydrating simplified artists.")
    ] = False,
    stats_json: Annotated[
        Path | None, typer.Option(help="Write the final figures as JSON here.")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait out long Retry-After and quota pauses instead of stopping.")
    ] = False,
    max_wait: Annotated[
        float, typer.Option(min=0, help="Longest Retry-After to wait in-run, seconds.")
    ] = 900.0,
    env_file: Annotated[
        Path | None, typer.Option(help="File with SPOTIFY_CLIENT_ID / _SECRET [.env, if any].")
    ] = None,
    connect_timeout: Annotated[
        float | None, _seconds("to connect, per try [SPOTIFY_CONNECT_TIMEOUT, 5]", MAX_TRY_TIMEOUT)
    ] = None,
    read_timeout: Annotated[
        float | None,
        _seconds(
            "to wait for an answer's bytes, per try [SPOTIFY_READ_TIMEOUT, 20]", MAX_TRY_TIMEOUT
        ),
    ] = None,
    no_answer_timeout: Annotated[
        float | None,
        _seconds(
            "without any answer since the start before exit 69 [SPOTIFY_NO_ANSWER_TIMEOUT, 45]",
            MAX_RUN_TIMEOUT,
        ),
    ] = None,
    outage_timeout: Annotated[
        float | None,
        _seconds(
            "without an answer, after answers, before exit 69 [SPOTIFY_OUTAGE_TIMEOUT, 900]",
            MAX_RUN_TIMEOUT,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes on this host, sharing --db (PostgreSQL) and --redis. "
            "The limit is per account: more workers never crawl faster.",
        ),
    ] = 1,
    redis: Annotated[
        str | None,
        typer.Option(
            help="Share the rate budget (window log, learned limit, 429 pauses) with every "
            "worker on the same Redis: redis://host:6379/0."
        ),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(hidden=True, help="This worker's name in task leases.")
    ] = None,
    lease_seconds: Annotated[
        float | None,
        typer.Option(min=1.0, hidden=True, help="PostgreSQL task lease length [60]."),
    ] = None,
    redis_prefix: Annotated[
        str | None, typer.Option(hidden=True, help="Redis key prefix of the shared budget.")
    ] = None,
) -> None:
    """Crawl artists into --db (resumes when it exists). Ctrl-C stops cleanly."""
    sim_flags = {
        "--sim-artists": sim_artists, "--sim-profile": sim_profile, "--sim-seed": sim_seed,
        "--sim-limit": sim_limit, "--sim-window": sim_window,
    }  # fmt: skip
    if not simulate:
        given = [name for name, value in sim_flags.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --simulate (add it, or drop these)")
    elif api_base or token_url:
        raise UsageError("--simulate runs its own API: drop --api-base / --token-url")
    if stats_json is not None and stats_json.is_dir():
        raise UsageError(f"--stats-json {stats_json} is a directory: give a file path")
    if env_file is not None:
        from .config import check_env_file

        check_env_file(env_file)
    from .store import is_postgres_url

    if not is_postgres_url(db):  # refuse at once, before the start-up work
        from .store.lock import ensure_free

        ensure_free(Path(db))
    from .runner import CrawlRequest, run_crawl

    request = CrawlRequest(
        db=db,
        simulate=simulate,
        sim_artists=sim_artists or 20_000,
        sim_profile=sim_profile.value if sim_profile else "dev-2026",
        sim_seed=sim_seed or 0,
        sim_limit=sim_limit,
        sim_window=sim_window or 3.0,
        api_base=api_base,
        token_url=token_url,
        window=window,
        strategy=strategy.value,
        max_requests=max_requests,
        max_artists=max_artists,
        duration=duration,
        concurrency=concurrency,
        hydrate=not no_hydrate,
        wait=wait,
        max_wait=max_wait,
        env_file=env_file or ENV,
        redis=redis,
        redis_prefix=redis_prefix,
        worker_id=worker_id,
        lease_seconds=lease_seconds,
        timeouts=tuple(
            (name, seconds)
            for name, seconds in (
                ("connect_timeout", connect_timeout),
                ("read_timeout", read_timeout),
                ("no_answer_timeout", no_answer_timeout),
                ("outage_timeout", outage_timeout),
            )
            if seconds is not None
        ),
    )
    write_stats = None if stats_json is None else functools.partial(_write_json, stats_json)
    if workers > 1:
        from .workers import run_workers

        report, signal_code = run_workers(request, workers, debug=_state["debug"])
    else:
        report, signal_code = run_crawl(request, on_failure=write_stats)
    if write_stats is not None:
        write_stats(report)
    if signal_code:
        from .store import display_db

        shown = {db: display_db(db)}  # no password in the hint
        if redis:
            from .shared_rate import describe_redis_url

            shown[redis] = describe_redis_url(redis)
        args = [shown.get(a, a) for a in sys.argv[1:]]
        resume = shlex.join(["spotify-ingest", *args])
        print(f"stopped; state saved in {display_db(db)}. Resume with: {resume}", file=sys.stderr)
        raise typer.Exit(signal_code)


@app.command()
def stats(
    db: Annotated[str, typer.Option(help="The crawl's database: a file, or postgresql://...")] = DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What a crawl database holds: artists, tasks, search tree, capabilities, last run."""
    from .store import display_db, open_store

    with open_store(db, create=False, read_only=True) as store:
        counts = store.artist_counts()
        tasks = store.task_counts()
        nodes = store.search_nodes()
        data: dict[str, Any] = {
            "db": display_db(db),
            "artists": {
                "total": counts.total,
                "full": counts.full,
                "simplified": counts.simplified,
            },
            "requests": store.requests_done(),
            "tasks": tasks,
            "search_tree": {
                status: sum(1 for n in nodes if n.status == status)
                for status in sorted({n.status for n in nodes})
            },
            "capabilities": store.get_meta("capabilities"),
            "last_report": store.get_meta("last_report"),
            "task_problems": [_problem_json(p) for p in store.task_problems()],
        }
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{display_db(db)}[/bold]")
    console.print(
        f"artists {counts.total:,} (full {counts.full:,}, simplified {counts.simplified:,}); "
        f"requests of finished tasks {data['requests']:,}",
        soft_wrap=True,
    )
    last = data["last_report"]
    if isinstance(last, dict) and "requests" in last:
        console.print(
            f"last run: {last['requests']:,} requests (probes and 429s included), "
            f"stopped: {last.get('stop_reason', '?')}",
            soft_wrap=True,
        )
    states = ("pending", "backoff", "leased", "done", "failed")
    table = Table("task kind", *states)
    for kind, by_state in sorted(tasks.items()):
        table.add_row(kind, *(f"{by_state.get(s, 0):,}" for s in states))
    console.print(table)
    if data["task_problems"]:
        console.print(_problems_table(data["task_problems"]))
    if data["search_tree"]:
        console.print(
            "search tree: " + ", ".join(f"{k} {v:,}" for k, v in data["search_tree"].items())
        )
    caps = data["capabilities"] or {}
    if caps.get("available"):
        have = sorted(k for k, v in caps["available"].items() if v)
        lack = sorted(k for k, v in caps["available"].items() if not v)
        console.print("endpoints available: " + (", ".join(have) or "none"))
        console.print("endpoints unavailable: " + (", ".join(lack) or "none"))


def _problem_json(problem: TaskProblem) -> dict[str, Any]:
    """A group of failed or backing-off tasks, as ``stats --json`` gives it."""
    retry = problem.next_retry
    return {
        "kind": problem.kind,
        "state": problem.state.name.lower(),
        "reason": problem.reason,
        "tasks": problem.count,
        "next_retry": None
        if retry is None
        else _dt.datetime.fromtimestamp(retry).astimezone().isoformat(timespec="seconds"),
    }


def _problems_table(problems: list[dict[str, Any]]) -> Any:
    """Failed tasks (for good) and backing-off ones (retried at ``next retry``), and why."""
    from rich.table import Table

    table = Table("task kind", "state", "why", "tasks", "next retry",
                  title="tasks failed or backing off", title_justify="left")  # fmt: skip
    for p in problems:
        retry = p["next_retry"] or "never (final answer)"
        table.add_row(p["kind"], p["state"], p["reason"], f"{p['tasks']:,}", retry)
    return table


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="File to write.")],
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.jsonl,
    db: Annotated[str, typer.Option(help="The crawl's database: a file, or postgresql://...")] = DB,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """Write every artist (all fields, one row each) as JSON Lines, CSV or Parquet."""
    from .export import export_artists
    from .store import open_store

    with _exit_on_signals(), open_store(db, create=False, read_only=True) as store:
        n = export_artists(store.iter_artists(), out, fmt.value, force=force)
    print(f"wrote {n:,} artists to {out}", file=sys.stderr)


@app.command()
def limits(
    db: Annotated[str, typer.Option(help="The crawl's database: a file, or postgresql://...")] = DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The rate limits learned so far, per client id and API base, with bounds and age."""
    from .store import open_store

    with open_store(db, create=False, read_only=True) as store:
        rows = store.rate_estimates()
        deadlines = store.meta_items(DEADLINE_PREFIX + ":")
        quota_lines = _quota_lines(store, rows)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    now = time.time()
    _print_deadlines(deadlines, now)
    if not rows:
        print("no limit learned yet: run a crawl first", file=sys.stderr)
        return
    for row, quota_line in zip(rows, quota_lines, strict=True):
        est = row["estimate"]
        upper = est.get("upper")
        age = now - float(est.get("observed_at", now))
        print(
            f"{row['api_base']} (client {row['client']}): ~{est['limit']:.0f} requests per "
            f"{est['window']:g}s (known >= {est.get('lower', 0):.0f}, "
            f"< {'?' if upper is None else f'{upper:.0f}'}), learned {age / 60:.0f} min ago"
        )
        if quota_line:
            print(f"  quota: {quota_line}")


def _quota_lines(store: SQLiteStore | PostgresStore, rows: list[dict[str, Any]]) -> list[str]:
    """The learned quota of each row of ``rows`` ('' if none), also added to the row as
    ``quota``: the saved estimate and, if a budget is known, its status now."""
    from dataclasses import asdict

    from .quota import saved_line, saved_status

    now = time.time()
    artists = store.artist_counts().total
    rpa = store.requests_done() / artists if artists else None
    lines = []
    for row in rows:
        data = store.get_meta(f"quota:{row['client']}:{row['api_base']}")
        estimate, status = saved_status(data, now)
        if data is not None:
            row["quota"] = {
                "estimate": asdict(estimate),
                "status": None if status is None else asdict(status),
            }
        lines.append(saved_line(data, now, artists=artists, requests_per_artist=rpa))
    return lines


def _print_deadlines(rows: list[tuple[str, Any]], now: float) -> None:
    """One line per Retry-After deadline still running (``meta_items`` rows)."""
    for key, value in rows:
        deadline = RetryDeadline.from_json(value)
        if deadline is None or deadline.until <= now:
            continue
        _, client, api_base = key.split(":", 2)
        print(
            f"{api_base} (client {client}): {deadline.kind} Retry-After running until "
            f"{format_local(deadline.until)} local time ({deadline.until - now:.0f} s left; "
            f"met on GET {deadline.endpoint}): nothing is sent before then"
        )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _signal_exit(signum: int) -> int:
    codes = {int(signal.SIGTERM): EXIT_SIGTERM, int(signal.SIGHUP): EXIT_SIGHUP}
    return codes.get(signum, EXIT_SIGINT)


@contextlib.contextmanager
def _exit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind the stack as SIGINT does (KeyboardInterrupt), so that every
    ``finally`` runs (an export removes its temporary file); the exit code names the signal."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(_signal_exit(signum))

    caught = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, leave) for signum in caught}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _is_usage_error(exc: BaseException) -> bool:
    """A flag or argument error from Click (Typer bundles its own copy of Click's classes)."""
    return any(cls.__name__ == "UsageError" for cls in type(exc).__mro__)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: runs the Typer app and maps errors to one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="spotify-ingest", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = EXIT_SIGINT
    except MustWaitError as exc:
        if debug:
            traceback.print_exc()
        when = exc.resume_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        print(
            f"error: {str(exc).rstrip('. ')}. State is saved; run the same command again "
            f"after {when}.",
            file=sys.stderr,
        )
        code = EXIT_MUST_WAIT
    except SpotifyIngestError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = EXIT_SIGINT
    except Exception as exc:  # the last line of defence: one line, traceback with --debug
        if _is_usage_error(exc):
            ctx = getattr(exc, "ctx", None)
            where = (
                f"spotify-ingest {ctx.command_path.split(' ', 1)[-1]}" if ctx else "spotify-ingest"
            )
            message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
            print(f"error: {message} (see: {where} --help)", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"internal error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
