"""Exports: every artist once with all fields, in each format, atomically, never clobbering."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from spotify_ingest.errors import ExportError, UsageError
from spotify_ingest.export import COLUMNS, export_artists
from spotify_ingest.models import Artist, Image, SimplifiedArtist
from spotify_ingest.store.base import TaskOutcome, TaskSpec
from spotify_ingest.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "c.db")
    s.add_tasks([TaskSpec("search", {"q": "a"})])
    (task,) = s.claim("search", 1)
    artists = [
        Artist(
            id="a1",
            name="Beyoncé",
            genres=["pop", "r&b"],
            popularity=90,
            followers=10**7,
            images=[Image(url="https://i.example/1", height=640, width=640)],
            uri="spotify:artist:a1",
            external_urls={"spotify": "https://open.example/a1"},
        ),
        Artist(id="a2", name='Guns N\' Roses, "live"', genres=[], uri="spotify:artist:a2"),
        SimplifiedArtist(id="a3", name="周杰伦\nnew line", uri="spotify:artist:a3"),
    ]
    s.complete(task, TaskOutcome(artists=artists))
    yield s
    s.close()


def test_jsonl_has_every_artist_and_field(store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    assert export_artists(store.iter_artists(), out, "jsonl") == 3
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["a1", "a2", "a3"]
    assert set(rows[0]) == set(COLUMNS)
    assert rows[0]["genres"] == ["pop", "r&b"] and rows[0]["followers"] == 10**7
    assert rows[0]["images"][0]["url"] == "https://i.example/1"
    assert rows[2]["detail"] == "simplified" and rows[2]["name"] == "周杰伦\nnew line"


def test_csv_round_trips_awkward_names(store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / "a.csv"
    export_artists(store.iter_artists(), out, "csv")
    with out.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["Beyoncé", 'Guns N\' Roses, "live"', "周杰伦\nnew line"]
    assert json.loads(rows[0]["genres"]) == ["pop", "r&b"]
    assert rows[2]["popularity"] == ""


def test_parquet_is_typed(store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / "a.parquet"
    export_artists(store.iter_artists(), out, "parquet")
    table = pq.read_table(out)
    assert table.num_rows == 3
    assert table.column("genres").to_pylist()[0] == ["pop", "r&b"]
    assert str(table.schema.field("popularity").type) == "int32"


def test_refuses_to_overwrite_without_force(store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    out.write_text("precious\n")
    with pytest.raises(ExportError, match="--force"):
        export_artists(store.iter_artists(), out, "jsonl")
    assert out.read_text() == "precious\n"
    assert export_artists(store.iter_artists(), out, "jsonl", force=True) == 3


def test_bad_targets(store: SQLiteStore, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="directory"):
        export_artists(store.iter_artists(), tmp_path, "csv")
    with pytest.raises(ExportError, match="does not exist"):
        export_artists(store.iter_artists(), tmp_path / "no" / "a.csv", "csv")
    with pytest.raises(UsageError, match="unknown export format"):
        export_artists(store.iter_artists(), tmp_path / "a.xml", "xml")


def test_a_failed_export_leaves_no_partial_file(tmp_path: Path) -> None:
    def rows():  # type: ignore[no-untyped-def]
        yield {k: None for k in COLUMNS} | {"id": "x", "name": "x", "detail": "full"}
        raise RuntimeError("killed mid-export")

    out = tmp_path / "a.jsonl"
    with pytest.raises(RuntimeError):
        export_artists(rows(), out, "jsonl")
    assert list(tmp_path.iterdir()) == []
