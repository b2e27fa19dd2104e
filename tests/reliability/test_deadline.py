"""The server's Retry-After outlives the process that met it; every wait is visible and stoppable.

Each test runs the real ``spotify-ingest crawl`` in a child process against the simulator:

* the kill loop: SIGKILL a crawl while it is paused on a 429 and restart it at once, 10 times,
  against a penalty that doubles on any early request (no grace); the simulator's log of the
  requests that arrived during a block is the ground truth;
* a first request that meets a Retry-After of 600 s: ``--duration`` and ``--max-wait`` bound it,
  and the wait is named from its first second; a restart honours the stored deadline without a
  request; ``limits`` shows it;
* SIGTERM during each wait (a deadline from an earlier run, the token fetch, the endpoint probe,
  a 429 pause mid-crawl, a quota wait) ends the crawl within 2 s with exit 143 and state saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotify_ingest.sim.app import SimConfig

from .conftest import Reference
from .harness import (
    CLI,
    JSON_HEADERS,
    SIM_ARGS,
    SIM_CONFIG,
    Middleware,
    Results,
    ServedSim,
    SimProcess,
    cli_env,
    crawl_cmd,
    json_error,
    kill_while_paused,
    read_db,
    run_cli,
    stored_deadline,
)

#: What a stop may take, from the signal to the exit.
STOP_BOUND = 2.0


@dataclass
class Watched:
    """A crawl in a child process whose stderr lines are kept with the time they arrived."""

    proc: subprocess.Popen[str]
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float = 30.0) -> float:
        """The time the first stderr line containing ``text`` arrived."""
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            for at, line in list(self.lines):
                if text in line:
                    return at
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the last lines
                break
            time.sleep(0.01)
        for at, line in list(self.lines):
            if text in line:
                return at
        raise AssertionError(f"no line with {text!r}; stderr:\n{self.stderr}")

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds from the signal to the exit."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        return code, time.monotonic() - sent

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)


@contextlib.contextmanager
def watched(cmd: list[str], cwd: Path) -> Iterator[Watched]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    w = Watched(proc, time.monotonic())
    drain = threading.Thread(target=w._drain, daemon=True)
    drain.start()
    try:
        yield w
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        drain.join(5)


class Refusing:
    """Answers every /v1 request after the first ``after`` with a 429 (``retry_after`` s, or the
    quota's reason), counting them; the others reach the simulator."""

    def __init__(self, retry_after: int, *, after: int = 0, quota: bool = False) -> None:
        self.retry_after = retry_after
        self.after = after
        self.quota = quota
        self.seen = 0
        self.refused_at: list[float] = []  # monotonic times of the 429s given

    def wrap(self, app: Any) -> Middleware:
        return Middleware(app, on_request=self._answer)

    def _answer(self, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        self.seen += 1
        if self.seen <= self.after:
            return None
        self.refused_at.append(time.monotonic())
        extra = {"reason": "QUOTA_EXCEEDED"} if self.quota else {}
        headers = [*JSON_HEADERS, (b"retry-after", str(self.retry_after).encode())]
        return 429, headers, json_error(429, "API rate limit exceeded", **extra)


def _cmd(sim: Any, db: Path, *args: str) -> list[str]:
    return crawl_cmd(sim, db, "--strategy", "search", "--concurrency", "4", *args)


def _assert_stopped_with_state_saved(db: Path, reason: str) -> None:
    state = read_db(db)
    assert state.count(1) == 0, "tasks left leased"
    assert json.loads(state.meta["last_report"])["stop_reason"] == reason


# ------------------------------------------------------------------------------------------------
# The kill loop


def test_sigkill_while_paused_ten_times_never_sends_into_the_ban(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    """Against a penalty that doubles on every early request (no grace): SIGKILL while paused on
    a 429, restart at once, 10 times; no request lands in a block after its first second, the
    penalty never doubles, and the last run ends with the reference's artists."""
    db = tmp_path / "kill.db"
    # One request in flight: the cold ramp's overshoot then has no requests that left before the
    # first 429 came back, so each one the simulator sees inside a block was sent after it.
    with SimProcess(*SIM_ARGS[:-1], "40", "--escalation-grace", "0") as sim:
        cmd = crawl_cmd(sim, db, "--strategy", "search", "--concurrency", "1")
        started = time.monotonic()
        # A restart starts from the limit its predecessor learned (saved at the first 429), so
        # it meets a 429 again only if the limit drops: each restart finds it lower.
        limits = [40, 36, 32, 29, 26, 23, 21, 19, 17, 15]
        killed = kill_while_paused(
            cmd,
            cwd=tmp_path,
            kills=len(limits),
            pause_marker=lambda: stored_deadline(db),
            before_start=lambda i: sim.control(limit=limits[i]),
        )
        sim.control(limit=40)
        final = run_cli(cmd, cwd=tmp_path)
        elapsed = time.monotonic() - started
        stats = sim.stats()
    assert final.code == 0, str(final)
    late = [a for a in stats["blocked_arrivals"] if a["into_block_s"] > 1.0]
    assert late == [], f"requests sent into a running Retry-After: {late}"
    assert stats["escalations"] == 0
    assert read_db(db).artist_ids == reference.state.artist_ids
    results.add(
        "deadline_kill_loop",
        fault="SIGKILL while paused on a 429, restarted at once, 10 times (no escalation grace)",
        kills=len(killed),
        retry_after_s=[round(k["until"] - k["learned_at"], 2) for k in killed],
        rejected_429=stats["rejected_429"],
        blocked_arrivals=len(stats["blocked_arrivals"]),
        escalations=stats["escalations"],
        seconds=round(elapsed, 1),
    )


# ------------------------------------------------------------------------------------------------
# A long Retry-After at the first request


def test_retry_after_600_with_duration_30_stops_in_time_and_names_the_wait(
    tmp_path: Path, results: Results
) -> None:
    db = tmp_path / "long.db"
    refusing = Refusing(600)
    with (
        ServedSim(SimConfig(**SIM_CONFIG), wrap=refusing.wrap) as sim,
        watched(_cmd(sim, db, "--duration", "30"), tmp_path) as crawl,
    ):
        shown = crawl.wait_for("waiting for Spotify's Retry-After until")
        code = crawl.proc.wait(60)
        elapsed = time.monotonic() - crawl.started
    assert refusing.refused_at, "no request met the 429"
    named_after = shown - refusing.refused_at[0]
    results.add(
        "deadline_retry_after_600_duration_30",
        exit=code,
        seconds=round(elapsed, 1),
        wait_named_after_s=round(named_after, 2),
        refused=len(refusing.refused_at),
    )
    assert code == 0, crawl.stderr
    assert named_after <= 1.0
    assert elapsed <= 32.0, f"stopped after {elapsed:.1f} s"
    assert len(refusing.refused_at) <= 4, "it sent into the Retry-After"
    _assert_stopped_with_state_saved(db, "duration")


def test_retry_after_600_with_max_wait_60_exits_75_and_a_restart_sends_nothing(
    tmp_path: Path, results: Results
) -> None:
    db = tmp_path / "long.db"
    refusing = Refusing(600)
    with ServedSim(SimConfig(**SIM_CONFIG), wrap=refusing.wrap) as sim:
        cmd = _cmd(sim, db, "--max-wait", "60")
        started = time.monotonic()
        first = run_cli(cmd, cwd=tmp_path)
        assert first.code == 75, str(first)
        assert refusing.refused_at
        exit_after_429 = started + first.elapsed - refusing.refused_at[0]
        assert exit_after_429 <= 2.0
        deadline = stored_deadline(db)
        assert deadline is not None and deadline["kind"] == "rate"
        assert 598 <= deadline["until"] - deadline["learned_at"] <= 601
        sent, tokens = refusing.seen, sim.stats()["tokens"]["issued"]
        again = run_cli(cmd, cwd=tmp_path)
        limits = run_cli([*CLI, "limits", "--db", str(db)], cwd=tmp_path)
        after_tokens = sim.stats()["tokens"]["issued"]
    results.add(
        "deadline_retry_after_600_max_wait_60",
        exit=first.code,
        seconds=round(first.elapsed, 2),
        exit_after_429_s=round(exit_after_429, 2),
        restart_exit=again.code,
        restart_seconds=round(again.elapsed, 2),
        restart_sent=refusing.seen - sent,
    )
    assert again.code == 75, str(again)
    assert again.error_lines()[-1].startswith("error: Spotify's Retry-After"), again.stderr
    assert "run the same command again after" in again.stderr
    assert refusing.seen == sent and after_tokens == tokens, "the restart sent a request"
    assert limits.code == 0 and "rate Retry-After running until" in limits.stdout, str(limits)


# ------------------------------------------------------------------------------------------------
# SIGTERM during each wait


def _terminate_during(crawl: Watched, shown: str, results: Results, wait: str) -> None:
    crawl.wait_for(shown)
    time.sleep(0.5)  # well inside the wait
    assert crawl.proc.poll() is None, crawl.stderr
    code, took = crawl.terminate()
    results.add(f"deadline_sigterm_{wait}", wait=wait, exit=code, stopped_in_s=round(took, 2))
    assert code == 143, f"exit {code}\n{crawl.stderr}"
    assert took <= STOP_BOUND, f"SIGTERM took {took:.1f} s\n{crawl.stderr}"
    assert "Traceback" not in crawl.stderr


def test_sigterm_while_waiting_out_a_deadline_of_an_earlier_run(
    tmp_path: Path, results: Results
) -> None:
    db = tmp_path / "earlier.db"
    refusing = Refusing(600)
    with ServedSim(SimConfig(**SIM_CONFIG), wrap=refusing.wrap) as sim:
        assert run_cli(_cmd(sim, db, "--max-wait", "60"), cwd=tmp_path).code == 75
        sent = refusing.seen
        with watched(_cmd(sim, db, "--wait"), tmp_path) as crawl:
            _terminate_during(crawl, "(learned by an earlier run)", results, "earlier_deadline")
    assert refusing.seen == sent, "it sent a request into the stored Retry-After"
    _assert_stopped_with_state_saved(db, "terminated")


def _silent_token_endpoint(app: Any) -> Any:
    """The simulator behind a token endpoint that never answers (until the client goes away)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/token":
            await app(scope, receive, send)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                while (await receive())["type"] != "http.disconnect":
                    pass

    return wrapped


def test_sigterm_while_fetching_a_token(tmp_path: Path, results: Results) -> None:
    db = tmp_path / "token.db"
    with (
        ServedSim(SimConfig(**SIM_CONFIG), wrap=_silent_token_endpoint) as sim,
        watched(_cmd(sim, db), tmp_path) as crawl,
    ):
        _terminate_during(crawl, "fetching a token", results, "token")
    _assert_stopped_with_state_saved(db, "terminated")


def test_sigterm_while_probing_endpoints(tmp_path: Path, results: Results) -> None:
    db = tmp_path / "probe.db"
    with ServedSim(SimConfig(**SIM_CONFIG)) as sim:
        # A 60 s window: the cold start paces the probe's requests seconds apart.
        cmd = [*_cmd(sim, db), "--window", "60"]
        with watched(cmd, tmp_path) as crawl:
            _terminate_during(crawl, "probing endpoints", results, "probe")
    _assert_stopped_with_state_saved(db, "terminated")


def test_sigterm_during_a_429_pause_mid_crawl(tmp_path: Path, results: Results) -> None:
    db = tmp_path / "pause.db"
    refusing = Refusing(600, after=60)
    with (
        ServedSim(SimConfig(**SIM_CONFIG), wrap=refusing.wrap) as sim,
        watched(_cmd(sim, db), tmp_path) as crawl,
    ):
        _terminate_during(crawl, "waiting for Spotify's Retry-After until", results, "pause")
    _assert_stopped_with_state_saved(db, "terminated")
    assert len(refusing.refused_at) <= 4


def test_sigterm_during_a_quota_wait(tmp_path: Path, results: Results) -> None:
    db = tmp_path / "quota.db"
    refusing = Refusing(600, after=60, quota=True)
    with (
        ServedSim(SimConfig(**SIM_CONFIG), wrap=refusing.wrap) as sim,
        watched(_cmd(sim, db, "--wait"), tmp_path) as crawl,
    ):
        _terminate_during(crawl, "waiting for Spotify's quota to refill until", results, "quota")
    _assert_stopped_with_state_saved(db, "terminated")
