"""Redis and PostgreSQL for the several-workers tests: reachable, or skip / fail.

Redis comes from ``SPOTIFY_INGEST_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``), PostgreSQL
from ``SPOTIFY_INGEST_TEST_PG`` (see ``tests/store/conftest.py``). When a server cannot be reached
the tests SKIP, saying why, except under CI (``CI`` set), where they FAIL. Each test gets its own
Redis key prefix (deleted afterwards) and its own PostgreSQL schema (dropped afterwards).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.store.conftest import (
    PgSchema,
    drop_schema,
    in_ci,
    new_schema,
    pg_dsn_or_skip,
)

__all__ = [
    "PgSchema",
    "drop_schema",
    "new_schema",
    "pg_server_or_skip",
    "private_redis",
    "redis_keys_cleanup",
    "redis_url_or_skip",
    "unique_prefix",
]

REDIS_ENV = "SPOTIFY_INGEST_TEST_REDIS"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI is set: these tests must run)", pytrace=False)
    pytest.skip(reason)


def redis_url_or_skip() -> str:
    url = os.environ.get(REDIS_ENV, REDIS_DEFAULT)
    try:
        import redis
    except ImportError as exc:
        _unavailable(f"redis-py is not installed ({exc}): pip install -e '.[scale]'")
        raise AssertionError("unreachable") from None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        _unavailable(
            f"Redis not reachable at {url} ({type(exc).__name__}: {exc}); start it or point "
            f"{REDIS_ENV} at a server"
        )
    return url


def pg_server_or_skip() -> str:
    return pg_dsn_or_skip()


@contextlib.contextmanager
def private_redis(password: str | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ``redis-server`` of the test's own on a free loopback port, no persistence: (URL, process).

    For tests that kill Redis or give it a password. Skips (fails under CI) without the binary.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not on PATH (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", *(["--requirepass", password] if password else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def unique_prefix() -> str:
    return f"si-test:{secrets.token_hex(6)}"


def redis_keys_cleanup(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; how many."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + ":*", count=500))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()
