"""Streamed exports of the artists table: JSON Lines, CSV and Parquet.

Rows stream from the database in id order (one artist per row, every stored field), so memory
stays flat whatever the catalog size. The file is written under a temporary name beside the target
and renamed into place at the end: an export killed half-way leaves no partial file behind, and an
existing file is replaced only with ``force``.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from .errors import ExportError, UsageError

__all__ = ["FORMATS", "export_artists"]

FORMATS = ("jsonl", "csv", "parquet")

COLUMNS = (
    "id", "name", "detail", "genres", "popularity", "followers", "images", "uri", "external_url",
    "found_by", "first_seen", "updated_at",
)  # fmt: skip

_PARQUET_BATCH = 10_000


# Compact UTF-8 JSON (non-ASCII characters as they are), several times faster than the json
# module: most of an export's CPU went into encoding.
_to_json = msgspec.json.Encoder().encode


def _write_jsonl(rows: Iterable[dict[str, Any]], fh: Any) -> int:
    n = 0
    for row in rows:
        fh.write(_to_json({k: row[k] for k in COLUMNS}) + b"\n")
        n += 1
    return n


def _write_csv(rows: Iterable[dict[str, Any]], fh: Any) -> int:
    writer = csv.writer(fh)
    writer.writerow(COLUMNS)
    n = 0
    for row in rows:
        out = []
        for key in COLUMNS:
            value = row[key]
            if key in ("genres", "images") and value is not None:
                value = _to_json(value).decode()
            out.append("" if value is None else value)
        writer.writerow(out)
        n += 1
    return n


def _parquet_batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _PARQUET_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_parquet(rows: Iterable[dict[str, Any]], path: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("url", pa.string()), ("height", pa.int32()), ("width", pa.int32())])
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("name", pa.string()),
            ("detail", pa.string()),
            ("genres", pa.list_(pa.string())),
            ("popularity", pa.int32()),
            ("followers", pa.int64()),
            ("images", pa.list_(image)),
            ("uri", pa.string()),
            ("external_url", pa.string()),
            ("found_by", pa.string()),
            ("first_seen", pa.float64()),
            ("updated_at", pa.float64()),
        ]
    )
    n = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in _parquet_batches(rows):
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
        if n == 0:
            writer.write_table(schema.empty_table())
    return n


def export_artists(
    rows: Iterable[dict[str, Any]], out: str | os.PathLike[str], fmt: str, *, force: bool = False
) -> int:
    """Write ``rows`` to ``out`` in ``fmt``; returns the number of artists written."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    target = Path(out)
    if target.is_dir():
        raise ExportError(f"--out {target} is a directory: give a file path")
    if target.exists() and not force:
        raise ExportError(f"{target} exists: pass --force to overwrite it")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"--out {target}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise ExportError(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        if fmt == "parquet":
            os.close(fd)
            n = _write_parquet(rows, tmp)
        elif fmt == "jsonl":
            with open(fd, "wb") as fh:
                n = _write_jsonl(rows, fh)
        else:
            with open(fd, "w", encoding="utf-8", newline="") as fh:
                n = _write_csv(rows, fh)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"cannot write {target}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
