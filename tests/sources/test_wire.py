"""The block transport against the project's real fault-injecting HTTP server, and its translation table."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
from urllib3 import exceptions as u3

from ckptflow.fetch import fetch
from ckptflow.sources.base import FetchSettings
from ckptflow.sources.http import http_client
from ckptflow.sources.wire import BlockTransport, _translate
from tests.fixtures.fault_server import Faults

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def client():
    transport = BlockTransport(pool_size=4, ssl_context=ssl.create_default_context(), block=64 * 1024)
    with httpx.Client(transport=transport, timeout=5.0, follow_redirects=True) as c:
        yield c


def _pool_connections(client: httpx.Client, url: str) -> int:
    transport = client._transport
    assert isinstance(transport, BlockTransport)
    return transport._pool.connection_from_url(url).num_connections


def test_a_body_arrives_whole_and_the_connection_is_reused(http_server, client):
    url = http_server.put("w.bin", DATA)
    for _ in range(3):
        response = client.get(url)
        assert response.status_code == 200
        assert response.content == DATA
        assert response.headers["ETag"]
    assert _pool_connections(client, url) == 1


def test_head_ranges_and_redirects(http_server, client):
    url = http_server.put("w.bin", DATA)
    head = client.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(DATA)
    ranged = client.get(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == DATA[10:20]
    moved = http_server.redirect("old.bin", "w.bin")
    assert client.get(moved).content == DATA


def test_a_body_closed_early_never_leaks_into_the_next_response(http_server, client):
    url = http_server.put("w.bin", DATA)
    with client.stream("GET", url) as response:
        first = next(response.iter_raw())
        assert first == DATA[: len(first)]
    assert client.get(url, headers={"Range": "bytes=0-99"}).content == DATA[:100]


@pytest.mark.parametrize(
    "faults",
    [Faults(drop_after=100_000), Faults(overstate=1000)],
    ids=["connection dropped mid-body", "body shorter than its Content-Length"],
)
def test_a_body_cut_short_is_an_httpx_protocol_error(http_server, client, faults):
    url = http_server.put("w.bin", DATA)
    http_server.faults = faults
    with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", url) as response:
        for _ in response.iter_raw():
            pass


def test_a_slow_body_is_an_httpx_read_timeout(http_server):
    url = http_server.put("w.bin", DATA)
    http_server.faults = Faults(delay=0.5)
    transport = BlockTransport(pool_size=1, ssl_context=ssl.create_default_context())
    with (
        httpx.Client(transport=transport, timeout=httpx.Timeout(5.0, read=0.1)) as client,
        pytest.raises(httpx.ReadTimeout),
        client.stream("GET", url) as response,
    ):
        for _ in response.iter_raw():
            pass


def test_a_refused_connection_is_an_httpx_connect_error(client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/nothing")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (u3.NewConnectionError(None, "refused"), httpx.ConnectError),  # type: ignore[arg-type]
        (u3.ConnectTimeoutError("slow connect"), httpx.ConnectTimeout),
        (u3.ReadTimeoutError(None, "/", "slow read"), httpx.ReadTimeout),  # type: ignore[arg-type]
        (u3.SSLError("bad certificate"), httpx.ConnectError),
        (u3.LocationValueError("no host"), httpx.UnsupportedProtocol),
        (u3.ProtocolError("connection reset"), httpx.RemoteProtocolError),
        (ConnectionResetError("reset"), httpx.NetworkError),
    ],
)
def test_urllib3_failures_become_the_httpx_failures_of_the_same_meaning(raised, expected):
    translated = _translate(raised)
    assert type(translated) is expected
    assert str(raised) in str(translated)


def test_a_fetch_through_the_block_transport_lands_the_right_bytes_in_the_cache(http_server, tmp_path):
    url = http_server.put("big.bin", DATA * 80)  # 80 MiB: parallel parts
    path = fetch(url, cache_dir=tmp_path, transport=BlockTransport(), progress=False).unwrap()
    assert path.read_bytes() == DATA * 80
    assert http_server.count("GET") >= 2


def test_the_http_client_uses_a_given_transport(tmp_path):
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    with http_client(FetchSettings(cache_dir=tmp_path, transport=mock)) as given:
        assert given._transport is mock
