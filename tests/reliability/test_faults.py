"""Network faults a fetch survives: each one ends in the right bytes or the right typed failure.

Every case runs against a real server (the fault-injecting HTTP server, or moto for S3), and every case
also checks the cache afterwards: ``blobs/`` holds only verified files, and nothing after a failure.
"""

from __future__ import annotations

import hashlib
import random
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from returns.result import Result

from ckptflow.cache import lookup, open_cache, part_path
from ckptflow.errors import ChecksumMismatch, Error, NetworkError, NotFound
from ckptflow.events import collect
from ckptflow.fetch import fetch
from ckptflow.sources import s3
from ckptflow.sources.http import url_identity
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import Faults, FaultServer
from tests.fixtures.s3_server import S3Bucket
from tests.reliability.helpers import BlobAudit

SIZE = 2 * 1024 * 1024 + 12345
DATA = random.Random(3).randbytes(SIZE)
DIGEST = hashlib.sha256(DATA).hexdigest()
FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)


def get(url: str, cache_dir: Path, *, timeout: float = 10.0, **options: Any) -> Result[Path, Error]:
    return fetch(url, cache_dir=cache_dir, timeout=timeout, options={"retry": FAST, **options})


def gets(server: FaultServer) -> list[Any]:
    return [r for r in server.requests if r.method == "GET"]


# --- connection drops ------------------------------------------------------------------------------

DROP_POINTS = sorted(random.Random(2024).sample(range(1, SIZE), 6))


@pytest.mark.parametrize("drop_at", DROP_POINTS)
def test_a_connection_dropped_at_any_point_resumes_to_the_exact_bytes(http_server, tmp_path, drop_at):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=drop_at)
    assert get(url, tmp_path).unwrap().read_bytes() == DATA
    resumed = [r for r in gets(http_server) if r.range]
    assert resumed and all(r.if_range for r in resumed)
    assert [p.name for p in BlobAudit(tmp_path).check()] == [DIGEST]


def test_repeated_drops_keep_resuming_while_bytes_arrive(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=300_000, drop_times=6)
    assert get(url, tmp_path).unwrap().read_bytes() == DATA
    assert len(gets(http_server)) >= 6


def test_a_server_that_ignores_range_after_a_drop_is_restarted_cleanly(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(drop_after=700_000, ignore_range=True)
    assert get(url, tmp_path).unwrap().read_bytes() == DATA


# --- busy servers ----------------------------------------------------------------------------------


def test_a_busy_answer_is_retried_after_the_servers_retry_after(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_first=2, fail_status=503, retry_after="1")
    with collect() as seen:
        assert get(url, tmp_path).unwrap().read_bytes() == DATA
    delays = [e.data["delay"] for e in seen.events if e.name == "fetch.retry"]
    assert delays == [1.0, 1.0]


def test_a_rate_limit_asking_too_long_a_wait_is_waited_only_up_to_the_policy_bound(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_first=1, fail_status=429, retry_after="3600")
    bounded = RetryPolicy(attempts=4, base=0.01, cap=0.05, max_retry_after=0.2)
    with collect() as seen:
        assert get(url, tmp_path, retry=bounded).unwrap().read_bytes() == DATA
    assert [e.data["delay"] for e in seen.events if e.name == "fetch.retry"] == [0.2]


def test_a_retry_after_date_in_the_past_means_retry_at_once(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_first=1, fail_status=503, retry_after=formatdate(0, usegmt=True))
    with collect() as seen:
        assert get(url, tmp_path).unwrap().read_bytes() == DATA
    (retry,) = [e for e in seen.events if e.name == "fetch.retry"]
    assert retry.data["delay"] <= FAST.cap


def test_a_server_that_stays_down_is_a_network_error_leaving_no_blob(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(fail_first=10_000, fail_status=503, retry_after="0")
    failure = get(url, tmp_path).failure()
    assert isinstance(failure, NetworkError)
    assert failure.attempts == FAST.attempts
    assert "503" in failure.cause
    assert BlobAudit(tmp_path).check() == []


# --- slow bodies -----------------------------------------------------------------------------------


def test_a_body_slower_than_the_read_timeout_is_a_network_error_leaving_no_blob(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(delay=0.5)
    failure = get(url, tmp_path, timeout=0.1).failure()
    assert isinstance(failure, NetworkError)
    assert "timeout" in failure.cause.lower() or "timed out" in failure.cause.lower()
    assert BlobAudit(tmp_path).check() == []


def test_a_slow_body_within_the_read_timeout_completes(http_server, tmp_path):
    url = http_server.put("w.pt", DATA[:300_000])
    http_server.faults = Faults(delay=0.01)
    assert get(url, tmp_path, timeout=2.0).unwrap().read_bytes() == DATA[:300_000]


# --- lying servers ---------------------------------------------------------------------------------


def test_a_truncated_body_under_its_content_length_is_a_network_error_leaving_no_blob(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(overstate=1000)
    failure = get(url, tmp_path).failure()
    assert isinstance(failure, NetworkError)
    assert BlobAudit(tmp_path).check() == []


def test_an_object_changed_mid_download_restarts_and_is_never_spliced(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    new = random.Random(4).randbytes(SIZE)
    http_server.faults = Faults(change_after=1_000_000, changed_to=new)
    path = get(url, tmp_path).unwrap()
    assert path.read_bytes() == new
    assert path.name == hashlib.sha256(new).hexdigest()
    new_etag = http_server.files["/w.pt"].etag
    assert lookup(open_cache(tmp_path).unwrap(), url_identity(url), new_etag) == path
    assert [p.name for p in BlobAudit(tmp_path).check()] == [path.name]


def test_wrong_bytes_with_a_known_sha256_are_a_checksum_mismatch_leaving_nothing(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(wrong_bytes=True)
    failure = fetch(url, cache_dir=tmp_path, sha256=DIGEST, options={"retry": FAST}).failure()
    assert isinstance(failure, ChecksumMismatch)
    assert (failure.expected, failure.discarded) == (DIGEST, True)
    assert failure.actual != DIGEST
    assert BlobAudit(tmp_path).check() == []
    assert list((tmp_path / "tmp").glob("*.part")) == []


def test_after_a_checksum_mismatch_a_healthy_server_gives_the_right_file(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(wrong_bytes=True)
    fetch(url, cache_dir=tmp_path, sha256=DIGEST, options={"retry": FAST})
    http_server.faults = Faults()
    assert fetch(url, cache_dir=tmp_path, sha256=DIGEST).unwrap().read_bytes() == DATA


def test_a_missing_object_is_not_found_at_once(http_server, tmp_path):
    failure = get(http_server.url("absent.pt"), tmp_path).failure()
    assert isinstance(failure, NotFound)
    assert http_server.count() == 1


# --- S3 on moto ------------------------------------------------------------------------------------


def s3_get(bucket: S3Bucket, key: str, cache_dir: Path, **kwargs: Any) -> Result[Path, Error]:
    options = {"s3_endpoint_url": bucket.endpoint, "retry": FAST}
    return fetch(bucket.uri(key), cache_dir=cache_dir, options=options, **kwargs)


def s3_part(bucket: S3Bucket, key: str, cache_dir: Path) -> Path:
    """Where the engine keeps the resumable part of this object's current version."""
    info = s3.S3Object(client=bucket.client, bucket=bucket.name, key=key).stat().unwrap()
    return part_path(open_cache(cache_dir).unwrap(), info.identity, info.version)


def test_s3_a_part_left_by_a_crash_is_resumed_to_the_exact_bytes(s3_bucket, tmp_path):
    s3_bucket.put("ckpt.pt", DATA)
    s3_part(s3_bucket, "ckpt.pt", tmp_path).write_bytes(DATA[: SIZE // 2])
    with collect() as seen:
        assert s3_get(s3_bucket, "ckpt.pt", tmp_path).unwrap().read_bytes() == DATA
    (resumed,) = [e for e in seen.events if e.name == "fetch.resumed"]
    assert resumed.data["offset"] == SIZE // 2


def test_s3_a_crash_left_part_with_wrong_bytes_is_downloaded_afresh(s3_bucket, tmp_path):
    s3_bucket.put("ckpt.pt", DATA)
    s3_part(s3_bucket, "ckpt.pt", tmp_path).write_bytes(b"\0" * (SIZE // 2))
    path = s3_get(s3_bucket, "ckpt.pt", tmp_path, sha256=DIGEST).unwrap()
    assert path.read_bytes() == DATA
    assert [p.name for p in BlobAudit(tmp_path).check()] == [DIGEST]


def test_s3_an_object_overwritten_after_a_crash_is_fetched_whole_not_spliced(s3_bucket, tmp_path):
    s3_bucket.put("ckpt.pt", DATA)
    s3_part(s3_bucket, "ckpt.pt", tmp_path).write_bytes(DATA[: SIZE // 2])
    new = random.Random(5).randbytes(SIZE)
    s3_bucket.put("ckpt.pt", new)
    assert s3_get(s3_bucket, "ckpt.pt", tmp_path).unwrap().read_bytes() == new


def test_s3_a_wrong_sha256_is_a_checksum_mismatch_leaving_no_blob(s3_bucket, tmp_path):
    s3_bucket.put("ckpt.pt", DATA)
    failure = s3_get(s3_bucket, "ckpt.pt", tmp_path, sha256="0" * 64).failure()
    assert isinstance(failure, ChecksumMismatch)
    assert BlobAudit(tmp_path).check() == []


@pytest.mark.parametrize("missing", ["key", "bucket"])
def test_s3_a_missing_key_or_bucket_is_not_found(s3_bucket, tmp_path, missing):
    uri = s3_bucket.uri("absent.pt") if missing == "key" else "s3://no-such-bucket-here/ckpt.pt"
    options = {"s3_endpoint_url": s3_bucket.endpoint, "retry": FAST}
    assert isinstance(fetch(uri, cache_dir=tmp_path, options=options).failure(), NotFound)
