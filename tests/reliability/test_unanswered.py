"""An API that does not answer at all: the crawl says so at once, counts its tries, stops on a
signal within 2 s and exits 69 within a minute.

Two silences, each a real ``spotify-ingest crawl`` process with default settings (no timeout
flag): a loopback port where nothing listens (every connection refused) and a small socket server
that accepts every connection and never sends a byte (every try ends in the read timeout). Each
line the crawl writes to stderr is stamped with the time it arrived; the silent server stamps the
connections it accepts, so "said so within 2 s of the first try" is measured from the first try.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from spotify_ingest.sim.app import SimApp, SimConfig

from .conftest import Reference
from .harness import CLI, SIM_CONFIG, Results, ServedSim, cli_env, crawl_cmd, read_db, run_cli
from .test_faults import (
    FAULT_ARGS,
    FAULT_SIM,
    Faulty,
    assert_finished_like_reference,
    crawl,
    record,
)

NOT_ANSWERING = "the API is not answering"
#: What the issue allows: visible within 2 s, exit 69 within 60 s, stopped within 2 s of SIGTERM.
VISIBLE_WITHIN = 2.0
EXIT_WITHIN = 60.0
STOP_WITHIN = 2.0


class SilentServer:
    """Accepts every connection on a loopback port and never answers (nor closes)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[float] = []  # monotonic time of each accepted connection
        self._held: list[socket.socket] = []
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while self._running:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(time.monotonic())
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()


@dataclass
class Watched:
    """A crawl process whose stderr lines are stamped with their arrival time."""

    proc: subprocess.Popen[str]
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def first(self, text: str, timeout: float) -> float | None:
        """When the first line containing ``text`` arrived (waiting up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if text in line:
                    return at
            if self.proc.poll() is not None and not self._reader.is_alive():
                return None
            time.sleep(0.02)
        return None

    def wait(self, timeout: float) -> float:
        """The process's exit, in seconds after it started (it is killed after ``timeout``)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        ended = time.monotonic() - self.started
        self._reader.join(5)
        return ended

    def terminate(self) -> float:
        """SIGTERM, half a second into the wait that was reported; seconds until it exited."""
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        self.wait(STOP_WITHIN + 10)
        return time.monotonic() - signalled

    def text(self) -> str:
        return "\n".join(f"{at - self.started:6.2f} {line}" for at, line in self.lines)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


@pytest.fixture
def crawl_against(tmp_path: Path) -> Iterator[Callable[..., Watched]]:
    started: list[Watched] = []

    def start(
        port: int, *args: str, token_url: str | None = None, env: dict[str, str] | None = None
    ) -> Watched:
        base = f"http://127.0.0.1:{port}"
        cmd = [*CLI, "crawl", "--db", str(tmp_path / "silent.db"), "--api-base", base + "/v1",
               "--token-url", token_url or base + "/api/token", *args]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=cli_env(extra=env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        watched = Watched(proc, time.monotonic())
        started.append(watched)
        return watched

    yield start
    for watched in started:
        if watched.proc.poll() is None:
            watched.proc.kill()
            watched.proc.wait(10)


def _free_port() -> int:
    """A loopback port where nothing listens."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        return int(placeholder.getsockname()[1])


def _startup_seconds() -> float:
    """How long the CLI takes to import what a crawl runs, on this machine, now."""
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import spotify_ingest.cli, spotify_ingest.runner"], check=True
    )
    return time.monotonic() - began


def test_nothing_listening_is_reported_at_once_and_exits_69_within_a_minute(
    crawl_against: Callable[..., Watched], results: Results
) -> None:
    startup = _startup_seconds()
    crawl = crawl_against(_free_port())
    seen = crawl.first(NOT_ANSWERING, timeout=startup + 10)
    ended = crawl.wait(EXIT_WITHIN + 15)
    results.add(
        "fault_api_refused",
        fault="nothing listening at --api-base / --token-url (default settings)",
        crawler_did=f"'{NOT_ANSWERING}' after {(seen or 0) - crawl.started:.1f} s "
        f"(startup {startup:.1f} s), exit {crawl.proc.returncode} after {ended:.1f} s",
        exit_codes=[crawl.proc.returncode],
        requests_sent=0,
        lost=0,
    )
    assert seen is not None, crawl.text()
    assert seen - crawl.started <= startup + VISIBLE_WITHIN, crawl.text()
    assert crawl.proc.returncode == 69, crawl.text()
    assert ended <= EXIT_WITHIN, crawl.text()
    tries = [line for _, line in crawl.lines if NOT_ANSWERING in line]
    assert "connection refused" in tries[0], crawl.text()
    counted = [int(re.search(r"\(try (\d+) to ", line).group(1)) for line in tries]  # type: ignore[union-attr]
    assert len(counted) >= 3 and counted == sorted(set(counted)), "the tries are not counted"
    last = crawl.lines[-1][1]
    assert last.startswith("error: the API did not answer for "), last


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--no-answer-timeout", "2"), None), ((), {"SPOTIFY_NO_ANSWER_TIMEOUT": "2"})],
    ids=["flag", "environment"],
)
def test_no_answer_timeout_is_settable(
    crawl_against: Callable[..., Watched], args: tuple[str, ...], env: dict[str, str] | None
) -> None:
    crawl = crawl_against(_free_port(), *args, env=env)
    seen = crawl.first(NOT_ANSWERING, timeout=30)
    crawl.wait(30)
    assert seen is not None and crawl.proc.returncode == 69, crawl.text()
    assert crawl.lines[-1][0] - seen <= 2.0 + 1.0, crawl.text()


def test_connect_timeout_is_settable(crawl_against: Callable[..., Watched]) -> None:
    # A listening socket whose accept queue is full: the kernel drops new connection attempts,
    # so a connect waits until its timeout.
    with socket.socket() as full, contextlib.ExitStack() as fillers:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(4):
            filler = fillers.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(full.getsockname())
        crawl = crawl_against(
            full.getsockname()[1], "--connect-timeout", "0.5", "--no-answer-timeout", "4"
        )
        seen = crawl.first("connect timeout", timeout=30)
        crawl.wait(30)
    assert seen is not None and seen - crawl.started <= _startup_seconds() + 0.5 + 2.0, crawl.text()
    assert crawl.proc.returncode == 69, crawl.text()


@pytest.mark.parametrize("token", ["silent too", "answers"])
def test_server_that_never_answers_is_reported_at_once_and_exits_69_within_a_minute(
    crawl_against: Callable[..., Watched], results: Results, token: str
) -> None:
    with SilentServer() as server, ServedSim(SimConfig(**SIM_CONFIG)) as sim:
        token_url = None if token == "silent too" else sim.token_url
        crawl = crawl_against(server.port, token_url=token_url)
        seen = crawl.first(NOT_ANSWERING, timeout=30)
        ended = crawl.wait(EXIT_WITHIN + 15)
    first_try = server.accepted[0] if server.accepted else None
    results.add(
        "fault_api_silent" + ("" if token == "silent too" else "_token_answers"),
        fault="a server that accepts connections and never answers (default timeouts)"
        + ("" if token == "silent too" else "; the token endpoint answers"),
        crawler_did=f"'{NOT_ANSWERING}' {(seen or 0) - (first_try or 0):.1f} s after the first "
        f"try, exit {crawl.proc.returncode} after {ended:.1f} s, "
        f"{len(server.accepted)} connections",
        exit_codes=[crawl.proc.returncode],
        requests_sent=0,
        lost=0,
    )
    assert first_try is not None and seen is not None, crawl.text()
    assert seen - first_try <= VISIBLE_WITHIN, crawl.text()
    assert crawl.proc.returncode == 69, crawl.text()
    assert ended <= EXIT_WITHIN, crawl.text()
    assert any("read timeout" in line for _, line in crawl.lines), crawl.text()


@pytest.mark.parametrize("silence", ["refuses connections", "never answers"])
def test_sigterm_while_the_api_is_silent_stops_within_2_s(
    crawl_against: Callable[..., Watched], silence: str, results: Results
) -> None:
    with SilentServer() as server:
        crawl = crawl_against(server.port if silence == "never answers" else _free_port())
        seen = crawl.first(NOT_ANSWERING, timeout=30)
        assert seen is not None, crawl.text()
        stopped = crawl.terminate()
    results.add(
        "fault_api_silent_sigterm_" + silence.replace(" ", "_"),
        fault=f"SIGTERM while the API {silence} at the start",
        crawler_did=f"exit {crawl.proc.returncode} {stopped:.1f} s after SIGTERM",
        exit_codes=[crawl.proc.returncode],
        stop_seconds=round(stopped, 2),
    )
    assert stopped <= STOP_WITHIN, f"stopped {stopped:.1f} s after SIGTERM\n{crawl.text()}"
    assert crawl.proc.returncode == 143, crawl.text()


# ------------------------------------------------------------------------------------------------
# An API that answered, then falls silent


@dataclass
class Outage(Faulty):
    """From the ``begin``-th /v1 request on, /v1 requests get no answer at all (the connection
    stays open until the client drops it) for ``seconds``, or until :meth:`end` when None."""

    begin: int = 150
    seconds: float | None = None
    began: float | None = None
    ended: bool = False
    unanswered: int = 0

    def wrap(self, app: SimApp) -> Any:
        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/v1/") and self._silent():
                self.unanswered += 1
                while (await receive())["type"] != "http.disconnect":
                    pass
                return
            await app(scope, receive, send)

        return asgi

    def _silent(self) -> bool:
        self.seen += 1
        if self.seen == self.begin:
            self.began = time.monotonic()
        if self.began is None or self.ended:
            return False
        return self.seconds is None or time.monotonic() < self.began + self.seconds

    def end(self) -> None:
        self.ended = True


OUTAGE_ENV = {"SPOTIFY_READ_TIMEOUT": "0.5"}


def test_api_silent_mid_crawl_is_reported_and_the_crawl_goes_on(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    outage = Outage(seconds=3.0)
    out = crawl(tmp_path, faulty=outage, env=OUTAGE_ENV)
    record(results, "fault_api_silent_mid_run", "after 150 requests, the API accepts "
           "connections and answers nothing for 3 s (read timeout 0.5 s)", out, reference,
           f"'{NOT_ANSWERING}' with the tries counted, one try at a time; went on when it "
           "answered again", injected=outage.unanswered)  # fmt: skip
    assert outage.unanswered > 0
    assert NOT_ANSWERING in out.last.stderr, str(out.last)
    assert_finished_like_reference(out, reference)


def test_api_silent_mid_crawl_longer_than_outage_timeout_exits_69_then_resumes(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    outage = Outage()
    out = crawl(tmp_path, faulty=outage, env=OUTAGE_ENV, args=(*FAULT_ARGS, "--outage-timeout",
                "3"), runs=2, between=lambda sim, i: outage.end())  # fmt: skip
    first = out.runs[0]
    assert outage.began is not None
    record(results, "fault_api_silent_for_good", "after 150 requests, the API accepts "
           "connections and never answers again (--outage-timeout 3, read timeout 0.5 s)",
           out, reference, f"exit {first.code} after {first.elapsed:.1f} s with the state "
           "saved; the same command resumed when the API was back",
           injected=outage.unanswered)  # fmt: skip
    assert first.code == 69, str(first)
    assert first.error_lines()[-1].startswith("error: the API did not answer for "), str(first)
    assert "--outage-timeout" in first.error_lines()[-1]
    assert_finished_like_reference(out, reference)


def test_sigterm_while_the_api_is_silent_mid_crawl_stops_within_2_s_and_resumes(
    tmp_path: Path, reference: Reference, results: Results
) -> None:
    outage = Outage()
    db = tmp_path / "fault.db"
    with ServedSim(SimConfig(**FAULT_SIM), outage.wrap) as sim:
        cmd = crawl_cmd(sim, db, *FAULT_ARGS)
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=cli_env(extra={"SPOTIFY_READ_TIMEOUT": "3"}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        crawl = Watched(proc, time.monotonic())
        seen = crawl.first(NOT_ANSWERING, timeout=60)
        assert seen is not None, crawl.text()
        stopped = crawl.terminate()
        assert stopped <= STOP_WITHIN, f"stopped {stopped:.1f} s after SIGTERM\n{crawl.text()}"
        assert proc.returncode == 143, crawl.text()
        outage.end()
        resumed = run_cli(cmd, cwd=tmp_path)
    assert resumed.code == 0 and resumed.stdout.startswith("done:"), str(resumed)
    state = read_db(db)
    results.add(
        "fault_api_silent_mid_run_sigterm",
        fault="SIGTERM while the API, after answering, accepts connections and answers nothing "
        "(read timeout 3 s), then the same command with the API back",
        crawler_did=f"exit {proc.returncode} {stopped:.1f} s after SIGTERM; the resume exited "
        f"{resumed.code} with {len(state.artists)} of {len(reference.state.artists)} artists",
        exit_codes=[proc.returncode, resumed.code],
        stop_seconds=round(stopped, 2),
    )
    assert state.count(1) == 0 and state.count(3) == 0
    assert set(state.artists) == set(reference.state.artists)
