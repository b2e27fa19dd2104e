"""PostgreSQL for the store tests: a fresh, randomly named schema per test, dropped afterwards.

The server comes from ``SPOTIFY_INGEST_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached the PostgreSQL tests
SKIP, saying why, except under CI (the ``CI`` environment variable set), where they FAIL: CI must
run them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

PG_ENV = "SPOTIFY_INGEST_TEST_PG"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The server DSN, once it answers ``SELECT 1``."""
    return pg_dsn_or_skip()


def pg_dsn_or_skip() -> str:
    """The server DSN once it answers ``SELECT 1``; skip (fail under CI) when it does not."""
    dsn = os.environ.get(PG_ENV, PG_DEFAULT)
    try:
        import psycopg

        from spotify_ingest.store.postgres import describe_dsn
    except ImportError as exc:
        _unavailable(f"psycopg is not installed ({exc}): pip install -e '.[scale]'")
        raise AssertionError("unreachable") from None
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _unavailable(
            f"PostgreSQL not reachable at {describe_dsn(dsn)} ({first}); start it or point "
            f"{PG_ENV} at a server"
        )
    return dsn


@dataclass(frozen=True)
class PgSchema:
    """A fresh schema on the test server: ``dsn`` connects with it first on the search_path."""

    server: str
    name: str
    dsn: str

    @property
    def url(self) -> str | None:
        """The same as a ``postgresql://`` URL (None when the server DSN is not a URL)."""
        if not self.server.startswith(("postgresql://", "postgres://")):
            return None
        sep = "&" if "?" in self.server else "?"
        return f"{self.server}{sep}options={quote(f'-csearch_path={self.name}', safe='')}"

    def admin(self) -> Any:
        """An autocommit connection to the schema, for tests that poke at rows directly."""
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)


def new_schema(server: str) -> PgSchema:
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"si_test_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return PgSchema(server, name, make_conninfo(server, options=f"-c search_path={name}"))


def drop_schema(schema: PgSchema) -> None:
    import psycopg

    with psycopg.connect(schema.server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema.name} CASCADE")


@pytest.fixture
def pg_schema(pg_server: str) -> Iterator[PgSchema]:
    """A fresh schema for one test, dropped after it (tests can run while others use the server)."""
    schema = new_schema(pg_server)
    try:
        yield schema
    finally:
        drop_schema(schema)
