"""No identity, version, key, artifact path or blob name can make the cache touch a path outside itself.

Hostile names (``..``, absolute paths, NUL, backslashes, ``~``) go through the cache API directly
(hypothesis) and through the sources' URI parsers and fetches; afterwards every file that exists in the
sandbox around the cache lies inside the cache, and files planted outside it are untouched.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure

from ckptflow.cache import (
    blob_path,
    entries,
    identity_lock,
    ingest_file,
    lookup,
    open_cache,
    part_path,
    prune,
    remove_entry,
    verify,
)
from ckptflow.errors import ERROR_TYPES, InvalidConfig
from ckptflow.fetch import fetch
from ckptflow.sources.registry import resolve
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.s3_server import S3Bucket

FRAGMENTS = ["..", "/", "\\", "\x00", "/etc/passwd", "C:\\Windows", "~", "%2e%2e%2f", ".", "//", "\n"]
hostile = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), min_size=1, max_size=8).map("".join)
VICTIM = b"outside the cache: must survive"


@contextmanager
def sandbox() -> Iterator[tuple[Path, Path]]:
    """A directory holding a cache root and, beside it, a victim file that must never change."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "victim").write_bytes(VICTIM)
        yield root, root / "cache"


def files_outside(root: Path, cache_root: Path) -> list[Path]:
    """Every file in the sandbox that is neither inside the cache nor the planted victim."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.resolve().is_relative_to(cache_root.resolve()) and p.name != "victim"
    ]


def inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


@settings(max_examples=60, deadline=None)
@given(identity=hostile, version=st.none() | hostile)
def test_hostile_identities_and_versions_stay_inside_the_cache(identity, version):
    with sandbox() as (root, cache_root):
        cache = open_cache(cache_root).unwrap()
        source = cache.tmp / "incoming"
        source.write_bytes(b"weights")
        placed = ingest_file(cache, source, identity=identity, version=version).unwrap()
        assert inside(placed, cache.blobs)
        assert lookup(cache, identity, version) == placed
        assert [e.identity for e in entries(cache)] == [identity]
        assert inside(part_path(cache, identity, version), cache.tmp)
        with identity_lock(cache, identity) as lock:
            assert lock is not None and inside(lock.path, cache.locks)
        remove_entry(cache, identity).unwrap()
        assert files_outside(root, cache_root) == []
        assert (root / "victim").read_bytes() == VICTIM


@settings(max_examples=40, deadline=None)
@given(name=hostile)
def test_a_blob_is_only_ever_named_by_a_digest(name):
    with sandbox() as (_, cache_root):
        cache = open_cache(cache_root).unwrap()
        with pytest.raises(ValueError, match="not a sha256"):
            blob_path(cache, name)


@pytest.mark.parametrize("planted", ["../../victim", "../../../victim", "/etc/passwd", "a" * 63 + "/"])
def test_a_tampered_ref_pointing_outside_is_ignored_and_never_followed(planted):
    with sandbox() as (root, cache_root):
        cache = open_cache(cache_root).unwrap()
        ingest_file(cache, _file(cache.tmp / "in", b"w"), identity="id", version="v").unwrap()
        (ref,) = cache.refs.glob("*/*.json")
        ref.write_text(json.dumps({**json.loads(ref.read_text()), "sha256": planted}))
        assert lookup(cache, "id", "v") is None
        verify(cache, remove_corrupt=True).unwrap()
        prune(cache, forget=("id", planted), tmp_age=0.0).unwrap()
        assert (root / "victim").read_bytes() == VICTIM
        assert files_outside(root, cache_root) == []


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- through the sources ----------------------------------------------------------------------------

key_names = st.lists(st.sampled_from(["..", ".", "x", "%2e%2e", "\\", "~", ""]), min_size=1, max_size=6).map(
    "/".join
)
URI_TEMPLATES = ["s3://bucket-name/{}", "gs://bucket-name/{}", "az://container/{}", "runs:/0a1b2c/{}"]


@settings(max_examples=30, deadline=None)
@given(template=st.sampled_from(URI_TEMPLATES), key=key_names)
def test_hostile_keys_in_uris_are_refused_or_stay_inside_the_cache(template, key):
    uri = template.format(key)
    with sandbox() as (root, cache_root):
        result = fetch(uri, cache_dir=cache_root, offline=True)
        assert isinstance(result, Failure)
        assert isinstance(result.failure(), ERROR_TYPES)
        assert files_outside(root, cache_root) == []
        assert (root / "victim").read_bytes() == VICTIM


@pytest.mark.parametrize("path", ["../../escape.pt", "a/../../../escape.pt", "/abs/model.pt", "x\\..\\y.pt"])
def test_mlflow_artifact_paths_that_climb_out_are_invalid_config(path):
    failure = resolve(f"runs:/0a1b2c3d/{path}").failure()
    assert isinstance(failure, InvalidConfig)


@pytest.mark.parametrize(
    "key", ["../../escape.pt", "a/../../b/../../escape.pt", "..\\..\\escape.pt", "~/escape.pt"]
)
def test_an_s3_object_with_a_climbing_key_lands_in_the_cache(s3_bucket: S3Bucket, tmp_path, key):
    s3_bucket.put(key, b"weights from a hostile key")
    root, cache_root = tmp_path, tmp_path / "deep" / "cache"
    options = {"s3_endpoint_url": s3_bucket.endpoint, "retry": RetryPolicy(attempts=1)}
    path = fetch(s3_bucket.uri(key), cache_dir=cache_root, options=options).unwrap()
    assert inside(path, cache_root / "blobs")
    assert path.read_bytes() == b"weights from a hostile key"
    assert files_outside(root, cache_root) == []
