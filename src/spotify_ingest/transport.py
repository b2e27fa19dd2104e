"""The wire under the client: an httpx transport that sends with aiohttp.

:class:`~spotify_ingest.client.SpotifyClient` speaks httpx (requests, responses, timeouts,
errors; ``httpx.ASGITransport`` runs every test against the simulator in process), but httpx's
own HTTP/1.1 stack (httpcore, h11, anyio) costs about 0.9 ms of CPU per request, which made
the HTTP layer a third of the crawler's CPU at 100 requests/s. :class:`AiohttpTransport` keeps the
httpx interface and hands the bytes to aiohttp, whose C-accelerated parser does the same request
for a fraction of that (see BENCHMARKS.md, "Client overhead").

:meth:`AiohttpTransport.get` is the client's shortcut for API calls: a URL string already
encoded and a header list, no ``httpx.Request`` (whose URL parsing cost more CPU than the rest of
the request); its response has no ``request`` attached. Errors and everything below are the same.

What it keeps from httpx's transport, so the client cannot tell the difference:

* the request as httpx built it (method, URL, headers, body) and httpx's per-request timeouts
  (``connect``, ``read``, ``pool``), mapped to aiohttp's;
* the raw body (aiohttp does not decompress): httpx decodes it by ``Content-Encoding`` and counts
  ``num_bytes_downloaded`` as it reads, which is what the client's truncation check compares with
  ``Content-Length``;
* httpx's exception classes: a timeout is ``httpx.ConnectTimeout`` (a wait for a pooled
  connection included: aiohttp does not tell the two apart) or ``ReadTimeout``, a refused or
  failed connection ``httpx.ConnectError``, a connection that closed or broke mid-response
  ``httpx.RemoteProtocolError`` / ``ReadError``, anything else aiohttp raises
  ``httpx.TransportError``;
* TLS verification on, with httpx's default trust store (certifi, or ``SSL_CERT_FILE`` /
  ``SSL_CERT_DIR``);
* one attempt per request: aiohttp's own silent resend on a broken keep-alive connection is
  switched off, since a request the server may have counted must go through the client's retry
  accounting and the rate controller.

Connections are pooled (keep-alive 30 s) up to ``max_connections``; the session is created on
first use inside the running event loop and closed by :meth:`aclose` (the client's ``aclose``).
Proxies from the environment are httpx's business: the client uses httpx's own transport when
``HTTP(S)_PROXY`` is set.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpTransport"]


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that sends requests with one ``aiohttp.ClientSession``."""

    def __init__(self, max_connections: int, *, keepalive: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive
        self._tls: ssl.SSLContext = httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive,
                ssl=self._tls,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes by Content-Encoding
                skip_auto_headers=("User-Agent", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
            # aiohttp silently resends an idempotent request once when a reused connection
            # breaks before the answer. The server may have counted the first one, and every
            # request must pass the rate controller, so the client retries (and counts) itself.
            # No public switch exists; the reliability suite's reset test guards this.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content if request.method not in ("GET", "HEAD") else None
        response = await self._send(
            request.method,
            yarl.URL(str(request.url), encoded=True),
            request.headers.multi_items(),
            request.extensions.get("timeout", {}),
            body,
            request,
        )
        response.request = request
        return response

    async def get(
        self, url: str, headers: list[tuple[str, str]], timeouts: Mapping[str, float | None]
    ) -> httpx.Response:
        """GET ``url`` (already percent-encoded) without building an ``httpx.Request``: httpx
        parses and re-validates every URL it is given, ~0.1 ms a request in a crawl. The
        response is read in full and has no ``request`` attached; errors are the same
        ``httpx`` exceptions as :meth:`handle_async_request` raises."""
        return await self._send("GET", yarl.URL(url, encoded=True), headers, timeouts, None, None)

    async def _send(
        self,
        method: str,
        url: yarl.URL,
        headers: list[tuple[str, str]],
        timeouts: Mapping[str, float | None],
        body: bytes | None,
        request: httpx.Request | None,
    ) -> httpx.Response:
        session = self._open()
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),  # waiting for a free connection, then connecting
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=timeout,
                compress=None,
            ) as response:
                content = await response.read()
                status = response.status
                raw_headers = response.raw_headers
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(_describe(exc), request=request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise httpx.ReadTimeout(_describe(exc), request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        except (
            aiohttp.ServerDisconnectedError,  # closed before or while answering
            aiohttp.ClientPayloadError,  # the body ended early
            aiohttp.ClientResponseError,  # a malformed status line or headers
        ) as exc:
            raise httpx.RemoteProtocolError(_describe(exc), request=request) from exc
        except aiohttp.ClientOSError as exc:
            raise httpx.ReadError(_describe(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(_describe(exc), request=request) from exc
        headers_out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers]
        return httpx.Response(status, headers=headers_out, stream=httpx.ByteStream(content))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(exc: BaseException) -> str:
    """The exception's class and message (never the URL's query, which holds no secret, nor
    headers, which do)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
