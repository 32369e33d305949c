"""An optional HTTP wire (edge): an ``httpx`` transport that reads response bodies in large blocks.

httpx's default transport parses every response with h11, which copies each 64 KiB read through a
pure-Python receive buffer. ``BlockTransport`` keeps httpx as the client (redirects, auth flows,
timeouts, the response API) and sends each request through a ``urllib3`` connection pool, whose
``http.client`` reads a whole block (1 MiB by default) per call: about half the user-space CPU per GiB.
The bytes then cross the kernel in large, cache-cold copies, so on some machines the time saved in
Python comes back as system time; ``docs/performance.md`` has both measured on this project's
machine, where httpx's own transport stays the default. Hand it to any HTTP, GCS or Azure fetch::

    cf.fetch(url, transport=BlockTransport())

Failures are translated into httpx's own exceptions here, so the callers' handling of
``httpx.TransportError`` and friends stays the single place that maps them to ckptflow failures. It
does not route through proxies (``HTTP(S)_PROXY``): behind one, keep httpx's transport.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import urllib3
from urllib3 import exceptions as u3

__all__ = ["BLOCK_SIZE", "BlockTransport"]

BLOCK_SIZE = 1 << 20
"""Bytes asked of the socket per read of a response body."""


def _translate(exc: Exception) -> httpx.TransportError:
    """urllib3's exception as the httpx exception of the same meaning (the message kept)."""
    message = str(exc)
    if isinstance(exc, u3.NewConnectionError | u3.NameResolutionError):
        return httpx.ConnectError(message)
    if isinstance(exc, u3.ConnectTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, u3.ReadTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, u3.SSLError):
        return httpx.ConnectError(message)
    if isinstance(exc, u3.LocationValueError):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, u3.ProtocolError | u3.DecodeError):
        return httpx.RemoteProtocolError(message)
    return httpx.NetworkError(message)


class _BlockStream(httpx.SyncByteStream):
    """A response body read ``block`` bytes at a time, straight from ``http.client``."""

    def __init__(self, response: urllib3.BaseHTTPResponse, block: int) -> None:
        self._response = response
        self._block = block

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self._response.read(self._block, decode_content=False):
                yield chunk
        except (u3.HTTPError, OSError) as exc:
            raise _translate(exc) from exc

    def close(self) -> None:
        # A body read to its end has already returned its connection to the pool; one closed early
        # closes its connection, so the rest of a large body is never drained.
        self._response.close()
        self._response.release_conn()


class BlockTransport(httpx.BaseTransport):
    """httpx requests over one ``urllib3`` pool: ``pool_size`` kept connections per host, TLS verified
    with ``ssl_context`` (default: the system's CAs, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), no
    redirects or retries of its own (the client and the engine do those)."""

    def __init__(
        self, *, pool_size: int = 16, ssl_context: ssl.SSLContext | None = None, block: int = BLOCK_SIZE
    ) -> None:
        self._block = block
        self._pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=pool_size,
            block=False,
            retries=False,
            ssl_context=ssl_context if ssl_context is not None else ssl.create_default_context(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        timeout = urllib3.Timeout(connect=timeouts.get("connect"), read=timeouts.get("read"))
        headers = urllib3.HTTPHeaderDict()
        for name, value in request.headers.multi_items():
            headers.add(name, value)
        try:
            response = self._pool.urlopen(
                request.method,
                str(request.url),
                headers=headers,
                body=request.read() or None,
                preload_content=False,
                decode_content=False,
                redirect=False,
                retries=False,
                timeout=timeout,
                assert_same_host=False,
            )
        except (u3.HTTPError, OSError) as exc:
            raise _translate(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.headers.items()),
            stream=_BlockStream(response, self._block),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    def close(self) -> None:
        self._pool.clear()
