"""Secrets stay secret: the client secret and every access token issued stay out of output, logs,
exceptions, stats, exports and the database; TLS is always verified; ``.env`` is git-ignored; the
simulator listens on loopback unless told otherwise.

The crawl runs as a real process with ``--debug`` (debug logs of our code and of httpx/httpcore)
against a simulator process started with a recognisable secret and a short token lifetime, and
its tokens are revoked mid-run, so several tokens are issued. The simulator draws its tokens from
a generator seeded by ``--seed``; the test rebuilds that sequence with the simulator's own
``TokenStore`` and proves it right by fetching one more token and finding it next in line.
"""

from __future__ import annotations

import inspect
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from spotify_ingest.client import SpotifyClient
from spotify_ingest.config import ClientSettings, Credentials
from spotify_ingest.errors import UsageError
from spotify_ingest.sim.app import SimConfig, TokenStore
from spotify_ingest.sim.server import SimServer
from spotify_ingest.transport import AiohttpTransport

from .harness import (
    CLI,
    ROOT,
    SIM_ARGS,
    Results,
    SimProcess,
    all_db_text,
    cli_env,
    crawl_cmd,
    run_cli,
)

SECRET = "S3cr3t-Reliability-7f2c9e41d0"
CLIENT_ID = "reliability-client"
SEED = 0


def _issued_tokens(count: int) -> list[str]:
    """The first ``count`` tokens the simulator issued (its generator, replayed)."""
    store = TokenStore({CLIENT_ID: SECRET}, SEED)
    return [store.issue(CLIENT_ID, 0.0, 1.0) for _ in range(count)]


def _needles(tokens: list[str]) -> dict[str, str]:
    """What must not appear: the secret and each token, plus long pieces of them (a token cut in
    a log line or shown half-masked is still a leak)."""
    needles = {"client secret": SECRET, "secret (middle)": SECRET[4:20]}
    for i, token in enumerate(tokens):
        needles[f"token {i}"] = token
        needles[f"token {i} (middle)"] = token[30:60]
    return needles


def _leaks(text: str | bytes, needles: dict[str, str]) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [name for name, value in needles.items() if value.encode() in data]


def test_secret_and_tokens_never_leave_the_process(tmp_path: Path, results: Results) -> None:
    env = cli_env(CLIENT_ID, SECRET)
    db = tmp_path / "secrets.db"
    stats = tmp_path / "stats.json"
    with SimProcess(
        *SIM_ARGS, "--seed", str(SEED), "--client-id", CLIENT_ID, "--client-secret", SECRET,
        "--token-ttl", "1",
    ) as sim:  # fmt: skip
        out_path, err_path = tmp_path / "crawl.out", tmp_path / "crawl.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:  # files: a pipe would fill
            proc = subprocess.Popen(
                [*crawl_cmd(sim, db, "--strategy", "search", "--max-requests", "400", debug=True),
                 "--stats-json", str(stats)],
                cwd=tmp_path, env=env, stdout=out, stderr=err,
            )  # fmt: skip
            deadline = time.monotonic() + 60  # revoke once the crawl is well under way
            while sim.stats()["requests_total"] < 150 and time.monotonic() < deadline:
                time.sleep(0.02)
            revoked = sim.revoke_tokens()
            proc.wait(120)
        crawl_out, crawl_err = out_path.read_bytes(), err_path.read_bytes()
        assert proc.returncode == 0, crawl_err[-3000:]
        # Errors with their tracebacks (--debug): a 429 beyond --max-wait 0 (MustWaitError with
        # its chained cause), then a wrong secret (CredentialsError).
        sim.control(limit=1)
        must_wait = run_cli(
            [*crawl_cmd(sim, db, "--max-wait", "0", debug=True)], cwd=tmp_path, env=env
        )
        wrong = run_cli(
            [*crawl_cmd(sim, db, debug=True)], cwd=tmp_path,
            env=cli_env(CLIENT_ID, SECRET[:-1] + "X"),
        )  # fmt: skip
        issued = int(sim.stats()["tokens"]["issued"])
        probe = httpx.post(
            sim.token_url, data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, SECRET)
        ).json()["access_token"]
    tokens = _issued_tokens(issued + 1)
    assert tokens[-1] == probe, "the token sequence was not rebuilt right"
    tokens = tokens[:-1]
    assert revoked >= 1 and len(tokens) >= 3, "expected several tokens (ttl 1 s, one revocation)"
    assert must_wait.code == 75 and "Traceback" in must_wait.stderr, str(must_wait)
    assert wrong.code == 3 and "Traceback" in wrong.stderr, str(wrong)

    exports = {}
    for fmt in ("jsonl", "csv", "parquet"):
        target = tmp_path / f"artists.{fmt}"
        run = run_cli([*CLI, "--debug", "export", "--db", str(db), "--format", fmt, "--out",
                       str(target)], cwd=tmp_path, env=env)  # fmt: skip
        assert run.code == 0, str(run)
        exports[fmt] = (target.read_bytes(), run.stdout + run.stderr)
    import pyarrow.parquet as pq

    parquet_text = str(pq.read_table(tmp_path / "artists.parquet").to_pylist())
    shown = {
        cmd: run_cli([*CLI, "--debug", cmd, "--db", str(db), *extra], cwd=tmp_path, env=env)
        for cmd, extra in (("stats", ["--json"]), ("limits", ["--json"]))
    }
    for run in shown.values():
        assert run.code == 0, str(run)

    needles = _needles(tokens)
    # The scan finds what is there: the simulator's banner shows its secret on purpose.
    assert _leaks("\n".join(sim.banner), needles) == ["client secret", "secret (middle)"]
    assert _leaks(f"Bearer {tokens[1]}", needles) == ["token 1", "token 1 (middle)"]
    places: dict[str, str | bytes] = {
        "crawl stdout": crawl_out,
        "crawl stderr (--debug log)": crawl_err,
        "stats json": stats.read_bytes(),
        "MustWaitError output + traceback": must_wait.stdout + must_wait.stderr,
        "CredentialsError output + traceback": wrong.stdout + wrong.stderr,
        "database rows": all_db_text(db),
        "parquet rows": parquet_text,
        **{f"stats/limits output ({c})": r.stdout + r.stderr for c, r in shown.items()},
        **{f"export {fmt}": data + out.encode() for fmt, (data, out) in exports.items()},
    }
    for path in sorted(tmp_path.glob("secrets.db*")):  # raw bytes: free pages, WAL, journal
        places[f"file {path.name}"] = path.read_bytes()
    found = {place: _leaks(text, needles) for place, text in places.items()}
    log_lines = len(crawl_err.decode().splitlines())
    results.add(
        "secrets",
        checked=sorted(places),
        tokens_checked=len(tokens),
        debug_log_lines=log_lines,
        leaks=sum(len(v) for v in found.values()),
    )
    assert log_lines > 100, "the --debug log is not there: nothing was checked"
    assert {place: names for place, names in found.items() if names} == {}


def _ssl_contexts(client: SpotifyClient) -> list[ssl.SSLContext]:
    """The SSL contexts of every connection pool of the client's transport(s)."""
    http: Any = client._http  # white box: the property is a security one
    transports: list[Any] = [http._transport, *http._mounts.values()]
    contexts = []
    for transport in transports:
        if isinstance(transport, AiohttpTransport):  # the default: one context, every connection
            contexts.append(transport._tls)
            continue
        pool = getattr(transport, "_pool", None)  # httpx's own (with a proxy)
        context = getattr(pool, "_ssl_context", None)
        if context is not None:
            contexts.append(context)
    return contexts


@pytest.mark.parametrize("proxy", [None, "http://127.0.0.1:3128"], ids=["direct", "via-proxy"])
async def test_tls_is_always_verified(monkeypatch: pytest.MonkeyPatch, proxy: str | None) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
    creds = Credentials(client_id="tls-test", client_secret=SECRET)
    async with SpotifyClient(creds) as sp:
        contexts = _ssl_contexts(sp)
        assert contexts, "no TLS context found to check"
        for context in contexts:
            assert context.verify_mode == ssl.CERT_REQUIRED
            assert context.check_hostname is True
    # There is no switch to turn it off: not on the client, not in the settings.
    assert "verify" not in inspect.signature(SpotifyClient).parameters
    assert not any("verify" in name or "ssl" in name for name in ClientSettings.model_fields)
    with pytest.raises(TypeError):
        SpotifyClient(creds, verify=False)  # type: ignore[call-arg]
    # Plain http only to loopback: a secret never crosses a network in clear.
    with pytest.raises(UsageError):
        SpotifyClient(creds, api_base="http://api.spotify.com/v1")
    with pytest.raises(UsageError):
        SpotifyClient(creds, token_url="http://accounts.spotify.com/api/token")


def test_dotenv_is_git_ignored() -> None:
    for path in (".env", "sub/folder/.env"):
        check = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert check.returncode == 0, f"{path} is not git-ignored"
    tracked = subprocess.run(["git", "ls-files", "--", "*.env", ".env"], cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
    assert tracked.stdout.strip() == "", f"tracked .env files: {tracked.stdout}"


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def test_simulator_binds_loopback_by_default() -> None:
    with SimProcess("--artists", "100") as sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
        port = int(sim.base_url.rsplit(":", 1)[1])
        if Path("/proc/net/tcp").exists():
            assert _listening(port) == ["0100007F"], "sim serve listens beyond 127.0.0.1"
    with SimServer(SimConfig(artists=100)) as server:
        assert server.host == "127.0.0.1"
        if Path("/proc/net/tcp").exists():
            assert _listening(server.port) == ["0100007F"]
