"""Specification of the HTTP edge: status table, header parsing, HttpObject over httpx, redaction."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from ckptflow.config.schema import HttpSource
from ckptflow.errors import AccessDenied, InvalidConfig, NetworkError, NotFound
from ckptflow.sources.base import FetchSettings, Interrupted, ObjectInfo, Transient
from ckptflow.sources.http import (
    SOURCE,
    HttpObject,
    http_from_uri,
    if_range,
    info_from_headers,
    parse_content_range,
    parse_retry_after,
    redact_headers,
    redact_url,
    scrub,
    secrets_of,
    status_failure,
    url_identity,
)
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import Faults

TOKEN = "Bearer s3cr3t-t0ken-value"
SIGNED = "https://host.example/ckpt.pt?X-Amz-Signature=deadbeefcafe&X-Amz-Expires=60&part=2"


# --- status table --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_missing_statuses_are_not_found(status):
    assert status_failure(status, "u", {}) == NotFound(what="u", source="u")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_statuses_are_access_denied(status):
    assert isinstance(status_failure(status, "u", {}), AccessDenied)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_busy_and_gateway_statuses_are_transient(status):
    assert isinstance(status_failure(status, "u", {}), Transient)


@pytest.mark.parametrize("status", [400, 405, 416, 418])
def test_other_client_errors_are_final(status):
    assert isinstance(status_failure(status, "u", {}), NetworkError)


def test_transient_status_carries_retry_after_seconds():
    assert status_failure(503, "u", {"Retry-After": "7"}) == Transient(
        cause="HTTP 503 from u", retry_after=7.0
    )


def test_retry_after_accepts_an_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)


def test_retry_after_in_the_past_means_no_wait():
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "1.5e9x"])
def test_unreadable_retry_after_is_ignored(value):
    assert parse_retry_after(value) is None


@given(st.text(max_size=40))
def test_retry_after_is_never_negative(value):
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0.0


def test_content_range_is_parsed():
    assert parse_content_range("bytes 10-19/100") == (10, 19, 100)
    assert parse_content_range("bytes 0-0/*") == (0, 0, None)
    assert parse_content_range("items 1-2/3") is None


# --- info and pinning ----------------------------------------------------------------------------


def response(status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("HEAD", "http://h/x"))


def test_info_reads_size_etag_and_range_support():
    info = info_from_headers(response(headers={"Content-Length": "42", "ETag": '"e1"'}), "id")
    assert info == ObjectInfo(identity="id", size=42, version='"e1"', supports_range=True)


def test_info_falls_back_to_last_modified_as_the_version():
    modified = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert info_from_headers(response(headers={"Last-Modified": modified}), "id").version == modified


def test_info_honours_accept_ranges_none():
    assert not info_from_headers(response(headers={"Accept-Ranges": "none"}), "id").supports_range


def test_info_of_a_ranged_probe_takes_the_size_from_content_range():
    probe = response(206, {"Content-Range": "bytes 0-0/1234", "Content-Length": "1"})
    assert info_from_headers(probe, "id").size == 1234


def test_pinning_defaults_to_if_range_on_the_version():
    assert if_range(ObjectInfo(identity="i", size=1, version='"e"')) == {"If-Range": '"e"'}
    assert if_range(ObjectInfo(identity="i", size=1, version=None)) == {}


# --- HttpObject over a MockTransport -------------------------------------------------------------


def mock_object(handler, **kw) -> HttpObject:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return HttpObject(client=client, url="http://h/x.pt", identity="http://h/x.pt", **kw)


def test_stat_maps_a_successful_head_to_object_info():
    obj = mock_object(lambda r: httpx.Response(200, headers={"Content-Length": "5", "ETag": '"v"'}))
    assert obj.stat() == Success(ObjectInfo(identity="http://h/x.pt", size=5, version='"v"'))


def test_stat_of_a_missing_object_is_not_found():
    result = mock_object(lambda r: httpx.Response(404)).stat()
    assert result == Failure(NotFound(what="http://h/x.pt", source="http://h/x.pt"))


def test_stat_of_a_rate_limited_object_is_transient_with_the_servers_retry_after():
    result = mock_object(lambda r: httpx.Response(429, headers={"Retry-After": "3"})).stat()
    assert result == Failure(Transient(cause="HTTP 429 from http://h/x.pt", retry_after=3.0))


def test_stat_connection_failure_is_transient():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = mock_object(refuse).stat()
    assert isinstance(result.failure(), Transient)


def test_a_head_refused_like_a_presigned_url_is_retried_as_a_one_byte_get():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(403)
        assert request.headers["Range"] == "bytes=0-0"
        return httpx.Response(206, headers={"Content-Range": "bytes 0-0/99", "ETag": '"e"'}, content=b"x")

    assert mock_object(handler).stat().unwrap().size == 99


def test_stat_can_use_another_url_method_and_reader():
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        return httpx.Response(200, json={"size": "7", "generation": "3"})

    def reader(resp: httpx.Response, identity: str) -> ObjectInfo:
        meta = resp.json()
        return ObjectInfo(identity=identity, size=int(meta["size"]), version=meta["generation"])

    obj = mock_object(handler, stat_url="http://h/meta", stat_method="GET", read_info=reader)
    assert obj.stat().unwrap() == ObjectInfo(identity="http://h/x.pt", size=7, version="3")
    assert seen == [("GET", "http://h/meta")]


def test_open_from_an_offset_asks_for_the_range_pinned_to_the_version():
    captured: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        captured.update(request.headers)
        return httpx.Response(206, headers={"Content-Range": "bytes 3-4/5"}, content=b"de")

    body = mock_object(handler).open(ObjectInfo(identity="i", size=5, version='"e"'), 3).unwrap()
    assert (captured["range"], captured["if-range"]) == ("bytes=3-", '"e"')
    assert body.start == 3
    assert b"".join(body.chunks()) == b"de"


def test_open_reports_where_the_body_really_starts_when_range_is_ignored():
    body = mock_object(lambda r: httpx.Response(200, content=b"abcde")).open(
        ObjectInfo(identity="i", size=5), 3
    )
    assert body.unwrap().start == 0


def test_custom_headers_are_sent_on_every_request():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Team"))
        return httpx.Response(200, headers={"Content-Length": "1"}, content=b"x")

    obj = mock_object(handler, headers={"X-Team": "vision"})
    obj.stat()
    obj.open(obj.stat().unwrap(), 0)
    assert seen == ["vision", "vision", "vision"]


class FailingStream(httpx.SyncByteStream):
    """Yields some bytes, then fails the way a dropped connection does."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __iter__(self) -> Iterator[bytes]:
        yield b"abc"
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadError("reset"), httpx.RemoteProtocolError("incomplete"), httpx.ReadTimeout("slow")],
    ids=["read-error", "protocol-error", "read-timeout"],
)
def test_a_body_failing_mid_stream_yields_what_arrived_then_is_interrupted(exc):
    obj = mock_object(lambda r: httpx.Response(200, stream=FailingStream(exc)))
    body = obj.open(ObjectInfo(identity="i", size=10), 0).unwrap()
    received: list[bytes] = []
    with pytest.raises(Interrupted):
        received.extend(body.chunks())
    assert received == [b"abc"]


def test_a_body_shorter_than_its_content_length_is_interrupted():
    class Short(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"abc"

    obj = mock_object(lambda r: httpx.Response(200, headers={"Content-Length": "10"}, stream=Short()))
    with pytest.raises(Interrupted, match="3 of 10"):
        list(obj.open(ObjectInfo(identity="i", size=10), 0).unwrap().chunks())


# --- secrets -------------------------------------------------------------------------------------


def test_redacted_url_hides_signatures_and_passwords_but_keeps_the_rest():
    shown = redact_url("https://user:pw1234@host/p.pt?X-Amz-Signature=abcdef123&part=2")
    assert "pw1234" not in shown and "abcdef123" not in shown
    assert shown.startswith("https://user:***@host/p.pt?") and "part=2" in shown


def test_url_identity_drops_signing_parameters_so_resigned_urls_share_a_cache_entry():
    again = SIGNED.replace("deadbeefcafe", "0123456789ab").replace("60", "3600")
    assert url_identity(SIGNED) == url_identity(again) == "https://host.example/ckpt.pt?part=2"


def test_redacted_headers_hide_credentials():
    assert redact_headers({"Authorization": TOKEN, "Accept": "*/*"}) == {
        "Authorization": "***",
        "Accept": "*/*",
    }


def test_scrub_removes_every_secret_a_request_carries():
    secrets = secrets_of(SIGNED, {"Authorization": TOKEN})
    text = scrub(f"failed {SIGNED} with {TOKEN}", secrets)
    assert "deadbeefcafe" not in text and "s3cr3t-t0ken-value" not in text


def test_object_repr_shows_no_url_or_headers():
    obj = mock_object(lambda r: httpx.Response(200), headers={"Authorization": TOKEN})
    assert "s3cr3t" not in repr(obj)


def test_transport_failure_messages_never_carry_the_token():
    def leak(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot send {request.headers['Authorization']}", request=request)

    failure = mock_object(leak, headers={"Authorization": TOKEN}).stat().failure()
    assert isinstance(failure, Transient)
    assert "s3cr3t-t0ken-value" not in failure.cause


# --- the http source against the real server -----------------------------------------------------


def settings_for(tmp_path: Path, **kw) -> FetchSettings:
    return FetchSettings(
        cache_dir=tmp_path / "cache", options={"retry": RetryPolicy(base=0.01, cap=0.05)}, **kw
    )


def test_from_uri_accepts_http_and_https_urls():
    assert http_from_uri("https://h/x.pt") == Success(HttpSource(url="https://h/x.pt"))


def test_from_uri_rejects_a_url_without_a_host_and_hides_its_secrets():
    result = http_from_uri("https:///x.pt?sig=topsecret")
    assert isinstance(result.failure(), InvalidConfig)
    assert "topsecret" not in result.failure().message


def test_redirects_are_followed(http_server, tmp_path):
    http_server.put("real.pt", b"payload")
    moved = http_server.redirect("old.pt", http_server.url("real.pt"))
    path = SOURCE.fetch(HttpSource(url=moved), settings_for(tmp_path)).unwrap()
    assert path.read_bytes() == b"payload"


def test_required_headers_are_sent_to_the_server(http_server, tmp_path):
    url = http_server.put("private.pt", b"secret weights")
    http_server.required_headers["Authorization"] = TOKEN
    config = HttpSource(url=url, headers={"Authorization": TOKEN})
    assert SOURCE.fetch(config, settings_for(tmp_path)).unwrap().read_bytes() == b"secret weights"


def test_a_missing_token_is_access_denied_without_retrying(http_server, tmp_path):
    url = http_server.put("private.pt", b"secret weights")
    http_server.required_headers["Authorization"] = TOKEN
    result = SOURCE.fetch(HttpSource(url=url), settings_for(tmp_path))
    assert isinstance(result.failure(), AccessDenied)
    assert http_server.count() == 1


def test_a_signed_url_never_reaches_a_failure_message(http_server, tmp_path):
    url = http_server.url("absent.pt") + "?X-Amz-Signature=verysecretsig"
    failure = SOURCE.fetch(HttpSource(url=url), settings_for(tmp_path)).failure()
    assert isinstance(failure, NotFound)
    assert "verysecretsig" not in failure.message and "verysecretsig" not in repr(failure)


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_connection_refused_is_retried_then_a_network_error(tmp_path, unused_port):
    url = f"http://127.0.0.1:{unused_port}/x.pt"
    failure = SOURCE.fetch(HttpSource(url=url), settings_for(tmp_path)).failure()
    assert isinstance(failure, NetworkError)
    assert failure.attempts == RetryPolicy().attempts


def test_fetch_result_is_the_servers_bytes(http_server, tmp_path):
    data = hashlib.sha256(b"seed").digest() * 1000
    url = http_server.put("w.pt", data)
    assert SOURCE.fetch(HttpSource(url=url), settings_for(tmp_path)).unwrap().read_bytes() == data


def test_the_fetch_timeout_applies_when_the_config_sets_none(http_server, tmp_path):
    url = http_server.put("slow.pt", b"x" * 200_000)
    http_server.faults = Faults(delay=1.0)
    failure = SOURCE.fetch(HttpSource(url=url), settings_for(tmp_path, timeout=0.2)).failure()
    assert isinstance(failure, NetworkError)
    assert "Timeout" in failure.cause
