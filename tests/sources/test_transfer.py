"""Specification of the download engine, against the real fault-injecting HTTP server."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import attrs
import google_crc32c
import httpx
import pytest

from ckptflow.cache import Cache, blob_path, lookup, open_cache, part_path
from ckptflow.errors import CacheUnavailable, ChecksumMismatch, InvalidConfig, NetworkError, NotFound
from ckptflow.sources.base import FetchSettings, ObjectInfo
from ckptflow.sources.http import HttpObject, info_from_headers, url_identity
from ckptflow.sources.parts import Ledger, ledger_path, read_ledger, write_ledger
from ckptflow.sources.progress import progress_sink
from ckptflow.sources.retry import RetryPolicy
from ckptflow.sources.s3 import S3Object
from ckptflow.sources.transfer import download
from tests.fixtures.fault_server import Faults, FaultServer

SIZE = 3_000_000
DATA = os.urandom(SIZE)
DIGEST = hashlib.sha256(DATA).hexdigest()
FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)
OVERHEAD = 256 * 1024  # what a dropped connection may have pushed past the point the client received


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=True, timeout=10.0) as c:
        yield c


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def obj_for(client: httpx.Client, url: str, **kw) -> HttpObject:
    return HttpObject(client=client, url=url, identity=url_identity(url), **kw)


def settings(cache_dir: Path, **kw) -> FetchSettings:
    options = {"retry": kw.pop("policy", FAST)}
    return FetchSettings(cache_dir=cache_dir, progress=kw.pop("progress", False), options=options, **kw)


def cache_of(cache_dir: Path) -> Cache:
    return open_cache(cache_dir).unwrap()


def blobs(cache_dir: Path) -> list[Path]:
    return list(cache_of(cache_dir).blobs.iterdir())


def parts(cache_dir: Path) -> list[Path]:
    return list(cache_of(cache_dir).tmp.glob("*.part"))


# --- the plain path and the cache ----------------------------------------------------------------


def test_download_places_the_verified_bytes_in_blobs(http_server: FaultServer, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    path = download(obj_for(client, url), settings(cache_dir)).unwrap()
    assert path == blob_path(cache_of(cache_dir), DIGEST)
    assert path.read_bytes() == DATA
    assert parts(cache_dir) == []


def test_a_cache_hit_downloads_no_body_bytes(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    first = download(obj_for(client, url), settings(cache_dir)).unwrap()
    http_server.bytes_served = 0
    second = download(obj_for(client, url), settings(cache_dir)).unwrap()
    assert second == first
    assert http_server.bytes_served == 0


def test_a_known_digest_already_cached_needs_no_request(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    download(obj_for(client, url), settings(cache_dir)).unwrap()
    before = http_server.count()
    download(obj_for(client, http_server.url("elsewhere.pt")), settings(cache_dir, sha256=DIGEST)).unwrap()
    assert http_server.count() == before


def test_a_new_version_of_the_object_is_downloaded_again(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    download(obj_for(client, url), settings(cache_dir)).unwrap()
    http_server.put("w.pt", b"retrained")
    assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == b"retrained"


def test_verify_re_hashes_a_hit_and_replaces_a_corrupted_blob(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    path = download(obj_for(client, url), settings(cache_dir)).unwrap()
    path.write_bytes(b"x" * SIZE)
    again = download(obj_for(client, url), settings(cache_dir, verify=True)).unwrap()
    assert again.read_bytes() == DATA


def test_an_unusable_cache_directory_is_cache_unavailable(http_server, client, tmp_path):
    url = http_server.put("w.pt", DATA)
    (tmp_path / "file").write_bytes(b"")
    result = download(obj_for(client, url), settings(tmp_path / "file" / "cache"))
    assert isinstance(result.failure(), CacheUnavailable)
    assert http_server.count() == 0


# --- resume and restart --------------------------------------------------------------------------


def test_resume_after_a_drop_transfers_only_the_remainder(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000)
    assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == DATA
    assert http_server.bytes_served <= SIZE + OVERHEAD
    ranged = [r for r in http_server.requests if r.method == "GET" and r.range]
    assert [r.range for r in ranged] == ["bytes=1000000-"]
    assert ranged[0].if_range is not None


def test_a_later_run_resumes_the_part_an_earlier_run_left(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000, fail_from=2)
    failed = download(obj_for(client, url), settings(cache_dir))
    assert isinstance(failed.failure(), NetworkError)
    assert [p.stat().st_size for p in parts(cache_dir)] == [1_000_000]
    http_server.faults = Faults()
    http_server.bytes_served = 0
    assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == DATA
    assert http_server.bytes_served == SIZE - 1_000_000


def test_a_server_ignoring_range_restarts_cleanly(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000, ignore_range=True)
    assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == DATA


def test_content_changed_mid_download_yields_the_new_content_under_its_new_version(
    http_server, client, cache_dir
):
    url = http_server.put("w.pt", DATA)
    new = os.urandom(SIZE // 2)
    http_server.faults = Faults(change_after=1_000_000, changed_to=new)
    path = download(obj_for(client, url), settings(cache_dir)).unwrap()
    assert path.read_bytes() == new
    new_etag = http_server.files["/w.pt"].etag
    assert lookup(cache_of(cache_dir), url_identity(url), new_etag) == path


def test_an_unversioned_object_is_restarted_rather_than_resumed(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000)

    def unversioned(response: httpx.Response, identity: str) -> ObjectInfo:
        return attrs.evolve(info_from_headers(response, identity), version=None)

    path = download(obj_for(client, url, read_info=unversioned), settings(cache_dir)).unwrap()
    assert path.read_bytes() == DATA
    assert all(r.range is None for r in http_server.requests)


def test_a_head_refused_like_a_presigned_url_still_downloads(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(head_status=403)
    assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == DATA
    assert http_server.bytes_served == SIZE + 1


# --- verification --------------------------------------------------------------------------------


def test_a_checksum_mismatch_keeps_nothing(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(wrong_bytes=True)
    failure = download(obj_for(client, url), settings(cache_dir, sha256=DIGEST)).failure()
    assert isinstance(failure, ChecksumMismatch)
    assert (failure.expected, failure.algorithm) == (DIGEST, "sha256")
    assert blobs(cache_dir) == [] and parts(cache_dir) == []


def with_checksums(**checksums: str):
    def read(response: httpx.Response, identity: str) -> ObjectInfo:
        return attrs.evolve(info_from_headers(response, identity), checksums=checksums)

    return read


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


@pytest.mark.parametrize(
    ("algorithm", "good"),
    [("md5", hashlib.md5(DATA).hexdigest()), ("crc32c", crc32c_b64(DATA))],
)
def test_store_checksums_are_verified_when_no_sha256_is_given(
    http_server, client, cache_dir, algorithm, good
):
    url = http_server.put("w.pt", DATA)
    obj = obj_for(client, url, read_info=with_checksums(**{algorithm: good}))
    assert download(obj, settings(cache_dir)).unwrap().read_bytes() == DATA


@pytest.mark.parametrize(
    ("algorithm", "bad"),
    [("md5", hashlib.md5(b"other").hexdigest()), ("crc32c", crc32c_b64(b"other"))],
)
def test_a_store_checksum_mismatch_keeps_nothing(http_server, client, cache_dir, algorithm, bad):
    url = http_server.put("w.pt", DATA)
    obj = obj_for(client, url, read_info=with_checksums(**{algorithm: bad}))
    failure = download(obj, settings(cache_dir)).failure()
    assert isinstance(failure, ChecksumMismatch)
    assert (failure.algorithm, failure.expected) == (algorithm, bad)
    assert blobs(cache_dir) == [] and parts(cache_dir) == []


def test_a_body_shorter_than_announced_is_a_network_error_with_nothing_placed(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(overstate=100)
    failure = download(obj_for(client, url), settings(cache_dir)).failure()
    assert isinstance(failure, NetworkError)
    assert blobs(cache_dir) == []


# --- status handling and retries -----------------------------------------------------------------


def test_not_found_is_not_retried(http_server, client, cache_dir):
    failure = download(obj_for(client, http_server.url("absent.pt")), settings(cache_dir)).failure()
    assert isinstance(failure, NotFound)
    assert http_server.count() == 1


def test_busy_server_retry_after_is_waited_out(http_server, client, cache_dir, caplog):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_first=1, fail_status=503, retry_after="1")
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == DATA
    assert http_server.count() >= 2
    delays = [
        r.ckptflow_data["delay"] for r in caplog.records if getattr(r, "ckptflow_event", "") == "fetch.retry"
    ]
    assert delays and min(delays) >= 1.0


def test_rate_limited_requests_are_retried(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_first=2, fail_status=429, retry_after="0")
    assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == DATA


def test_exhausted_retries_are_a_network_error_counting_attempts(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_first=100, fail_status=503)
    failure = download(obj_for(client, url), settings(cache_dir)).failure()
    assert isinstance(failure, NetworkError)
    assert failure.attempts == FAST.attempts == http_server.count()
    assert "503" in failure.cause


# --- offline -------------------------------------------------------------------------------------


def test_offline_miss_is_not_found_without_any_request(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    failure = download(obj_for(client, url), settings(cache_dir, offline=True)).failure()
    assert isinstance(failure, NotFound)
    assert "offline" in failure.message
    assert http_server.count() == 0


def test_offline_hit_resolves_from_refs_without_any_request(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    online = download(obj_for(client, url), settings(cache_dir)).unwrap()
    before = http_server.count()
    assert download(obj_for(client, url), settings(cache_dir, offline=True)).unwrap() == online
    assert http_server.count() == before


def test_the_offline_environment_variable_turns_offline_mode_on(http_server, client, cache_dir, monkeypatch):
    monkeypatch.setenv("CKPTFLOW_OFFLINE", "1")
    url = http_server.put("w.pt", DATA)
    assert isinstance(download(obj_for(client, url), settings(cache_dir)).failure(), NotFound)
    assert http_server.count() == 0


# --- progress and events -------------------------------------------------------------------------


def test_progress_is_reported_monotonically_up_to_the_size(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000, ignore_range=True)
    seen: list[tuple[int, int | None]] = []
    download(obj_for(client, url), settings(cache_dir, progress=lambda d, t: seen.append((d, t)))).unwrap()
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert seen[-1] == (SIZE, SIZE)


def test_engine_events_are_logged(http_server, client, cache_dir, caplog):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000)
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        download(obj_for(client, url), settings(cache_dir)).unwrap()
        download(obj_for(client, url), settings(cache_dir)).unwrap()
    events = [getattr(r, "ckptflow_event", None) for r in caplog.records]
    assert {"fetch.started", "fetch.retry", "cache.hit"} <= set(events)


def test_a_resumed_download_logs_where_it_resumed(http_server, client, cache_dir, caplog):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000, fail_from=2)
    download(obj_for(client, url), settings(cache_dir))
    http_server.faults = Faults()
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        download(obj_for(client, url), settings(cache_dir)).unwrap()
    resumed = [r.ckptflow_data for r in caplog.records if getattr(r, "ckptflow_event", "") == "fetch.resumed"]
    assert resumed == [{"identity": url_identity(url), "offset": 1_000_000}]


def test_a_part_held_by_another_writer_is_not_shared(http_server, client, cache_dir):
    import fcntl

    url = http_server.put("w.pt", DATA)
    info = obj_for(client, url).stat().unwrap()
    held = part_path(cache_of(cache_dir), info.identity, info.version)
    with held.open("a+b") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        other.write(b"garbage from another writer")
        other.flush()
        path = download(obj_for(client, url), settings(cache_dir)).unwrap()
    assert path.read_bytes() == DATA


def test_progress_sink_wraps_a_callback_so_reports_never_go_backwards():
    seen: list[tuple[int, int | None]] = []
    sink = progress_sink(lambda done, total: seen.append((done, total)), "x")
    for done in (5, 3, 5, 7):
        sink.update(done, 10)
    assert seen == [(5, 10), (7, 10)]


def test_progress_true_draws_a_bar_on_stderr(capsys):
    sink = progress_sink(True, "ckpt.pt")
    sink.update(512, 1024)
    sink.close()
    assert "ckpt.pt" in capsys.readouterr().err


@pytest.mark.parametrize("setting", [None, False])
def test_no_bar_is_drawn_when_stderr_is_not_a_terminal_or_progress_is_off(capsys, setting):
    sink = progress_sink(setting, "ckpt.pt")
    sink.update(512, 1024)
    sink.close()
    assert capsys.readouterr().err == ""


def test_a_server_too_slow_for_the_timeout_is_a_network_error(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(delay=1.0)
    with httpx.Client(timeout=0.2) as impatient:
        failure = download(obj_for(impatient, url), settings(cache_dir)).failure()
    assert isinstance(failure, NetworkError)
    assert "Timeout" in failure.cause


def test_a_part_file_that_cannot_be_written_is_cache_unavailable(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    info = obj_for(client, url).stat().unwrap()
    part_path(cache_of(cache_dir), info.identity, info.version).mkdir()
    failure = download(obj_for(client, url), settings(cache_dir)).failure()
    assert isinstance(failure, CacheUnavailable)
    assert blobs(cache_dir) == []


def test_a_stale_part_from_an_earlier_run_that_fails_verification_is_downloaded_afresh(
    http_server, client, cache_dir
):
    url = http_server.put("w.pt", DATA)
    info = obj_for(client, url).stat().unwrap()
    part_path(cache_of(cache_dir), info.identity, info.version).write_bytes(b"\0" * 1_000_000)
    path = download(obj_for(client, url), settings(cache_dir, sha256=DIGEST)).unwrap()
    assert path.read_bytes() == DATA
    assert [r.range for r in http_server.requests if r.method == "GET"] == ["bytes=1000000-", None]


# --- parallel ranged downloads -------------------------------------------------------------------

PART = 256 * 1024
PART_COUNT = -(-SIZE // PART)


def parallel(cache_dir: Path, concurrency: int = 4, **kw) -> FetchSettings:
    options = {
        "retry": kw.pop("policy", FAST),
        "parallel_threshold": 0,
        "part_size": PART,
        "max_concurrency": concurrency,
    }
    return FetchSettings(cache_dir=cache_dir, progress=kw.pop("progress", False), options=options, **kw)


def ranged_gets(server: FaultServer) -> list[str]:
    return [r.range for r in server.requests if r.method == "GET" and r.range]


def part_ranges(indices) -> set[str]:
    return {f"bytes={i * PART}-{min(SIZE, (i + 1) * PART) - 1}" for i in indices}


def ledgers(cache_dir: Path) -> list[Path]:
    return list(cache_of(cache_dir).tmp.glob("*.parts"))


def test_a_parallel_download_fetches_each_part_once_and_places_the_exact_bytes(
    http_server, client, cache_dir
):
    url = http_server.put("w.pt", DATA)
    path = download(obj_for(client, url), parallel(cache_dir)).unwrap()
    assert path == blob_path(cache_of(cache_dir), DIGEST)
    assert path.read_bytes() == DATA
    assert set(ranged_gets(http_server)) == part_ranges(range(PART_COUNT))
    assert len(ranged_gets(http_server)) == PART_COUNT
    assert parts(cache_dir) == [] and ledgers(cache_dir) == []


def test_every_part_request_is_pinned_to_the_version(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    download(obj_for(client, url), parallel(cache_dir)).unwrap()
    gets = [r for r in http_server.requests if r.method == "GET"]
    assert {r.if_range for r in gets} == {http_server.files["/w.pt"].etag}


def test_small_objects_stay_a_single_stream_under_the_default_threshold(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    download(obj_for(client, url), settings(cache_dir)).unwrap()
    assert [r.range for r in http_server.requests if r.method == "GET"] == [None]


def test_a_part_dropped_midway_is_retried_alone_from_where_it_stopped(http_server, client, cache_dir, caplog):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=100_000)
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        assert download(obj_for(client, url), parallel(cache_dir)).unwrap().read_bytes() == DATA
    assert http_server.bytes_served <= SIZE + PART
    requested = ranged_gets(http_server)
    retried = [r for r in requested if r not in part_ranges(range(PART_COUNT))]
    assert len(requested) == PART_COUNT + 1 and len(retried) == 1
    retries = [r.ckptflow_data for r in caplog.records if getattr(r, "ckptflow_event", "") == "fetch.retry"]
    assert len(retries) == 1 and "part" in retries[0]


def test_a_later_run_fetches_only_the_parts_an_interrupted_run_missed(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_from=5)  # the HEAD and four parts get through, then an outage
    failed = download(obj_for(client, url), parallel(cache_dir, concurrency=2))
    assert isinstance(failed.failure(), NetworkError)
    [ledger_file] = ledgers(cache_dir)
    ledger = read_ledger(ledger_file)
    assert ledger is not None and 0 < len(ledger.done) < PART_COUNT
    http_server.faults = Faults()
    http_server.requests = []
    http_server.bytes_served = 0
    assert download(obj_for(client, url), parallel(cache_dir)).unwrap().read_bytes() == DATA
    missing = set(range(PART_COUNT)) - ledger.done
    assert sorted(ranged_gets(http_server)) == sorted(part_ranges(missing))
    assert parts(cache_dir) == [] and ledgers(cache_dir) == []


def test_a_parallel_part_can_continue_as_a_single_stream_and_back(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=1_000_000, fail_from=2)
    download(obj_for(client, url), settings(cache_dir))  # one stream leaves 1,000,000 bytes
    http_server.faults = Faults()
    http_server.requests = []
    assert download(obj_for(client, url), parallel(cache_dir)).unwrap().read_bytes() == DATA
    kept = 1_000_000 // PART  # whole parts inside the bytes the single stream left
    assert sorted(ranged_gets(http_server)) == sorted(part_ranges(range(kept, PART_COUNT)))


def test_a_server_ignoring_range_falls_back_to_one_stream(http_server, client, cache_dir, caplog):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(ignore_range=True)
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        assert download(obj_for(client, url), parallel(cache_dir)).unwrap().read_bytes() == DATA
    events = [getattr(r, "ckptflow_event", None) for r in caplog.records]
    assert "fetch.fallback" in events
    assert parts(cache_dir) == [] and ledgers(cache_dir) == []


def test_a_parallel_checksum_mismatch_keeps_nothing(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(wrong_bytes=True)
    failure = download(obj_for(client, url), parallel(cache_dir, sha256=DIGEST)).failure()
    assert isinstance(failure, ChecksumMismatch)
    assert blobs(cache_dir) == [] and parts(cache_dir) == [] and ledgers(cache_dir) == []


def test_store_checksums_are_verified_after_a_parallel_download(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    obj = obj_for(client, url, read_info=with_checksums(md5=hashlib.md5(b"other").hexdigest()))
    assert isinstance(download(obj, parallel(cache_dir)).failure(), ChecksumMismatch)
    good = obj_for(client, url, read_info=with_checksums(md5=hashlib.md5(DATA).hexdigest()))
    assert download(good, parallel(cache_dir)).unwrap().read_bytes() == DATA


def test_an_object_changed_during_a_parallel_download_yields_the_new_content(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    new = os.urandom(SIZE)
    http_server.faults = Faults(change_after=100_000, changed_to=new)
    path = download(obj_for(client, url), parallel(cache_dir)).unwrap()
    assert path.read_bytes() == new
    assert lookup(cache_of(cache_dir), url_identity(url), http_server.files["/w.pt"].etag) == path


def test_parallel_progress_is_monotonic_and_ends_at_the_size(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=100_000)
    seen: list[tuple[int, int | None]] = []
    progress = parallel(cache_dir, progress=lambda d, t: seen.append((d, t)))
    download(obj_for(client, url), progress).unwrap()
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert seen[-1] == (SIZE, SIZE)


def test_a_resumed_part_file_whose_parts_do_not_verify_is_fetched_again(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    info = obj_for(client, url).stat().unwrap()
    held = part_path(cache_of(cache_dir), info.identity, info.version)
    write_ledger(
        ledger_path(held), Ledger(size=SIZE, version=info.version, part_size=PART, done=frozenset({0, 1}))
    )
    held.write_bytes(b"\0" * SIZE)  # claims two finished parts that hold zeros
    assert download(obj_for(client, url), parallel(cache_dir, sha256=DIGEST)).unwrap().read_bytes() == DATA


def test_a_whole_size_part_without_a_ledger_or_any_checksum_is_not_trusted(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    info = obj_for(client, url).stat().unwrap()
    part_path(cache_of(cache_dir), info.identity, info.version).write_bytes(b"\0" * SIZE)
    assert download(obj_for(client, url), settings(cache_dir)).unwrap().read_bytes() == DATA


def test_bad_parallel_options_are_invalid_config_before_any_request(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    bad = FetchSettings(cache_dir=cache_dir, progress=False, options={"part_size": 10})
    failure = download(obj_for(client, url), bad).failure()
    assert isinstance(failure, InvalidConfig) and "options.part_size" in failure.message
    assert http_server.count() == 0


def test_offline_mode_is_unchanged_by_parallel_options(http_server, client, cache_dir):
    url = http_server.put("w.pt", DATA)
    online = download(obj_for(client, url), parallel(cache_dir)).unwrap()
    before = http_server.count()
    assert download(obj_for(client, url), parallel(cache_dir, offline=True)).unwrap() == online
    assert http_server.count() == before


def test_s3_objects_download_in_parallel_parts_too(s3_bucket, cache_dir):
    s3_bucket.put("w.pt", DATA)
    obj = S3Object(client=s3_bucket.client, bucket=s3_bucket.name, key="w.pt")
    path = download(obj, parallel(cache_dir)).unwrap()
    assert path.read_bytes() == DATA
    assert parts(cache_dir) == [] and ledgers(cache_dir) == []
