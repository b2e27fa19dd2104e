"""The fault matrix: one real ``spotify-ingest crawl`` process per fault, against the simulator.

The simulator is served by uvicorn in a thread of the test process (``harness.ServedSim``) so that
each test can read its ground truth directly and, where the simulator has no knob for a fault,
wrap it in a small ASGI middleware (``harness.Middleware``): a non-JSON 200, a 200 missing a
field, a 429 without Retry-After, a Retry-After of hours, an endpoint removed mid-run, one request
that always fails. Faults the simulator has knobs for use them (``fail_rate``, ``reset_rate``,
``truncate_rate``, ``latency_ms``, ``quota``, ``control``: limit, token endpoint down, revoked
tokens).

Every test ends in one of the two acceptable outcomes: the crawl goes on and finishes with every
artist of the uninterrupted reference crawl (nothing lost), or it stops cleanly with the
documented exit code, its state saved (no task left leased, the store consistent) and the same
command resumes it to the same end. The figures of each run (requests sent, lost, repeated, the
faults injected) go to ``build/reliability.json`` for RELIABILITY.md.

"Sent" counts every /v1 request that reached the server (the simulator's count, plus those the
middleware answered itself); "repeated" is sent minus what the fault-free reference crawl sent;
"lost" is reference artists missing at the end plus tasks given up (failed).
"""

from __future__ import annotations

import json
import random
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from spotify_ingest.sim.app import SimApp, SimConfig

from .conftest import Reference
from .harness import (
    CLI,
    JSON_HEADERS,
    SIM_CONFIG,
    DbState,
    Middleware,
    Results,
    Run,
    ServedSim,
    cli_env,
    consistency_problems,
    crawl_cmd,
    json_error,
    pass_time,
    read_db,
    run_cli,
    search_requests,
)

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]

#: The fault matrix's simulator: the reference catalog, a limit of 400 per 1 s window and 16
#: requests in flight, so each crawl takes ~5 s (the artists and search requests of a complete
#: crawl do not depend on the limit, so the reference crawl still applies).
FAULT_SIM: dict[str, Any] = {**SIM_CONFIG, "limit": 400}
FAULT_ARGS = ("--strategy", "search", "--concurrency", "16")


@dataclass
class Faulty:
    """A middleware whose behaviour tests set: ``at[n]`` runs before the n-th /v1 request,
    ``answer(scope, n)`` may answer a request, ``rewrite`` may change the simulator's answer."""

    sim: ServedSim | None = None
    at: dict[int, Callable[[ServedSim], None]] = field(default_factory=dict)
    answer: Callable[[dict[str, Any], int], Answer | None] | None = None
    rewrite: Callable[[dict[str, Any], int, list[tuple[bytes, bytes]], bytes], Answer] | None = None
    seen: int = 0
    mw: Middleware | None = None

    def wrap(self, app: SimApp) -> Middleware:
        # Without a rewrite the simulator keeps uvicorn's own send (its resets need the socket).
        self.mw = Middleware(
            app,
            on_request=self._on_request,
            on_response=self._on_response if self.rewrite is not None else None,
        )
        return self.mw

    def _on_request(self, scope: dict[str, Any]) -> Answer | None:
        self.seen += 1
        action = self.at.get(self.seen)
        if action is not None and self.sim is not None:
            action(self.sim)
        return self.answer(scope, self.seen) if self.answer is not None else None

    def _on_response(
        self, scope: dict[str, Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        if self.rewrite is None:
            return status, headers, body
        return self.rewrite(scope, status, headers, body)

    @property
    def answered(self) -> int:
        return self.mw.answered if self.mw else 0

    @property
    def rewritten(self) -> int:
        return self.mw.rewritten if self.mw else 0


@dataclass
class Outcome:
    runs: list[Run]
    state: DbState
    sim_stats: dict[str, Any]
    faulty: Faulty

    @property
    def last(self) -> Run:
        return self.runs[-1]

    @property
    def sent(self) -> int:
        by_endpoint = self.sim_stats["requests_by_endpoint"]
        answered = sum(int(v["total"]) for k, v in by_endpoint.items() if k.startswith("/v1"))
        return answered + self.faulty.answered

    def client(self, key: str) -> int:
        """A client counter summed over the runs that wrote their stats."""
        return sum(int(r.stats["client"][key]) for r in self.runs if r.stats)


def crawl(
    tmp_path: Path,
    *,
    knobs: dict[str, Any] | None = None,
    faulty: Faulty | None = None,
    args: tuple[str, ...] = FAULT_ARGS,
    env: dict[str, str] | None = None,
    runs: int = 1,
    between: Callable[[ServedSim, int], None] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 120.0,
) -> Outcome:
    """Run the same crawl command ``runs`` times (``between(sim, i)`` before run i > 0)."""
    faulty = faulty or Faulty()
    config = SimConfig(**{**FAULT_SIM, **(knobs or {})})
    db = tmp_path / "fault.db"
    done: list[Run] = []
    with ServedSim(config, faulty.wrap) as sim:
        faulty.sim = sim
        for i in range(runs):
            if i and between is not None:
                between(sim, i)
            stats = tmp_path / f"stats{i}.json"
            done.append(
                run_cli(
                    crawl_cmd(sim, db, *args, "--stats-json", str(stats)),
                    cwd=tmp_path,
                    env=cli_env(extra=env),
                    stats_json=stats,
                    timeout=timeout,
                    preexec_fn=preexec_fn if i == 0 else None,
                )
            )
        sim_stats = sim.stats()
    return Outcome(done, read_db(db), sim_stats, faulty)


def lost(out: Outcome, ref: Reference) -> int:
    return len(set(ref.state.artists) - set(out.state.artists)) + out.state.count(3)


def record(
    results: Results, key: str, fault: str, out: Outcome, ref: Reference, did: str, **extra: Any
) -> None:
    results.add(
        key,
        fault=fault,
        crawler_did=did,
        exit_codes=[r.code for r in out.runs],
        requests_sent=out.sent,
        requests_sent_reference=ref.requests_sent,
        requests_repeated=out.sent - ref.requests_sent,
        lost=lost(out, ref),
        artists=len(out.state.artists),
        artists_reference=len(ref.state.artists),
        tasks_failed=out.state.count(3),
        elapsed_s=round(sum(r.elapsed for r in out.runs), 1),
        **extra,
    )


def assert_finished_like_reference(out: Outcome, ref: Reference, *, superset: bool = False) -> None:
    """The crawl went on to the end: exit 0, "done", every reference artist, nothing left over."""
    assert out.last.code == 0, str(out.last)
    assert out.last.stdout.startswith("done:"), str(out.last)
    state = out.state
    assert consistency_problems(state) == []
    assert state.count(1) == 0, "tasks left leased"
    assert state.count(0, "search") == 0
    missing = set(ref.state.artists) - set(state.artists)
    assert not missing, f"{len(missing)} artists lost"
    if not superset:
        assert set(state.artists) == set(ref.state.artists)
    assert state.count(3) == 0, "tasks given up"
    assert set(search_requests(state)) == set(search_requests(ref.state))


def assert_client_counts_match_server(out: Outcome) -> None:
    """What the crawler says it sent is what the server saw (no request unaccounted for)."""
    for run in out.runs:
        assert run.stats is not None, str(run)
    assert out.client("requests") == out.sent


# ------------------------------------------------------------------------------------------------
# Faults the crawl must ride through


def test_5xx_on_5_percent(tmp_path: Path, reference: Reference, results: Results) -> None:
    out = crawl(tmp_path, knobs={"fail_rate": 0.05})
    injected = out.sim_stats["faults"].get("injected_5xx", 0)
    record(results, "fault_5xx", "5% of requests answered 500/502/503", out, reference,
           "retried with backoff inside the client's retry budget", injected=injected,
           retries=out.client("retries"))  # fmt: skip
    assert injected > 10
    assert out.client("retries") >= injected - out.client("budget_exhausted")
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)


def test_5xx_on_half_of_requests_then_faults_off_finds_every_artist(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    """Under a 50 % 5xx rate no task is given up: what outlasts the client's retries backs off
    and stays in the frontier. The next run, faults off, misses nothing of the catalog (the
    simulator's ground truth) that the fault-free reference crawl finds. No run says done while
    a task is failed or backing off."""
    catalog: set[str] = set()
    states: list[DbState] = []

    def faults_off(sim: ServedSim, i: int) -> None:
        states.append(read_db(tmp_path / "fault.db"))
        catalog.update(httpx.get(sim.base_url + "/__sim/catalog", timeout=10).text.split())
        sim.state.control({"fail_rate": 0.0})

    out = crawl(tmp_path, knobs={"fail_rate": 0.5}, args=(*FAULT_ARGS, "--duration", "20"),
                runs=2, between=faults_off)  # fmt: skip
    states.append(out.state)
    first = states[0]
    results.add(
        "fault_5xx_half",
        fault="50% of requests answered 500/502/503 for a 20 s run, then a run with faults off",
        crawler_did="no task given up: each backed off (durable not_before, doubling) and was "
        "retried later in the run and in the next one, which found every artist",
        exit_codes=[r.code for r in out.runs],
        requests_sent=out.sent,
        injected=out.sim_stats["faults"].get("injected_5xx", 0),
        backing_off_after_first_run=first.count(4),
        artists_after_first_run=len(first.artists),
        artists=len(out.state.artists),
        artists_catalog=len(catalog),
        artists_reference=len(reference.state.artists),
        lost=len(set(reference.state.artists) - set(out.state.artists)) + out.state.count(3),
        elapsed_s=round(sum(r.elapsed for r in out.runs), 1),
    )
    assert out.sim_stats["faults"].get("injected_5xx", 0) > 100
    for run, state in zip(out.runs, states, strict=True):
        assert run.code == 0, str(run)
        assert state.count(3) == 0, f"{state.count(3)} tasks given up: {run}"
        if run.stdout.startswith("done:"):
            assert state.count(4) == 0, f"done with {state.count(4)} tasks backing off: {run}"
    assert out.last.stdout.startswith("done:"), str(out.last)
    assert consistency_problems(out.state) == []
    missed = catalog - set(out.state.artists)
    missed_by_reference = catalog - set(reference.state.artists)
    assert missed == missed_by_reference, f"{len(missed)} of {len(catalog)} artists missed"


def test_connection_resets(tmp_path: Path, reference: Reference, results: Results) -> None:
    out = crawl(tmp_path, knobs={"reset_rate": 0.05})
    injected = out.sim_stats["faults"].get("resets", 0)
    record(results, "fault_resets", "5% of connections reset before any response", out,
           reference, "transport error, retried with backoff", injected=injected,
           transport_errors=out.client("transport_errors"))  # fmt: skip
    assert injected > 10
    assert out.client("transport_errors") == injected
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)


def test_read_timeouts_from_the_latency_tail(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    # Mean latency 20 ms; 1% of requests take 10x (~200 ms): over the 120 ms read timeout.
    out = crawl(tmp_path, knobs={"latency_ms": 20.0}, env={"SPOTIFY_READ_TIMEOUT": "0.12"})
    timeouts = out.client("transport_errors")
    record(results, "fault_read_timeouts", "latency 20 ms mean with a 1% 10x tail, read "
           "timeout 0.12 s (SPOTIFY_READ_TIMEOUT)", out, reference,
           "timed-out requests retried; the late answers count as sent",
           injected=timeouts)  # fmt: skip
    assert timeouts >= 1, "no request hit the read timeout: is SPOTIFY_READ_TIMEOUT applied?"
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)


def test_truncated_bodies(tmp_path: Path, reference: Reference, results: Results) -> None:
    out = crawl(tmp_path, knobs={"truncate_rate": 0.05})
    injected = out.sim_stats["faults"].get("truncated", 0)
    record(results, "fault_truncated", "5% of 200s with the JSON body cut short", out, reference,
           "detected (Content-Length / JSON EOF), retried", injected=injected,
           truncated_seen=out.client("truncated_bodies"))  # fmt: skip
    assert injected > 10
    assert out.client("truncated_bodies") == injected
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)


def _every_20th_200(
    change: Callable[[bytes], bytes],
) -> Callable[[dict[str, Any], int, list[tuple[bytes, bytes]], bytes], Answer]:
    """A rewrite that changes every 20th 200 answer of /v1/search (5%), seeded."""
    rng = random.Random(7)

    def rewrite(
        scope: dict[str, Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        if status == 200 and scope["path"].endswith("/search") and rng.random() < 0.05:
            return 200, headers, change(body)
        return status, headers, body

    return rewrite


def test_non_json_200_bodies(tmp_path: Path, reference: Reference, results: Results) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    faulty = Faulty(rewrite=_every_20th_200(lambda body: page))
    out = crawl(tmp_path, faulty=faulty)
    record(results, "fault_non_json", "5% of search 200s replaced by an HTML page (middleware)",
           out, reference, "BadResponseError; the task goes back and is retried, the crawl "
           "finishes", injected=faulty.rewritten)  # fmt: skip
    assert faulty.rewritten > 5
    assert out.last.code == 0  # the process itself never crashes
    assert_finished_like_reference(out, reference)


def test_200_with_a_missing_field(tmp_path: Path, reference: Reference, results: Results) -> None:
    def drop_total(body: bytes) -> bytes:
        data = json.loads(body)
        data["artists"].pop("total", None)
        return json.dumps(data).encode()

    faulty = Faulty(rewrite=_every_20th_200(drop_total))
    out = crawl(tmp_path, faulty=faulty)
    record(results, "fault_missing_field", "5% of search 200s without artists.total "
           "(middleware)", out, reference,
           "BadResponseError; the task goes back and is retried, the crawl finishes",
           injected=faulty.rewritten)  # fmt: skip
    assert faulty.rewritten > 5
    assert out.last.code == 0
    assert_finished_like_reference(out, reference)


def test_401_mid_run_tokens_revoked(tmp_path: Path, reference: Reference, results: Results) -> None:
    faulty = Faulty(
        at={150: lambda s: s.state.tokens.revoke(), 350: lambda s: s.state.tokens.revoke()}
    )
    out = crawl(tmp_path, faulty=faulty)
    tokens = out.sim_stats["tokens"]
    record(results, "fault_401", "every access token revoked twice mid-run (401s)", out,
           reference, "one single-flight token renewal per revocation, the 401ed requests "
           "replayed", injected=out.sim_stats["requests_by_status"].get("401", 0),
           token_requests=out.client("token_requests"))  # fmt: skip
    assert tokens["revoked"] >= 2 and tokens["issued"] == 3
    assert out.client("auth_replays") == out.sim_stats["requests_by_status"]["401"] > 0
    assert out.client("token_requests") == 3
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)


def test_token_endpoint_down_for_a_while(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    def outage(sim: ServedSim) -> None:
        sim.state.tokens.revoke()
        sim.state.control({"token_down_for": 2.0})

    out = crawl(tmp_path, faulty=Faulty(at={150: outage}))
    token_503 = out.sim_stats["requests_by_endpoint"]["/api/token"]["by_status"].get("503", 0)
    record(results, "fault_token_down", "tokens revoked and the token endpoint answering 503 "
           "for 2 s", out, reference, "token renewal retried with backoff; tasks whose "
           "renewal failed went back to pending and ran after the outage",
           injected=token_503, token_requests=out.client("token_requests"))  # fmt: skip
    assert token_503 > 0
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)


@dataclass
class TokenRefusal:
    """An ASGI layer: the token endpoint answers 400 ``invalid_request`` until ``until``
    (monotonic clock), then the simulator answers again."""

    app: Any
    until: float = 0.0
    refused: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        refuse = scope["type"] == "http" and scope["path"] == "/api/token"
        if not refuse or time.monotonic() >= self.until:
            await self.app(scope, receive, send)
            return
        self.refused += 1
        body = json.dumps({"error": "invalid_request", "error_description": "try later"}).encode()
        await send({"type": "http.response.start", "status": 400, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})


@dataclass
class RefusingTokens(Faulty):
    token: TokenRefusal | None = None

    def wrap(self, app: SimApp) -> TokenRefusal:  # type: ignore[override]
        self.token = TokenRefusal(super().wrap(app))
        return self.token

    def refuse_for(self, seconds: float) -> None:
        assert self.token is not None and self.sim is not None
        self.sim.state.tokens.revoke()
        self.token.until = time.monotonic() + seconds


def test_token_endpoint_refusing_renewals_for_a_while(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    """Tokens revoked, and the token endpoint answering 400 for 2 s: the tasks whose token
    renewal was refused are not failed (the answer is not about them); they back off and run."""
    faulty = RefusingTokens()
    faulty.at = {150: lambda s: faulty.refuse_for(2.0)}
    out = crawl(tmp_path, faulty=faulty)
    refused = faulty.token.refused if faulty.token else 0
    record(results, "fault_token_400", "tokens revoked and the token endpoint answering 400 "
           "for 2 s", out, reference, "tasks whose token renewal was refused backed off (no "
           "attempt counted) and ran once tokens came again", injected=refused)  # fmt: skip
    assert refused > 0
    # each of the 16 workers pauses half a window (0.5 s) per refusal: ~64 in 2 s, not one
    # request per pending task (900 when the workers went straight on to the next task)
    assert refused <= 100, f"{refused} token requests in a 2 s refusal"
    assert_finished_like_reference(out, reference)


def test_limit_drops_suddenly(tmp_path: Path, reference: Reference, results: Results) -> None:
    faulty = Faulty(at={550: lambda s: s.state.control({"limit": 50})})
    out = crawl(tmp_path, faulty=faulty)
    rejected = out.sim_stats["rejected_429"]
    record(results, "fault_limit_drop", "hidden limit 400 -> 50 per 1 s window after 550 "
           "requests", out, reference,
           "429s paused every worker, the controller learned the lower limit",
           injected=rejected, replays=out.client("replays"),
           limit_learned=(out.last.stats or {}).get("rate_estimate", {}).get("limit"))  # fmt: skip
    assert out.sim_stats["limit"] == 50
    assert out.client("replays") == rejected
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)
    learned = (out.last.stats or {})["rate_estimate"]["limit"]
    assert learned <= 60, f"learned {learned}/window after the limit fell to 50"


def test_429_without_retry_after(tmp_path: Path, reference: Reference, results: Results) -> None:
    def strip(
        scope: dict[str, Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        if status == 429:
            headers = [(k, v) for k, v in headers if k.lower() != b"retry-after"]
        return status, headers, body

    faulty = Faulty(at={550: lambda s: s.state.control({"limit": 50})}, rewrite=strip)
    out = crawl(tmp_path, faulty=faulty)
    rejected = out.sim_stats["rejected_429"]
    record(results, "fault_429_no_retry_after", "429s without Retry-After (middleware), limit "
           "400 -> 50 after 550 requests", out, reference, "paused on its own estimate, replayed",
           injected=rejected)  # fmt: skip
    assert rejected > 0 and faulty.rewritten == rejected
    assert_client_counts_match_server(out)
    assert_finished_like_reference(out, reference)


# ------------------------------------------------------------------------------------------------
# Faults that must stop the crawl cleanly, state saved, resumable


def assert_stopped_cleanly(run: Run, code: int, state: DbState, *words: str) -> None:
    assert run.code == code, str(run)
    lines = run.error_lines()
    assert len(lines) == 1 and lines[0].startswith("error: "), str(run)
    assert "Traceback" not in run.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert state.count(1) == 0, "tasks left leased"
    assert consistency_problems(state) == []


def test_retry_after_of_hours_exits_75_and_resumes(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    switch = {"on": True}

    def long_429(scope: dict[str, Any], n: int) -> Answer | None:
        if switch["on"] and n >= 150:
            return (
                429,
                [*JSON_HEADERS, (b"retry-after", b"10800")],
                json_error(429, "API rate limit exceeded"),
            )
        return None

    stopped: list[DbState] = []

    def later(sim: ServedSim, i: int) -> None:  # three hours later: the API answers again
        stopped.append(read_db(tmp_path / "fault.db"))
        switch["on"] = False
        pass_time(tmp_path / "fault.db", 10_800.0)

    # A Retry-After of hours is taken for a quota lockout: each later run sends at most what the
    # 3 hours before it allowed, then exits 75 until the next 3 hours have passed (pass_time).
    out = crawl(tmp_path, faulty=Faulty(answer=long_429), runs=7, between=later)
    first = out.runs[0]
    record(results, "fault_retry_after_hours", "429 with Retry-After: 10800 (3 h; middleware)",
           out, reference, "exit 75 at once with the resume time, state saved; taken for a "
           "quota of the calls the 3 h before it held: each later run (3 h apart) sent at most "
           "that many, then exited 75; the same command finished the crawl",
           injected=out.faulty.answered,
           exits=[run.code for run in out.runs])  # fmt: skip
    assert_stopped_cleanly(first, 75, stopped[0], "10800", "run the same command again after")
    # Only the requests already in flight (16) met the 429; nothing was sent after it.
    assert out.faulty.answered <= 16 + 1, "it kept sending into a 3-hour Retry-After"
    budget = first.stats["requests"] - out.faulty.answered
    for run in out.runs[1:]:
        assert run.code in (0, 75), str(run)
        assert run.stats is None or run.stats["requests"] <= budget, "over the learned quota"
    assert_finished_like_reference(out, reference)


def test_quota_exceeded_exits_75_then_wait_resumes(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    stopped: list[DbState] = []

    def later(sim: ServedSim, i: int) -> None:  # the period ends: the quota is back
        stopped.append(read_db(tmp_path / "fault.db"))
        limiter, now = sim.state.limiter, sim.state.clock.now()
        time.sleep(limiter.quota_period - (now - limiter.origin) % limiter.quota_period + 0.05)

    out = crawl(tmp_path, knobs={"quota": 350, "quota_period": 8.0}, runs=2, between=later)
    record(results, "fault_quota", "QUOTA_EXCEEDED after 350 requests per 8 s period", out,
           reference, "exit 75 with the resume time, state saved; the next run continued",
           injected=out.sim_stats["rejected_quota"])  # fmt: skip
    assert_stopped_cleanly(out.runs[0], 75, stopped[0], "quota")
    assert out.sim_stats["rejected_quota"] >= 1
    if out.last.code == 75:  # the second period ran out too: a third run, waiting this time
        pytest.fail(f"second run stopped on the quota again:\n{out.last}")
    assert_finished_like_reference(out, reference)


def test_quota_with_wait_counts_down_and_finishes(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    out = crawl(tmp_path, knobs={"quota": 200, "quota_period": 2.0},
                args=(*FAULT_ARGS, "--wait"))  # fmt: skip
    record(results, "fault_quota_wait", "QUOTA_EXCEEDED every 200 requests (2 s period), "
           "crawl run with --wait", out, reference, "waited out each quota period, finished",
           injected=out.sim_stats["rejected_quota"])  # fmt: skip
    assert out.sim_stats["rejected_quota"] >= 1
    assert_finished_like_reference(out, reference)


def test_endpoint_removed_mid_run_crawl_goes_on(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    def removed(scope: dict[str, Any], n: int) -> Answer | None:
        path = scope["path"]
        if n < 150:
            return None
        if path.startswith("/v1/artists/") and path.endswith("/albums"):
            return 403, JSON_HEADERS, json_error(403, "Forbidden.")
        if path.startswith("/v1/albums"):
            return 404, JSON_HEADERS, json_error(404, "Service not found")
        return None

    out = crawl(
        tmp_path, faulty=Faulty(answer=removed), args=("--strategy", "auto", "--concurrency", "16")
    )
    caps = json.loads(out.state.meta["capabilities"])["available"]
    record(results, "fault_endpoint_removed", "artist albums (403) and albums (404 Service not "
           "found) removed after 150 requests (middleware)", out, reference,
           "marked both unavailable, parked their tasks (pending), went on with search",
           injected=out.faulty.answered)  # fmt: skip
    assert out.faulty.answered >= 1
    assert caps["artist_albums"] is False and caps["album"] is False
    # At most the requests in flight when each endpoint went away (16 each), and the probes.
    assert out.faulty.answered <= 2 * 16 + 4, "kept calling removed endpoints"
    assert_finished_like_reference(out, reference, superset=True)


def test_disk_full_mid_run_exits_4_and_resumes(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    """The database's disk fills up mid-run. As root, permissions cannot make a file read-only,
    so the crawl process gets RLIMIT_FSIZE = 1.5 MB (applies to root too; Python ignores SIGXFSZ,
    so the write fails with EFBIG as on a full disk); the WAL reaches it after a few hundred
    commits. The next run, without the limit, resumes."""
    size = 1_500_000

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    stopped: list[DbState] = []

    def later(sim: ServedSim, i: int) -> None:
        stopped.append(read_db(tmp_path / "fault.db"))

    out = crawl(tmp_path, preexec_fn=small_disk, runs=2, between=later)
    first = out.runs[0]
    record(results, "fault_disk_full", "database disk full mid-run (RLIMIT_FSIZE 1.5 MB on the "
           "crawl process)", out, reference, "exit 4 with one line; the commit in flight rolled "
           "back, leased tasks recovered by the next run, which finished",
           artists_at_stop=len(stopped[0].artists))  # fmt: skip
    assert first.code == 4, str(first)
    lines = first.error_lines()
    assert len(lines) == 1 and "disk" in lines[0] and "Traceback" not in first.stderr, str(first)
    assert stopped[0].integrity == "ok" and consistency_problems(stopped[0]) == []
    assert 0 < len(stopped[0].artists) < len(reference.state.artists), "not mid-run"
    assert_finished_like_reference(out, reference)


def search_x_answers_500(broken: list[bool]) -> Callable[[dict[str, Any], int], Answer | None]:
    """A middleware answer: 500 to the first page of the search for "x" while ``broken[0]``."""

    def answer(scope: dict[str, Any], n: int) -> Answer | None:
        qs = parse_qs(scope.get("query_string", b"").decode())
        stuck = qs.get("q") == ["x"] and qs.get("offset") == ["0"]
        if broken[0] and scope["path"].endswith("/search") and stuck:
            return 500, JSON_HEADERS, json_error(500, "Server error.")
        return None

    return answer


def test_one_request_that_keeps_failing_backs_off_and_is_never_given_up(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    """One search request is answered 500 every time: the crawl does everything else, then waits
    for that task's next retry (saying so) instead of giving it up or saying done, until
    --duration stops it. The next run, the fault gone, asks for it again and finishes."""
    broken = [True]
    stopped: list[DbState] = []

    def repaired(sim: ServedSim, i: int) -> None:
        stopped.append(read_db(tmp_path / "fault.db"))
        broken[0] = False

    out = crawl(tmp_path, faulty=Faulty(answer=search_x_answers_500(broken)), runs=2,
                between=repaired,
                args=(*FAULT_ARGS, "--duration", "12"))  # fmt: skip
    first = out.runs[0]
    key = next(k for k in stopped[0].keys(None, "search") if '"q":"x"' in k and '"offset":0' in k)
    record(results, "fault_permanent_5xx", "one search request always answered 500 "
           "(middleware), then repaired", out, reference, "never given up: it backed off, "
           "doubling; the crawl waited for its retry (shown) instead of saying done, stopped on "
           "--duration 12, and the next run finished it", injected=out.faulty.answered,
           state_at_stop=next(s for _, k, s, _ in stopped[0].tasks if k == key))  # fmt: skip
    assert first.code == 0 and first.stdout.startswith("duration:"), str(first)
    assert "next retry in" in first.stderr, str(first)
    assert out.faulty.answered >= 3, "not retried within the run"
    assert stopped[0].count(3) == 0 and key not in stopped[0].keys(2)
    assert_finished_like_reference(out, reference)


def test_sigterm_while_waiting_for_a_backing_off_task_stops_within_2_s(
    tmp_path: Path, results: Results
) -> None:
    """Only a task that keeps failing is left: the crawl waits for its retry, and SIGTERM ends
    that wait at once (nothing is in flight), with the task kept for the next run."""
    faulty = Faulty(answer=search_x_answers_500([True]))
    db = tmp_path / "fault.db"
    err_path = tmp_path / "crawl.err"
    with ServedSim(SimConfig(**FAULT_SIM), faulty.wrap) as sim, err_path.open("w") as err:
        faulty.sim = sim
        proc = subprocess.Popen(crawl_cmd(sim, db, *FAULT_ARGS), cwd=tmp_path, env=cli_env(),
                                stdout=err, stderr=err, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "next retry in" not in err_path.read_text() and proc.poll() is None:
                assert time.monotonic() < deadline, "never waited for the retry"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            code = proc.wait(30)
            took = time.monotonic() - sent_at
        finally:
            if proc.poll() is None:
                proc.kill()
    state = read_db(db)
    results.add(
        "fault_sigterm_in_retry_wait",
        fault="SIGTERM while only a backing-off task (always answered 500) is left",
        crawler_did=f"exit {code} after {took:.2f} s; the task kept for the next run",
        exit_codes=[code],
        stopped_in_s=round(took, 2),
        lost=state.count(3),
    )
    assert code == 143, err_path.read_text()
    assert took < 2.0, f"stopped {took:.1f} s after SIGTERM"
    assert state.count(1) == 0 and state.count(3) == 0 and consistency_problems(state) == []
    assert json.loads(state.meta["last_report"])["stop_reason"] == "terminated"


def test_api_unreachable_at_start_is_an_error_not_done(tmp_path: Path, results: Results) -> None:
    with socket.socket() as placeholder:  # a loopback port where nothing listens
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    run = run_cli(
        [*CLI, "crawl", "--db", str(tmp_path / "dead.db"), "--api-base", base + "/v1",
         "--token-url", base + "/api/token", "--window", "1", "--no-answer-timeout", "2"],
        cwd=tmp_path,
    )  # fmt: skip
    results.add(
        "fault_api_unreachable",
        fault="nothing listening at --api-base / --token-url",
        crawler_did=f"exit {run.code}: {(run.error_lines() or [''])[-1][:120]}",
        exit_codes=[run.code],
        requests_sent=0,
        lost=0,
    )
    assert run.code == 69, str(run)
    errors = [line for line in run.error_lines() if "the API is not answering" not in line]
    assert len(errors) == 1, str(run)
