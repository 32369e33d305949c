"""Specification of ``fetch``: any reference to a verified local path, through the registry."""

from __future__ import annotations

import hashlib

from returns.result import Success

from ckptflow.config.schema import CheckpointConfig, HttpSource, LocalSource
from ckptflow.errors import InvalidConfig, NotFound
from ckptflow.events import collect
from ckptflow.fetch import fetch
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import Faults, FaultServer

FAST = {"retry": RetryPolicy(base=0.01, cap=0.05)}


def test_a_local_path_is_returned_as_it_is(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"weights")
    assert fetch(str(path), cache_dir=tmp_path / "cache") == Success(path.resolve())
    assert fetch(path, cache_dir=tmp_path / "cache") == Success(path.resolve())


def test_a_url_is_downloaded_into_the_cache(http_server: FaultServer, tmp_path):
    url = http_server.put("ckpt.pt", b"remote weights")
    path = fetch(url, cache_dir=tmp_path / "cache", options=FAST).unwrap()
    assert path.is_relative_to(tmp_path / "cache")
    assert path.read_bytes() == b"remote weights"


def test_the_default_cache_dir_comes_from_the_environment(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("CKPTFLOW_CACHE", str(tmp_path / "env-cache"))
    url = http_server.put("ckpt.pt", b"remote weights")
    assert fetch(url, options=FAST).unwrap().is_relative_to(tmp_path / "env-cache")


def test_a_checkpoint_config_brings_its_cache_dir_and_digest(http_server, tmp_path):
    url = http_server.put("ckpt.pt", b"remote weights")
    config = CheckpointConfig(
        source=HttpSource(url=url),
        cache_dir=str(tmp_path / "cfg-cache"),
        sha256=hashlib.sha256(b"remote weights").hexdigest(),
    )
    assert fetch(config, options=FAST).unwrap().is_relative_to(tmp_path / "cfg-cache")


def test_a_malformed_digest_is_invalid_before_any_request(http_server, tmp_path):
    url = http_server.put("ckpt.pt", b"remote weights")
    assert isinstance(fetch(url, cache_dir=tmp_path, sha256="abc").failure(), InvalidConfig)
    assert http_server.count() == 0


def test_an_unknown_scheme_is_invalid(tmp_path):
    assert isinstance(fetch("ftp://host/ckpt.pt", cache_dir=tmp_path).failure(), InvalidConfig)


def test_offline_fetch_of_an_uncached_url_is_not_found_without_a_request(http_server, tmp_path):
    url = http_server.put("ckpt.pt", b"remote weights")
    assert isinstance(fetch(url, cache_dir=tmp_path, offline=True).failure(), NotFound)
    assert http_server.count() == 0


def test_offline_fetch_after_an_online_one_needs_no_server(http_server, tmp_path):
    url = http_server.put("ckpt.pt", b"remote weights")
    online = fetch(url, cache_dir=tmp_path, options=FAST).unwrap()
    http_server.reset()
    assert fetch(url, cache_dir=tmp_path, offline=True) == Success(online)


def test_a_failure_names_where_it_happened(tmp_path):
    failure = fetch(LocalSource(path=str(tmp_path / "absent.pt")), cache_dir=tmp_path).failure()
    assert isinstance(failure, NotFound)
    assert failure.source == "local"


# --- what a fetch tells -------------------------------------------------------------------------


def test_a_fetch_reports_its_steps_as_events(http_server, tmp_path):
    url = http_server.put("ckpt.pt", b"remote weights")
    http_server.faults = Faults(fail_first=1, fail_status=503, retry_after="0")
    with collect() as first:
        fetch(url, cache_dir=tmp_path, options=FAST).unwrap()
    with collect() as second:
        fetch(url, cache_dir=tmp_path, options=FAST).unwrap()
    assert [e.name for e in first.events] == ["fetch.retry", "fetch.started", "fetch.done"]
    assert [e.name for e in second.events] == ["cache.hit"]
    assert all(e.stage == "fetch" and e.data["identity"] == url for e in first.events)
