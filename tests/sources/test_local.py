"""Specification of the local source: paths and file:// URIs used in place, checked, never copied."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from returns.result import Success

from ckptflow.config.schema import LocalSource
from ckptflow.errors import ChecksumMismatch, InvalidConfig, NotFound
from ckptflow.sources.base import FetchSettings
from ckptflow.sources.local import SOURCE, fetch_local, local_from_uri


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    return path


def settings(tmp_path: Path, sha256: str | None = None) -> FetchSettings:
    return FetchSettings(cache_dir=tmp_path / "cache", sha256=sha256)


def test_an_existing_file_is_returned_in_place_without_touching_the_cache(checkpoint, tmp_path):
    assert fetch_local(LocalSource(path=str(checkpoint)), settings(tmp_path)) == Success(checkpoint.resolve())
    assert not (tmp_path / "cache").exists()


def test_a_missing_file_is_not_found(tmp_path):
    failure = fetch_local(LocalSource(path=str(tmp_path / "absent.pt")), settings(tmp_path)).failure()
    assert isinstance(failure, NotFound)
    assert "absent.pt" in failure.message


def test_a_directory_is_not_found_with_a_hint_to_name_the_file(tmp_path):
    failure = fetch_local(LocalSource(path=str(tmp_path)), settings(tmp_path)).failure()
    assert isinstance(failure, NotFound)
    assert "directory" in failure.message


def test_a_matching_digest_passes(checkpoint, tmp_path):
    digest = hashlib.sha256(b"weights").hexdigest()
    assert fetch_local(LocalSource(path=str(checkpoint)), settings(tmp_path, digest)) == Success(
        checkpoint.resolve()
    )


def test_a_wrong_digest_is_a_mismatch_and_the_users_file_is_kept(checkpoint, tmp_path):
    wrong = hashlib.sha256(b"other").hexdigest()
    failure = fetch_local(LocalSource(path=str(checkpoint)), settings(tmp_path, wrong)).failure()
    assert isinstance(failure, ChecksumMismatch)
    assert failure.actual == hashlib.sha256(b"weights").hexdigest()
    assert checkpoint.read_bytes() == b"weights"


def test_a_home_relative_path_is_expanded(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(checkpoint.parent))
    assert fetch_local(LocalSource(path="~/model.pt"), settings(tmp_path)) == Success(checkpoint.resolve())


def test_a_bare_path_is_a_local_source():
    assert local_from_uri("runs/ckpt.pt") == Success(LocalSource(path="runs/ckpt.pt"))


@pytest.mark.parametrize("uri", ["file:///data/ckpt%20v2.pt", "file://localhost/data/ckpt%20v2.pt"])
def test_a_file_uri_is_decoded_to_its_path(uri):
    assert local_from_uri(uri) == Success(LocalSource(path="/data/ckpt v2.pt"))


def test_a_file_uri_naming_another_host_is_rejected():
    assert isinstance(local_from_uri("file://fileserver/share/ckpt.pt").failure(), InvalidConfig)


def test_the_spec_routes_file_uris():
    assert (SOURCE.name, SOURCE.schemes, SOURCE.config_type) == ("local", ("file",), LocalSource)
