"""``spotify-ingest sim serve``: run the Spotify Web API simulator from the command line.

A Typer sub-app (``sim_app``) that the main CLI mounts with ``app.add_typer(sim_app, name="sim")``;
also runnable alone: ``python -m spotify_ingest.sim.cli serve --port 8765``.

Bad flags raise ``typer.BadParameter`` (Click prints the usage and a one-line error, exit 2); a
port already in use prints one line and exits 2 (``UsageError``'s exit code).
"""

from __future__ import annotations

from typing import Annotated

import typer

from spotify_ingest.errors import SpotifyIngestError

from .app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, OFFSET_RULES, SimConfig
from .profiles import DEFAULT_PROFILE, ENDPOINTS, PROFILES
from .ratelimit import Algorithm, parse_limit_schedule
from .server import serve as serve_simulator

__all__ = ["main", "sim_app"]

sim_app = typer.Typer(
    name="sim",
    help="The offline Spotify Web API simulator (no credentials, no internet).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click errors: the error is one line, not a wrapped box
)


def _check_profile(value: str) -> str:
    if value not in PROFILES:
        raise typer.BadParameter(f"unknown profile {value!r}: use one of {', '.join(PROFILES)}")
    return value


def _check_algorithm(value: str) -> str:
    try:
        return Algorithm(value).value
    except ValueError:
        known = ", ".join(a.value for a in Algorithm)
        raise typer.BadParameter(f"unknown algorithm {value!r}: use one of {known}") from None


def _check_offset_rule(value: str) -> str:
    if value not in OFFSET_RULES:
        known = ", ".join(OFFSET_RULES)
        raise typer.BadParameter(f"unknown offset rule {value!r}: use one of {known}")
    return value


def _check_schedule(value: str) -> str:
    try:
        parse_limit_schedule(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _parse_endpoint_limits(values: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for raw in values or []:
        key, sep, number = raw.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1:
            raise typer.BadParameter(
                f"bad endpoint limit {raw!r}: expected ENDPOINT=N, e.g. search=50",
                param_hint="--endpoint-limit",
            )
        out[key.strip()] = int(number)
    return out


@sim_app.callback()
def _sim() -> None:
    """The offline Spotify Web API simulator (no credentials, no internet)."""


@sim_app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free).")] = 8765,
    artists: Annotated[int, typer.Option(min=1, help="Artists in the catalog.")] = 20000,
    seed: Annotated[int, typer.Option(help="Seed of the catalog, limit, tokens and faults.")] = 0,
    profile: Annotated[
        str,
        typer.Option(
            callback=_check_profile, help="Access profile: extended, dev-2024 or dev-2026."
        ),
    ] = DEFAULT_PROFILE,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1, help="Hidden limit per window (default: drawn from the seed, 100-300)."
        ),
    ] = None,
    window: Annotated[float, typer.Option(min=0.001, help="Rolling window in seconds.")] = 30.0,
    algorithm: Annotated[
        str,
        typer.Option(callback=_check_algorithm, help="Window algorithm: sliding, fixed or token."),
    ] = "sliding",
    no_rate_limit: Annotated[
        bool, typer.Option("--no-rate-limit", help="Turn every limit off (server benchmarks).")
    ] = False,
    latency_ms: Annotated[
        float,
        typer.Option(min=0.0, help="Mean response latency in ms (lognormal + rare 10x tail)."),
    ] = 0.0,
    fail_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests answered 500/502/503.")
    ] = 0.0,
    reset_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of connections reset without answer.")
    ] = 0.0,
    truncate_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of 200s with a truncated JSON body.")
    ] = 0.0,
    token_ttl: Annotated[
        float, typer.Option(min=0.001, help="Access token lifetime in seconds.")
    ] = 3600.0,
    quota: Annotated[
        int | None, typer.Option(min=1, help="Accepted requests per quota period (default: none).")
    ] = None,
    quota_period: Annotated[
        float, typer.Option(min=0.001, help="Quota period in seconds.")
    ] = 86400.0,
    limit_schedule: Annotated[
        str,
        typer.Option(
            callback=_check_schedule,
            help="Limit changes over time: T:V,... with V an integer, half, double or xF "
            "(e.g. 120:half,240:double or 60:50,120:200); T in seconds since start.",
        ),
    ] = "",
    penalty_cap: Annotated[
        float, typer.Option(min=1.0, help="Longest Retry-After an escalating client can earn (s).")
    ] = 86400.0,
    escalation_grace: Annotated[
        float,
        typer.Option(min=0.0, help="Requests this soon after a 429 get it again, not doubled (s)."),
    ] = 1.0,
    endpoint_limit: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra per-endpoint bucket ENDPOINT=N (repeatable), e.g. search=50; endpoints: "
            + ", ".join(e.key for e in ENDPOINTS)
            + "."
        ),
    ] = None,
    time_scale: Annotated[
        float,
        typer.Option(
            min=0.001, help="Simulator seconds per real second (30: a 30-minute crawl in a minute)."
        ),
    ] = 1.0,
    offset_rule: Annotated[
        str,
        typer.Option(
            callback=_check_offset_rule,
            help="Search pages served: offset (offset <= 1000) or offset+limit "
            "(offset + limit <= 1000); 400 past it.",
        ),
    ] = "offset",
    client_id: Annotated[str, typer.Option(help="Accepted client id.")] = DEMO_CLIENT_ID,
    client_secret: Annotated[
        str, typer.Option(help="Accepted client secret.")
    ] = DEMO_CLIENT_SECRET,
) -> None:
    """Serve the simulated Spotify Web API over HTTP until Ctrl-C."""
    config = SimConfig(
        artists=artists,
        seed=seed,
        profile=profile,
        limit=limit,
        window=window,
        algorithm=algorithm,
        rate_limit=not no_rate_limit,
        latency_ms=latency_ms,
        fail_rate=fail_rate,
        reset_rate=reset_rate,
        truncate_rate=truncate_rate,
        token_ttl=token_ttl,
        quota=quota,
        quota_period=quota_period,
        limit_schedule=limit_schedule,
        penalty_cap=penalty_cap,
        escalation_grace=escalation_grace,
        endpoint_limits=_parse_endpoint_limits(endpoint_limit),
        client_id=client_id,
        client_secret=client_secret,
        time_scale=time_scale,
        offset_rule=offset_rule,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        serve_simulator(config, host, port, announce=typer.echo)
    except SpotifyIngestError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def main() -> None:
    """Entry point of ``python -m spotify_ingest.sim.cli``."""
    sim_app(prog_name="spotify-ingest sim")


if __name__ == "__main__":
    main()
