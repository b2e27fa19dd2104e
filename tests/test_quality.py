"""The code base keeps its own rules: ruff (lint and format) on everything, mypy --strict on src."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint() -> None:
    result = run(sys.executable, "-m", "ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_env_file_is_ignored() -> None:
    result = run("git", "check-ignore", "-q", ".env")
    assert result.returncode == 0, ".env must be git-ignored: it holds the client secret"


def test_mypy_strict_on_src() -> None:
    result = run(sys.executable, "-m", "mypy", "src/spotify_ingest")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
