"""Redis and PostgreSQL for the several-workers tests (issue 7): reachable, or skip / fail.

Redis comes from ``SPOTIFY_INGEST_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``), PostgreSQL
from ``SPOTIFY_INGEST_TEST_PG`` (see ``tests/store/conftest.py``). When a server cannot be reached
the tests SKIP, saying why, except under CI (``CI`` set), where they FAIL. Each test gets its own
Redis key prefix (deleted afterwards) and its own PostgreSQL schema (dropped afterwards).
"""

from __future__ import annotations

import os
import secrets

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
