"""Crawl state stores: SQLite (one file, one process) and PostgreSQL (shared by many workers).

:func:`open_store` picks the backend from ``--db``: a ``postgresql://`` or ``postgres://`` URL opens
:class:`~spotify_ingest.store.postgres.PostgresStore`, anything else is an SQLite file path. psycopg
is imported only for PostgreSQL, so SQLite users do not need it installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError, UsageError

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .sqlite import SQLiteStore

__all__ = ["LeaseLostError", "display_db", "is_postgres_url", "open_store"]

_PG_SCHEMES = ("postgresql://", "postgres://")


class LeaseLostError(StoreError):
    """A task's lease is no longer this worker's (it expired and was recovered, or was released).

    Raised by ``PostgresStore.complete`` (nothing recorded) when another worker may have taken the
    task over: drop the result and carry on, it is not a broken database.
    """


def is_postgres_url(db: str | os.PathLike[str]) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(db, str) and db.strip().lower().startswith(_PG_SCHEMES)


def display_db(db: str | os.PathLike[str]) -> str:
    """``db`` as it may be printed: a PostgreSQL URL's password becomes ``***``."""
    text = os.fspath(db)
    if not is_postgres_url(text):
        return text
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password=)[^&\s]*", r"\1***", text, flags=re.I)


def open_store(
    db: str | Path, *, read_only: bool = False, **kw: Any
) -> SQLiteStore | PostgresStore:
    """Open the store ``db`` names; ``kw`` goes to the backend's constructor.

    Both take ``create``; PostgreSQL also ``worker_id`` and ``lease_seconds``, SQLite ``lock``.
    ``read_only`` (readers: ``stats``, ``export``, ``limits``) opens an SQLite file to write
    nothing, beside a running crawl too, and read-only where this user may not write;
    PostgreSQL readers need no such care (MVCC).
    """
    if is_postgres_url(db):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise UsageError(
                f"a PostgreSQL --db needs psycopg ({exc.name or 'psycopg'} is missing): "
                "pip install 'spotify-ingest[scale]'"
            ) from None
        return PostgresStore(str(db).strip(), **kw)
    from .sqlite import SQLiteStore

    return SQLiteStore(db, read_only=read_only, **kw)
