"""Command-line interface (placeholder until the commands land)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("spotify-ingest: not implemented yet")
