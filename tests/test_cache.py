"""Specification of the content-addressed cache: layout, refs, ingest, decide, list/verify/prune, locks."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure

from ckptflow.cache import (
    Cache,
    CacheState,
    Fetch,
    Hit,
    LockOwner,
    Ref,
    Resume,
    blob_path,
    break_stale_lock,
    cache_state,
    decide,
    default_cache_dir,
    entries,
    identity_lock,
    ingest_file,
    lock_is_stale,
    lookup,
    lookup_latest,
    open_cache,
    part_path,
    prune,
    remove_entry,
    verify,
    write_ref,
)
from ckptflow.errors import CacheUnavailable, ChecksumMismatch
from ckptflow.events import collect
from ckptflow.sources.base import ObjectInfo


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return open_cache(tmp_path / "cache").unwrap()


def source_file(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- location ------------------------------------------------------------------------------------


def test_default_dir_prefers_ckptflow_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CKPTFLOW_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"


def test_default_dir_falls_back_to_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("CKPTFLOW_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ckptflow"


def test_default_dir_falls_back_to_home_dot_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CKPTFLOW_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "ckptflow"


def test_open_cache_creates_its_directories(tmp_path):
    cache = open_cache(tmp_path / "new").unwrap()
    assert all(d.is_dir() for d in (cache.blobs, cache.refs, cache.tmp, cache.locks))


def test_a_cache_that_cannot_be_created_is_unavailable_naming_the_directory(tmp_path):
    blocker = source_file(tmp_path, b"not a directory", "file")
    result = open_cache(blocker / "cache")
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, CacheUnavailable)
    assert str(blocker / "cache") in error.message


# --- refs and ingest -----------------------------------------------------------------------------


def test_ingest_moves_the_file_into_blobs_named_by_its_digest(cache, tmp_path):
    src = source_file(tmp_path, b"weights")
    path = ingest_file(cache, src, identity="s3://b/k", version="v1").unwrap()
    assert path == blob_path(cache, sha(b"weights"))
    assert path.read_bytes() == b"weights"
    assert not src.exists()


def test_ingest_without_move_copies_and_leaves_the_source(cache, tmp_path):
    src = source_file(tmp_path, b"weights")
    path = ingest_file(cache, src, identity="x", version=None, move=False).unwrap()
    assert src.read_bytes() == path.read_bytes() == b"weights"


def test_ingest_with_a_wrong_digest_fails_and_keeps_nothing(cache, tmp_path):
    src = source_file(tmp_path, b"weights")
    result = ingest_file(cache, src, identity="x", version="v", sha256=sha(b"other"))
    assert result == Failure(
        ChecksumMismatch(what="x", expected=sha(b"other"), actual=sha(b"weights"), source="x")
    )
    assert list(cache.blobs.iterdir()) == []
    assert lookup(cache, "x", "v") is None
    assert not src.exists()


def test_ingest_without_move_never_deletes_the_callers_file_on_mismatch(cache, tmp_path):
    src = source_file(tmp_path, b"weights")
    ingest_file(cache, src, identity="x", version="v", sha256=sha(b"other"), move=False)
    assert src.read_bytes() == b"weights"


def test_lookup_finds_an_ingested_identity_at_its_version_only(cache, tmp_path):
    path = ingest_file(cache, source_file(tmp_path, b"a"), identity="id", version="v1").unwrap()
    assert lookup(cache, "id", "v1") == path
    assert lookup(cache, "id", "v2") is None
    assert lookup(cache, "other", "v1") is None


def test_lookup_misses_when_the_blob_is_gone(cache, tmp_path):
    path = ingest_file(cache, source_file(tmp_path, b"a"), identity="id", version="v1").unwrap()
    path.unlink()
    assert lookup(cache, "id", "v1") is None


def test_lookup_latest_returns_the_newest_version(cache, tmp_path):
    ingest_file(cache, source_file(tmp_path, b"old"), identity="id", version="v1").unwrap()
    time.sleep(0.01)
    newest = ingest_file(cache, source_file(tmp_path, b"new"), identity="id", version="v2").unwrap()
    assert lookup_latest(cache, "id") == newest
    assert lookup_latest(cache, "absent") is None


hostile = st.text(min_size=1, max_size=40) | st.sampled_from(
    ["..", "../../etc/passwd", "a/../../b", "\x00", "..\\..\\x"]
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(identity=hostile, version=st.none() | hostile)
def test_no_identity_or_version_can_place_a_ref_outside_the_cache(cache, identity, version):
    digest = sha(b"x")
    cache.blobs.joinpath(digest).write_bytes(b"x")
    written = write_ref(
        cache, Ref(identity=identity, version=version, sha256=digest, size=1, created=1.0)
    ).unwrap()
    assert written.resolve().is_relative_to(cache.refs.resolve())
    assert part_path(cache, identity, version).resolve().parent == cache.tmp.resolve()
    assert lookup(cache, identity, version) == cache.blobs / digest


# --- decide (pure) -------------------------------------------------------------------------------

INFO = ObjectInfo(identity="id", size=100, version="v1")


def test_decide_hits_on_the_blob_of_the_expected_digest():
    assert decide(CacheState(known=Path("/c/blob")), INFO) == Hit(Path("/c/blob"))


def test_decide_hits_on_a_ref_of_the_same_size():
    state = CacheState(cached=Path("/c/b"), cached_sha256="a" * 64, cached_size=100)
    assert decide(state, INFO) == Hit(Path("/c/b"))


def test_decide_refetches_when_the_cached_size_disagrees_with_the_store():
    state = CacheState(cached=Path("/c/b"), cached_sha256="a" * 64, cached_size=99)
    assert decide(state, INFO) == Fetch()


def test_decide_refetches_when_the_cached_digest_is_not_the_expected_one():
    state = CacheState(cached=Path("/c/b"), cached_sha256="a" * 64, cached_size=100)
    assert decide(state, INFO, sha256="b" * 64) == Fetch()


def test_decide_resumes_a_part_of_a_pinned_object():
    assert decide(CacheState(part_size=40), INFO) == Resume(40)


def test_decide_does_not_resume_without_a_version_or_range_support():
    unpinned = ObjectInfo(identity="id", size=100, version=None)
    no_range = ObjectInfo(identity="id", size=100, version="v", supports_range=False)
    assert decide(CacheState(part_size=40), unpinned) == Fetch()
    assert decide(CacheState(part_size=40), no_range) == Fetch()


def test_decide_resumes_an_immutable_object_without_a_version():
    immutable = ObjectInfo(identity="id", size=100, version=None, immutable=True)
    assert decide(CacheState(part_size=40), immutable) == Resume(40)


def test_decide_discards_a_part_longer_than_the_object():
    assert decide(CacheState(part_size=101), INFO) == Fetch()


states = st.builds(
    CacheState,
    known=st.none() | st.just(Path("/k")),
    cached=st.none() | st.just(Path("/c")),
    cached_sha256=st.none() | st.sampled_from(["a" * 64, "b" * 64]),
    cached_size=st.none() | st.integers(0, 200),
    part_size=st.integers(0, 300),
)
infos = st.builds(
    ObjectInfo,
    identity=st.just("id"),
    size=st.none() | st.integers(0, 200),
    version=st.none() | st.just("v"),
    supports_range=st.booleans(),
    immutable=st.booleans(),
)


@given(states, infos, st.none() | st.sampled_from(["a" * 64, "b" * 64]))
def test_decide_only_resumes_within_the_announced_size_and_never_changes_its_input(state, info, digest):
    before = (state, info)
    action = decide(state, info, sha256=digest)
    assert (state, info) == before
    if isinstance(action, Resume):
        assert info.size is not None and 0 < action.offset <= info.size
        assert info.supports_range and (info.version is not None or info.immutable)


def test_cache_state_reads_the_ref_and_the_part(cache, tmp_path):
    path = ingest_file(cache, source_file(tmp_path, b"abc"), identity="id", version="v1").unwrap()
    part_path(cache, "id", "v2").write_bytes(b"12")
    assert cache_state(cache, ObjectInfo(identity="id", size=3, version="v1")).cached == path
    assert cache_state(cache, ObjectInfo(identity="id", size=3, version="v2")).part_size == 2


# --- ls / verify / prune -------------------------------------------------------------------------


def test_entries_list_every_ref_with_its_blob(cache, tmp_path):
    ingest_file(cache, source_file(tmp_path, b"one"), identity="a", version="1").unwrap()
    ingest_file(cache, source_file(tmp_path, b"two"), identity="b", version=None).unwrap()
    listed = entries(cache)
    assert [(e.identity, e.version, e.sha256, e.size, e.present) for e in listed] == [
        ("a", "1", sha(b"one"), 3, True),
        ("b", None, sha(b"two"), 3, True),
    ]


def test_verify_reports_a_blob_whose_bytes_changed(cache, tmp_path):
    path = ingest_file(cache, source_file(tmp_path, b"good"), identity="a", version="1").unwrap()
    path.write_bytes(b"evil")
    report = verify(cache).unwrap()
    assert report.checked == 1
    assert report.corrupt == (path,)
    assert not report.ok
    assert path.exists()


def test_verify_can_remove_corrupt_blobs(cache, tmp_path):
    path = ingest_file(cache, source_file(tmp_path, b"good"), identity="a", version="1").unwrap()
    path.write_bytes(b"evil")
    verify(cache, remove_corrupt=True).unwrap()
    assert not path.exists()


def test_verify_of_an_intact_cache_is_ok(cache, tmp_path):
    ingest_file(cache, source_file(tmp_path, b"good"), identity="a", version="1").unwrap()
    assert verify(cache).unwrap().ok


def test_prune_removes_stale_parts_and_keeps_fresh_ones(cache):
    stale = cache.tmp / "old.part"
    fresh = cache.tmp / "new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (time.time() - 10_000, time.time() - 10_000))
    report = prune(cache, tmp_age=3600).unwrap()
    assert report.parts == (stale,)
    assert fresh.exists() and not stale.exists()


def test_prune_removes_unreferenced_blobs_and_keeps_referenced_ones(cache, tmp_path):
    kept = ingest_file(cache, source_file(tmp_path, b"kept"), identity="a", version="1").unwrap()
    orphan = cache.blobs / sha(b"orphan")
    orphan.write_bytes(b"orphan")
    report = prune(cache, now=time.time() + 3600).unwrap()
    assert report.blobs == (orphan,)
    assert report.freed == len(b"orphan")
    assert kept.exists()


def test_prune_spares_a_blob_placed_moments_ago(cache):
    just_placed = cache.blobs / sha(b"new")
    just_placed.write_bytes(b"new")
    assert prune(cache).unwrap().blobs == ()


def test_remove_entry_forgets_an_identity_and_its_blob(cache, tmp_path):
    path = ingest_file(cache, source_file(tmp_path, b"data"), identity="a", version="1").unwrap()
    remove_entry(cache, "a").unwrap()
    assert lookup(cache, "a", "1") is None
    assert not path.exists()
    assert entries(cache) == ()


def test_a_blob_shared_by_two_identities_survives_forgetting_one(cache, tmp_path):
    ingest_file(cache, source_file(tmp_path, b"same"), identity="a", version="1").unwrap()
    shared = ingest_file(cache, source_file(tmp_path, b"same"), identity="b", version="1").unwrap()
    remove_entry(cache, "a").unwrap()
    assert lookup(cache, "b", "1") == shared


# --- lock ----------------------------------------------------------------------------------------

OWNER = LockOwner(pid=1, host="h", created=0.0, token="t")


@pytest.mark.parametrize(
    ("owner", "age", "alive", "stale"),
    [
        (OWNER, 1.0, True, False),
        (OWNER, 1.0, False, True),
        (OWNER, 301.0, True, True),
        (LockOwner(pid=1, host="elsewhere", created=0.0, token="t"), 1.0, False, False),
        (None, 1.0, False, False),
        (None, 301.0, False, True),
    ],
)
def test_lock_staleness_rule(owner, age, alive, stale):
    assert lock_is_stale(owner, age=age, host="h", owner_alive=alive, stale_after=300.0) is stale


def test_identity_lock_is_held_then_released(cache):
    with identity_lock(cache, "id") as lock:
        assert lock is not None
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def _write_lock(cache: Cache, lock_path: Path, pid: int) -> None:
    owner = {"pid": pid, "host": socket.gethostname(), "created": time.time(), "token": "other"}
    lock_path.write_text(json.dumps(owner))


def test_a_lock_left_by_a_dead_process_on_this_host_is_broken(cache):
    with identity_lock(cache, "id") as probe:
        path = probe.path
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _write_lock(cache, path, int(finished.stdout))
    with identity_lock(cache, "id", wait=5.0) as lock:
        assert lock is not None


def test_waiting_on_a_live_holder_gives_up_after_the_wait(cache):
    with identity_lock(cache, "id") as probe:
        path = probe.path
    _write_lock(cache, path, os.getpid())
    with identity_lock(cache, "id", wait=0.2, poll=0.05) as lock:
        assert lock is None
    assert json.loads(path.read_text())["token"] == "other"


def test_breaking_a_stale_lock_removes_it(cache):
    path = cache.locks / "x.lock"
    _write_lock(cache, path, os.getpid())
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    assert break_stale_lock(path, stale_after=300.0)
    assert not path.exists()


def test_breaking_leaves_a_live_holders_lock_alone(cache):
    path = cache.locks / "x.lock"
    _write_lock(cache, path, os.getpid())
    assert not break_stale_lock(path, stale_after=300.0)
    assert json.loads(path.read_text())["token"] == "other"
    assert list(cache.locks.iterdir()) == [path]


def test_only_one_breaker_at_a_time_and_a_crashed_breakers_file_expires(cache):
    path = cache.locks / "x.lock"
    _write_lock(cache, path, 1)
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    breaker = path.with_name("x.lock.break")
    breaker.touch()
    assert not break_stale_lock(path, stale_after=300.0)  # somebody else is breaking it
    assert path.exists()
    os.utime(breaker, (time.time() - 60, time.time() - 60))
    assert not break_stale_lock(path, stale_after=300.0)  # the crashed breaker's file is cleared...
    assert not breaker.exists()
    assert break_stale_lock(path, stale_after=300.0)  # ...so the next attempt breaks the lock
    assert list(cache.locks.iterdir()) == []


def test_threads_queued_behind_a_stale_lock_hold_it_one_at_a_time(cache):
    with identity_lock(cache, "id") as probe:
        path = probe.path
    holders: list[int] = []
    overlap: list[int] = []
    guard = threading.Lock()

    def take() -> None:
        with identity_lock(cache, "id", wait=30.0, poll=0.001) as lock:
            assert lock is not None
            with guard:
                holders.append(1)
                overlap.append(len(holders))
            time.sleep(0.002)
            with guard:
                holders.pop()

    for _ in range(20):
        path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "created": 0.0, "token": "old"}))
        os.utime(path, (time.time() - 1000, time.time() - 1000))
        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(overlap) == 20 * 8
    assert max(overlap) == 1


def test_taking_over_a_stale_lock_is_an_event(cache, caplog):
    with identity_lock(cache, "id") as probe:
        path = probe.path
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "created": 0.0, "token": "old"}))
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    with collect() as seen, identity_lock(cache, "id", wait=5.0) as lock:
        assert lock is not None
    (broken,) = [e for e in seen.events if e.name == "cache.lock_broken"]
    assert broken.data == {"identity": "id", "holder_pid": 1, "holder_host": "elsewhere"}


def test_waiting_on_a_live_holder_is_an_event(cache):
    with identity_lock(cache, "id") as probe:
        path = probe.path
    _write_lock(cache, path, os.getpid())
    with collect() as seen, identity_lock(cache, "id", wait=0.1, poll=0.05):
        pass
    assert [e.name for e in seen.events] == ["cache.lock_wait", "cache.lock_wait_expired"]
