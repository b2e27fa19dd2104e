"""The simulator over real HTTP (uvicorn in a thread), and the ``sim serve`` command line."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from spotify_ingest.errors import UsageError
from spotify_ingest.sim import cli as sim_cli
from spotify_ingest.sim.app import SimConfig
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.cli import sim_app
from spotify_ingest.sim.server import SimServer, bind_socket

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_sim_server_answers_over_http(catalog: Catalog) -> None:
    config = SimConfig(artists=catalog.n_artists, limit=3)
    with SimServer(config, catalog=catalog) as sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
        assert sim.api_base == sim.base_url + "/v1"
        assert sim.token_url == sim.base_url + "/api/token"
        r = httpx.post(
            sim.token_url,
            data={"grant_type": "client_credentials"},
            auth=(sim.client_id, sim.client_secret),
        )
        assert r.status_code == 200
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        with httpx.Client(base_url=sim.api_base, headers=headers) as client:
            statuses = [
                client.get(f"/artists/{catalog.artist_id(i)}").status_code for i in range(4)
            ]
            assert statuses == [200, 200, 200, 429]
            r = client.get("/search", params={"q": "a", "type": "artist"})
            assert int(r.headers["Retry-After"]) >= 1
            page = client.get(f"{sim.base_url}/__sim/stats").json()
            assert page["accepted"] == 3 and page["rejected_429"] == 2
        port = sim.port
    # The port is released.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


async def test_concurrent_clients_never_exceed_the_hidden_limit(catalog: Catalog) -> None:
    config = SimConfig(artists=catalog.n_artists, limit=10, window=30.0, latency_ms=5)
    with SimServer(config, catalog=catalog) as sim:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32)) as client:
            r = await client.post(
                sim.token_url,
                data={"grant_type": "client_credentials"},
                auth=(sim.client_id, sim.client_secret),
            )
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            urls = [f"{sim.api_base}/artists/{catalog.artist_id(i)}" for i in range(40)]
            responses = await asyncio.gather(*(client.get(u) for u in urls))
            statuses = Counter(r.status_code for r in responses)
            truth = (await client.get(sim.stats_url)).json()
    assert statuses == {200: 10, 429: 30}
    assert truth["accepted"] == 10 and truth["max_accepted_in_any_window"] == 10
    assert truth["escalations"] == 0  # all in flight together: inside the escalation grace
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)


def test_reset_over_real_http_is_a_transport_error(catalog: Catalog) -> None:
    config = SimConfig(artists=catalog.n_artists, limit=1000, reset_rate=1.0)
    with SimServer(config, catalog=catalog) as sim:
        token = httpx.post(
            sim.token_url,
            data={"grant_type": "client_credentials"},
            auth=(sim.client_id, sim.client_secret),
        ).json()["access_token"]
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(3):
                with pytest.raises(httpx.TransportError):
                    client.get(f"{sim.api_base}/artists/{catalog.artist_id(0)}")
            # The server itself is fine.
            assert client.get(f"{sim.base_url}/__sim/stats").json()["faults"]["resets"] == 3


def test_bind_socket_reports_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match="already in use"):
            bind_socket("127.0.0.1", port)


@pytest.mark.parametrize(
    "args",
    [
        ["--profile", "nope"],
        ["--port", "70000"],
        ["--artists", "0"],
        ["--fail-rate", "1.5"],
        ["--limit-schedule", "10:triple"],
        ["--limit", "0"],
        ["--algorithm", "leaky"],
        ["--endpoint-limit", "search"],
        ["--fail-rate", "0.6", "--reset-rate", "0.6"],
        ["--offset-rule", "limit"],
    ],
)
def test_cli_bad_flags_exit_2_with_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(sim_app, ["serve", *args])
    assert result.exit_code == 2, result.output
    output = result.output
    assert "Traceback" not in output
    error_lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1, output


def test_cli_offset_rule_reaches_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[SimConfig] = []
    monkeypatch.setattr(sim_cli, "serve_simulator", lambda config, *_a, **_k: seen.append(config))
    result = CliRunner().invoke(sim_app, ["serve", "--offset-rule", "offset+limit"])
    assert result.exit_code == 0, result.output
    assert [c.offset_rule for c in seen] == ["offset+limit"]
    CliRunner().invoke(sim_app, ["serve"])
    assert seen[-1].offset_rule == "offset"


def _run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "spotify_ingest.sim.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_cli_port_in_use_exits_2_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run_cli("serve", "--port", str(port), "--artists", "100")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0], result.stderr


def test_cli_serve_starts_and_prints_where(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotify_ingest.sim.cli", "serve", "--port", str(port),
         "--artists", "500", "--limit", "7", "--profile", "extended"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        stats = None
        while time.monotonic() < deadline:
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/__sim/stats", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        assert stats is not None
        assert stats["limit"] == 7 and stats["profile"] == "extended" and stats["n_artists"] == 500
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert f"http://127.0.0.1:{port}/api/token" in out
    assert "demo-client-id" in out and "demo-client-secret" in out
    assert "Traceback" not in err
