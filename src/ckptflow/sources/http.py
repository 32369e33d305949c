"""The HTTP edge: a generic ``HttpObject`` over an ``httpx.Client``, and the ``http``/``https`` source.

GCS and Azure reuse ``HttpObject`` by configuration — their own identity, headers, stat URL/method,
``read_info`` (response → ObjectInfo) and ``pin_headers`` (version pinning for a ranged GET) — and
``status_failure`` for the status table. Nothing here creates a client at import time; secrets in
headers and query strings are kept out of every message through ``redact_url``/``scrub``.
"""

from __future__ import annotations

import email.utils
import functools
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import httpx
from attrs import field, frozen
from returns.result import Failure, Result, Success

from ckptflow.config.schema import HttpSource
from ckptflow.config.uris import http_from_uri
from ckptflow.errors import AccessDenied, Error, InvalidConfig, NetworkError, NotFound
from ckptflow.sources.base import (
    Body,
    FetchSettings,
    Interrupted,
    ObjectInfo,
    SourceSpec,
    TransferError,
    Transient,
)
from ckptflow.sources.parts import connection_pool_size
from ckptflow.sources.transfer import download

__all__ = [
    "SOURCE",
    "HttpBody",
    "HttpObject",
    "InfoReader",
    "PinHeaders",
    "fetch_http",
    "http_client",
    "http_from_uri",
    "if_range",
    "info_from_headers",
    "is_secret_name",
    "parse_content_range",
    "parse_retry_after",
    "redact_headers",
    "redact_url",
    "scrub",
    "secrets_of",
    "status_failure",
    "url_identity",
]

InfoReader = Callable[[httpx.Response, str], ObjectInfo]
"""Maps a successful stat response (and the object's identity) to what the engine needs."""

PinHeaders = Callable[[ObjectInfo], Mapping[str, str]]
"""Headers pinning a ranged GET to ``info.version`` (If-Range, If-Match, ...)."""

REDACTED = "***"
_SECRET_WORDS = ("token", "secret", "signature", "password", "passwd", "credential", "auth", "key", "cookie")
_SECRET_NAMES = frozenset({"sig", "code", "session", "api-key", "apikey"})
_SIGNING_PREFIXES = ("x-amz-", "x-goog-")
_SAS_FIELDS = frozenset({"sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "si", "sdd", "skoid", "sktid"})
_RETRYABLE = frozenset({408, 412, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


# --- redaction -------------------------------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    """Whether a header or query parameter of this name may carry a secret."""
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(word in lowered for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """The URL with its password and the values of secret-bearing query parameters replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = [
        (k, REDACTED if is_secret_name(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), parts.fragment))


def url_identity(url: str) -> str:
    """A secret-free cache identity for a URL: no userinfo, fragment, secrets or signing parameters.

    Two signed URLs for the same object (fresh signature, expiry) share an identity and so a cache entry.
    """
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not (is_secret_name(k) or k.lower().startswith(_SIGNING_PREFIXES) or k.lower() in _SAS_FIELDS)
    ]
    return urlunsplit((parts.scheme.lower(), host, parts.path, urlencode(query), ""))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with secret-bearing values replaced by ``***``."""
    return {k: REDACTED if is_secret_name(k) else v for k, v in headers.items()}


def secrets_of(url: str, headers: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secret strings a request carries (header values, query values, password), longest first."""
    parts = urlsplit(url)
    found = {v for k, v in (headers or {}).items() if is_secret_name(k)}
    found |= {v for k, v in parse_qsl(parts.query, keep_blank_values=True) if is_secret_name(k)}
    if parts.password:
        found.add(parts.password)
    for value in list(found):
        found |= {word for word in value.split() if len(word) >= 8}
    return tuple(sorted((s for s in found if len(s) >= 4), key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


# --- status and header parsing (pure) --------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date (never negative)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` as ``(a, b, total)`` (total None for ``*``), or None when malformed."""
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        return None
    first, last, total = match.groups()
    return int(first), int(last), None if total == "*" else int(total)


def status_failure(status: int, what: str, headers: Mapping[str, str]) -> TransferError:
    """The failure an unsuccessful HTTP status means; ``what`` names the object without secrets.

    404/410 → NotFound, 401/403 → AccessDenied, 408/412/425/429/5xx-gateway → Transient (with
    Retry-After), anything else a final NetworkError.
    """
    if status in (404, 410):
        return NotFound(what=what, source=what)
    if status in (401, 403):
        return AccessDenied(what=what, detail=f"HTTP {status}", source=what)
    if status in _RETRYABLE:
        return Transient(
            cause=f"HTTP {status} from {what}", retry_after=parse_retry_after(headers.get("Retry-After"))
        )
    return NetworkError(what=what, attempts=1, cause=f"HTTP {status} (not retried)", source=what)


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("Content-Length", "")
    return int(value) if value.isdigit() and "Content-Encoding" not in headers else None


def info_from_headers(response: httpx.Response, identity: str) -> ObjectInfo:
    """Default ``InfoReader``: size from Content-Length (or a ranged probe's Content-Range), version from
    ETag else Last-Modified, range support unless ``Accept-Ranges: none``."""
    headers = response.headers
    size = _content_length(headers)
    if response.status_code == 206:
        parsed = parse_content_range(headers.get("Content-Range"))
        size = parsed[2] if parsed is not None else None
    version = headers.get("ETag") or headers.get("Last-Modified")
    return ObjectInfo(
        identity=identity,
        size=size,
        version=version,
        supports_range=headers.get("Accept-Ranges", "bytes").strip().lower() != "none",
    )


def if_range(info: ObjectInfo) -> Mapping[str, str]:
    """Default ``PinHeaders``: ``If-Range: <etag or date>``, so a changed object comes back whole (200)."""
    return {"If-Range": info.version} if info.version else {}


# --- the object and its body (effects) -------------------------------------------------------------


class HttpBody:
    """A streaming response body; transport trouble mid-body surfaces as ``Interrupted``."""

    def __init__(
        self, response: httpx.Response, *, start: int, chunk_size: int, secrets: tuple[str, ...]
    ) -> None:
        self.start = start
        self._response = response
        self._chunk_size = chunk_size
        self._secrets = secrets

    def chunks(self) -> Iterator[bytes]:
        """Chunks of about ``chunk_size`` bytes; on failure, what arrived is yielded, then ``Interrupted``."""
        expected = _content_length(self._response.headers)
        received = 0
        pending: list[bytes] = []
        buffered = 0
        try:
            for piece in self._response.iter_bytes():
                received += len(piece)
                pending.append(piece)
                buffered += len(piece)
                if buffered >= self._chunk_size:
                    yield b"".join(pending)
                    pending, buffered = [], 0
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.TimeoutException) as exc:
            if pending:
                yield b"".join(pending)
            raise Interrupted(scrub(f"{type(exc).__name__}: {exc}", self._secrets)) from None
        if pending:
            yield b"".join(pending)
        if expected is not None and received < expected:
            raise Interrupted(f"body ended after {received} of {expected} bytes")

    def close(self) -> None:
        self._response.close()


@frozen(kw_only=True)
class HttpObject:
    """One object behind a URL. ``identity`` names it without secrets; the URL and headers may hold them.

    ``stat_url``/``stat_method`` describe the metadata request (HEAD on the URL by default; a JSON API
    may use GET elsewhere). A HEAD refused with 403/405/501 is retried once as a one-byte ranged GET,
    which presigned URLs (signed for GET only) accept.
    """

    client: httpx.Client = field(repr=False)
    url: str = field(repr=False)
    identity: str
    headers: Mapping[str, str] = field(factory=dict, repr=False)
    read_info: InfoReader = field(default=info_from_headers, repr=False)
    pin_headers: PinHeaders = field(default=if_range, repr=False)
    stat_url: str | None = field(default=None, repr=False)
    stat_method: str = "HEAD"
    chunk_size: int = 1 << 20

    @property
    def secrets(self) -> tuple[str, ...]:
        return secrets_of(self.url, self.headers) + secrets_of(self.stat_url or "", {})

    def _send(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> Result[httpx.Response, TransferError]:
        """Send one request (body streamed), translating httpx's exceptions into failures."""
        merged = {"Accept-Encoding": "identity", **self.headers, **headers}
        try:
            request = self.client.build_request(method, url, headers=merged)
            return Success(self.client.send(request, stream=True))
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Failure(InvalidConfig(problems=(f"{self.identity}: {scrub(str(exc), self.secrets)}",)))
        except httpx.TooManyRedirects:
            return Failure(NetworkError(what=self.identity, attempts=1, cause="too many redirects"))
        except httpx.TransportError as exc:
            return Failure(Transient(cause=scrub(f"{type(exc).__name__}: {exc}", self.secrets)))

    def _failed(self, response: httpx.Response) -> Failure[TransferError]:
        response.close()
        return Failure(status_failure(response.status_code, self.identity, response.headers))

    def stat(self) -> Result[ObjectInfo, TransferError]:
        return self._send(self.stat_method, self.stat_url or self.url, {}).bind(self._stat_response)

    def _stat_response(self, response: httpx.Response) -> Result[ObjectInfo, TransferError]:
        fallback = (
            self.stat_method == "HEAD" and self.stat_url is None and response.status_code in (403, 405, 501)
        )
        if fallback:
            response.close()
            probe = self._send("GET", self.url, {"Range": "bytes=0-0"})
            return probe.bind(lambda r: self._info(r, read=False) if r.is_success else self._failed(r))
        return self._info(response, read=True) if response.is_success else self._failed(response)

    def _info(self, response: httpx.Response, *, read: bool) -> Result[ObjectInfo, TransferError]:
        """The object's description; the body is read for a metadata request, never for a ranged probe."""
        try:
            if read:
                response.read()
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.TimeoutException) as exc:
            return Failure(Transient(cause=scrub(f"{type(exc).__name__}: {exc}", self.secrets)))
        finally:
            response.close()
        return Success(self.read_info(response, self.identity))

    def open(self, info: ObjectInfo, start: int = 0, end: int | None = None) -> Result[Body, TransferError]:
        headers: dict[str, str] = {}
        if start > 0 or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
            headers.update(self.pin_headers(info))
        return self._send("GET", self.url, headers).bind(self._body)

    def _body(self, response: httpx.Response) -> Result[Body, TransferError]:
        if response.status_code == 206:
            parsed = parse_content_range(response.headers.get("Content-Range"))
            if parsed is None:
                response.close()
                return Failure(Transient(cause=f"malformed Content-Range from {self.identity}"))
            begin = parsed[0]
        elif response.status_code == 200:
            begin = 0
        else:
            return self._failed(response)
        return Success(HttpBody(response, start=begin, chunk_size=self.chunk_size, secrets=self.secrets))


# --- the http/https source -------------------------------------------------------------------------


@functools.cache
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """httpx's verifying context for these CA locations (from the environment); built once per process
    because loading the CA bundle costs tens of milliseconds, more than a whole cache hit."""
    return httpx.create_ssl_context(trust_env=True)


def http_client(settings: FetchSettings, *, timeout: float | None = None) -> httpx.Client:
    """A client for one fetch: redirects followed, timeouts from settings, ``settings.transport`` if given
    (e.g. ``ckptflow.sources.wire.BlockTransport``), and a connection pool large enough for every
    parallel part to keep its connection."""
    transport = settings.transport if isinstance(settings.transport, httpx.BaseTransport) else None
    pool = connection_pool_size(settings.options)
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(settings.timeout if timeout is None else timeout),
        follow_redirects=True,
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        verify=_tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
    )


_DEFAULT_TIMEOUT = attrs.fields(HttpSource).timeout.default


def fetch_http(config: HttpSource, settings: FetchSettings) -> Result[Path, Error]:
    """Download ``config.url`` into the cache (or resolve it from the cache) and return the blob path.

    The timeout is the config's when it sets one, else ``settings.timeout``.
    """
    timeout = settings.timeout if config.timeout == _DEFAULT_TIMEOUT else config.timeout
    with http_client(settings, timeout=timeout) as client:
        obj = HttpObject(
            client=client, url=config.url, identity=url_identity(config.url), headers=config.headers
        )
        return download(obj, settings)


SOURCE = SourceSpec(
    name="http",
    schemes=("http", "https"),
    config_type=HttpSource,
    from_uri=http_from_uri,
    fetch=fetch_http,
    description="HTTP(S) URLs, with Range resume, ETag pinning, Retry-After and custom headers",
)
