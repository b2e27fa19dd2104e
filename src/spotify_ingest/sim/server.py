"""Serving the simulator over real HTTP with uvicorn: blocking (``serve``) or in a thread.

``serve(config, host, port)`` binds the socket itself first, so a port in use is reported as a
``UsageError`` (exit 2) with one line and no traceback, prints where the simulator listens and
its demo credentials, then runs uvicorn (one process; uvloop and httptools when installed; access
log off) until interrupted.

``SimServer(config)`` is for tests and benchmarks: it binds a free loopback port, runs uvicorn in a
daemon thread with its own event loop, waits until the port accepts connections, and exposes
``.base_url``, ``.api_base``, ``.token_url``, ``.client_id``, ``.client_secret`` and ``.app`` (whose
``.sim`` is the live ``SimState``)::

    with SimServer(SimConfig(artists=2000, limit=50)) as sim:
        httpx.post(sim.token_url, data={"grant_type": "client_credentials"},
                   auth=(sim.client_id, sim.client_secret))
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn

from spotify_ingest.clock import Clock
from spotify_ingest.errors import UsageError

from .app import SimApp, SimConfig, create_app

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = ["SimServer", "bind_socket", "serve"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; ``UsageError`` if the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise UsageError(
            f"cannot resolve host {host!r}: use an address such as 127.0.0.1"
        ) from None
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is already in use: stop the other server or pick "
                "another --port"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: SimApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
        backlog=4096,
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def banner(config: SimConfig, host: str, port: int, app: SimApp) -> list[str]:
    """What ``serve`` prints: where to point a client and how to log in."""
    base = f"http://{_url_host(host)}:{port}"
    sim = app.sim
    return [
        f"Spotify Web API simulator: profile {config.profile}, {sim.catalog.n_artists} artists, "
        f"seed {config.seed}, time scale {config.time_scale:g}",
        f"  base URL:      {base}",
        f"  API base:      {base}/v1",
        f"  token URL:     {base}/api/token",
        f"  client id:     {config.client_id}",
        f"  client secret: {config.client_secret}",
        f"  ground truth:  {base}/__sim/stats   (Ctrl-C stops)",
    ]


def serve(
    config: SimConfig,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    announce: Callable[[str], None] | None = print,
) -> None:
    """Serve the simulator on ``host:port`` until interrupted (blocking)."""
    try:
        config.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sock = bind_socket(host, port)
    try:
        app = create_app(config)
        if announce is not None:
            for line in banner(config, host, sock.getsockname()[1], app):
                announce(line)
        uvicorn.Server(_uvicorn_config(app)).run(sockets=[sock])
    finally:
        sock.close()


class SimServer:
    """The simulator on a free loopback port, served by uvicorn in a background thread."""

    def __init__(
        self,
        config: SimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
        catalog: Catalog | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self._clock = clock
        self._catalog = catalog
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._app: SimApp | None = None
        self._error: BaseException | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    @property
    def token_url(self) -> str:
        return self.base_url + "/api/token"

    @property
    def stats_url(self) -> str:
        return self.base_url + "/__sim/stats"

    @property
    def client_id(self) -> str:
        return self.config.client_id

    @property
    def client_secret(self) -> str:
        return self.config.client_secret

    @property
    def app(self) -> SimApp:
        if self._app is None:
            raise RuntimeError("SimServer is not started")
        return self._app

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SimServer:
        if self._thread is not None:
            raise RuntimeError("SimServer already started")
        self._app = create_app(self.config, clock=self._clock, catalog=self._catalog)
        self._sock = bind_socket(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self._app))
        self._thread = threading.Thread(
            target=self._run, name=f"sim-server-{self.port}", daemon=True
        )
        self._thread.start()
        self._wait_until_accepting()
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # reported by start()
            self._error = exc

    def _wait_until_accepting(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"simulator server thread died: {self._error!r}")
            if self._server.started:
                try:
                    with socket.create_connection((self.host, self.port), timeout=1.0):
                        return
                except OSError:
                    pass
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"simulator server did not start within {self._startup_timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for the thread, release the port. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._thread = None
        self._sock = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
