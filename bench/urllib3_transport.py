"""An experimental ``httpx`` transport over ``urllib3``, to show where the HTTP edge's CPU goes.

httpx parses bodies with h11 in 64 KiB reads, copying every byte through its receive buffer; urllib3
hands ``http.client``'s C-level ``readinto`` 1 MiB at a time. Passing this transport as
``ckptflow.fetch(..., transport=Urllib3Transport())`` keeps everything else of the engine unchanged, so
the difference between the two ckptflow rows of the HTTP benchmark is the transport alone. It is a
benchmark prototype (plain HTTP, no proxies), not part of the library.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import urllib3
from urllib3.exceptions import ConnectTimeoutError as Urllib3ConnectTimeout
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

__all__ = ["Urllib3Transport"]

_CHUNK = 1 << 20


class _Body(httpx.SyncByteStream):
    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self._response.read(_CHUNK, decode_content=False):
                yield chunk
        except ReadTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except (ProtocolError, HTTPError) as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()


class Urllib3Transport(httpx.BaseTransport):
    """Send httpx requests through one urllib3 pool of ``maxsize`` connections per host."""

    def __init__(self, maxsize: int = 16) -> None:
        self._pool = urllib3.PoolManager(maxsize=maxsize, retries=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = urllib3.Timeout(connect=timeouts.get("connect"), read=timeouts.get("read"))
        try:
            response = self._pool.urlopen(
                request.method,
                str(request.url),
                headers=dict(request.headers.multi_items()),
                body=request.read() or None,
                preload_content=False,
                decode_content=False,
                redirect=False,
                retries=False,
                timeout=timeout,
            )
        except Urllib3ConnectTimeout as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except NewConnectionError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except ReadTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except HTTPError as exc:
            raise httpx.TransportError(str(exc)) from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.headers.items()),
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    def close(self) -> None:
        self._pool.clear()
