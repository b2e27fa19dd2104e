"""Run the ``spotify-ingest`` CLI with a SIGKILL armed at an exact point: a crash-test launcher.

``python killpoint.py ARGS...`` runs ``spotify_ingest.cli.main(ARGS)`` exactly as the console script
does, after arming at most one of:

* ``SI_KILL_AT_COMMIT=N``: the process SIGKILLs itself when SQLite starts executing the N-th
  ``COMMIT`` (a statement trace set on every connection the process opens): the transaction's
  statements have run, its commit has not completed.
* ``SI_KILL_AT_RESPONSE=N``: the process SIGKILLs itself as soon as the N-th ``/v1`` response has
  arrived (the server counted and answered the request; the crawler has not parsed or stored it).

Nothing of spotify-ingest is replaced: ``sqlite3.connect`` gets a trace callback and
``httpx.Response.aread`` (a response's body read in full) a counter around the real call. SIGKILL
cannot be caught, so what the next run finds is what a power cut or the OOM killer would leave at
that moment.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_commit(n: int) -> None:
    real_connect = sqlite3.connect
    seen = 0

    def trace(statement: str) -> None:
        nonlocal seen
        if statement.lstrip().upper().startswith("COMMIT"):
            seen += 1
            if seen == n:
                _die()

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(trace)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]


def _arm_response(n: int) -> None:
    import httpx

    real_aread = httpx.Response.aread
    seen = 0

    async def aread(self: httpx.Response) -> bytes:
        nonlocal seen
        body = await real_aread(self)
        # API calls through our own transport carry no httpx.Request (AiohttpTransport.get);
        # the token endpoint's do.
        api = "/v1/" in self.request.url.path if self._request is not None else True
        if api:
            seen += 1
            if seen == n:
                _die()
        return body

    httpx.Response.aread = aread  # type: ignore[method-assign]


def main() -> None:
    commit = int(os.environ.get("SI_KILL_AT_COMMIT", "0"))
    response = int(os.environ.get("SI_KILL_AT_RESPONSE", "0"))
    if commit:
        _arm_commit(commit)
    if response:
        _arm_response(response)
    from spotify_ingest.cli import main as cli_main

    sys.argv[0] = "spotify-ingest"
    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
