"""The S3 edge: URI parsing, the pure pieces, failure translation, and stat/open against real servers."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import botocore
import pytest
import torch
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Result, Success

from ckptflow.api import load
from ckptflow.config.schema import S3Source
from ckptflow.errors import AccessDenied, ChecksumMismatch, Error, InvalidConfig, NotFound, StageFailed
from ckptflow.fetch import fetch
from ckptflow.sources import s3
from ckptflow.sources.base import FetchSettings, Interrupted, ObjectInfo, Transient
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import FaultServer
from tests.fixtures.gcs_server import engine_events
from tests.fixtures.models import make_classifier
from tests.fixtures.processes import free_port
from tests.fixtures.s3_server import AuthServer, S3Bucket, make_s3_client

MIB = 1024 * 1024
DATA = bytes(range(256)) * 40


def settings(tmp_path: Path, **options: Any) -> FetchSettings:
    return FetchSettings(cache_dir=tmp_path / "cache", options=options)


def read_all(obj: s3.S3Object, info: ObjectInfo, start: int = 0, end: int | None = None) -> bytes:
    body = obj.open(info, start, end).unwrap()
    try:
        return b"".join(body.chunks())
    finally:
        body.close()


def s3_object(bucket: S3Bucket, key: str, version_id: str | None = None, **kw: Any) -> s3.S3Object:
    return s3.S3Object(client=bucket.client, bucket=bucket.name, key=key, version_id=version_id, **kw)


def client_error(code: str, status: int, message: str = "", **extra: Any) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message, **extra},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
    }
    return ClientError(response, "GetObject")


# --- from_uri ---------------------------------------------------------------------------------------


def test_from_uri_reads_bucket_and_key() -> None:
    assert s3.from_uri("s3://models/runs/7/ckpt.pt") == Success(
        S3Source(bucket="models", key="runs/7/ckpt.pt")
    )


def test_from_uri_keeps_a_plus_in_a_version_id() -> None:
    parsed = s3.from_uri("s3://models/ckpt.pt?versionId=3/L4kq+rmSpX").unwrap()
    assert parsed.version_id == "3/L4kq+rmSpX"


def test_from_uri_reads_version_id() -> None:
    parsed = s3.from_uri("s3://models/ckpt.pt?versionId=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY").unwrap()
    assert parsed.version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"


def test_from_uri_takes_the_key_literally() -> None:
    parsed = s3.from_uri("s3://models/a dir/ckpt%20v2#1.pt").unwrap()
    assert parsed.key == "a dir/ckpt%20v2#1.pt"


@pytest.mark.parametrize(
    "uri",
    [
        "s3://",
        "s3:///ckpt.pt",
        "s3://models",
        "s3://models/",
        "s3://models/checkpoints/",
        "https://models/ckpt.pt",
        "models/ckpt.pt",
        "s3://my models/ckpt.pt",
        "s3://models/ckpt.pt?versionId=",
        "s3://models/ckpt.pt?partNumber=1",
        "s3://models/ckpt.pt?versionId=a&versionId=b",
    ],
)
def test_from_uri_refuses_a_malformed_uri(uri: str) -> None:
    result = s3.from_uri(uri)
    assert isinstance(result.failure(), InvalidConfig)


def test_from_uri_reports_every_problem_at_once() -> None:
    failure = s3.from_uri("s3://models/?colour=blue").failure()
    assert isinstance(failure, InvalidConfig)
    assert len(failure.problems) == 2


def test_from_uri_never_repeats_credentials_written_into_the_uri() -> None:
    failure = s3.from_uri("s3://AKIAEXAMPLE:wJalrXUtnFEMI@models/ckpt.pt").failure()
    assert isinstance(failure, InvalidConfig)
    assert "wJalrXUtnFEMI" not in failure.message
    assert "wJalrXUtnFEMI" not in repr(failure)


bucket_names = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True)
object_keys = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="?"), min_size=1, max_size=60
).filter(lambda k: not k.endswith("/"))
version_ids = st.none() | st.from_regex(r"[A-Za-z0-9._+/=-]{1,40}", fullmatch=True)


@given(bucket=bucket_names, key=object_keys, version_id=version_ids)
def test_from_uri_inverts_identity_of(bucket: str, key: str, version_id: str | None) -> None:
    uri = s3.identity_of(bucket, key, version_id)
    assert s3.from_uri(uri) == Success(S3Source(bucket=bucket, key=key, version_id=version_id))


# --- the pure pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "header"),
    [(0, None, None), (10, None, "bytes=10-"), (0, 10, "bytes=0-9"), (5, 6, "bytes=5-5")],
)
def test_range_header_names_bytes_start_to_end_exclusive(
    start: int, end: int | None, header: str | None
) -> None:
    assert s3.range_header(start, end) == header


@pytest.mark.parametrize(("start", "end"), [(5, 5), (6, 5), (-1, None)])
def test_range_header_rejects_empty_or_negative_ranges(start: int, end: int | None) -> None:
    with pytest.raises(ValueError, match="range"):
        s3.range_header(start, end)


@pytest.mark.parametrize(
    ("content_range", "start"),
    [(None, 0), ("bytes 0-9/100", 0), ("bytes 42-99/100", 42), ("bytes 7-8/*", 7), ("items 1-2/3", None)],
)
def test_body_start_reads_content_range(content_range: str | None, start: int | None) -> None:
    assert s3.body_start(content_range) == start


def test_pin_arguments_pin_an_etag_with_if_match() -> None:
    assert s3.pin_arguments('"9b2cf535f27731c974343645a3985328"') == {
        "IfMatch": '"9b2cf535f27731c974343645a3985328"'
    }


def test_pin_arguments_pin_a_version_id_by_naming_it() -> None:
    assert s3.pin_arguments("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY") == {
        "VersionId": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    }


def test_pin_arguments_are_empty_without_a_version() -> None:
    assert s3.pin_arguments(None) == {}


MD5 = "9b2cf535f27731c974343645a3985328"


def test_object_info_offers_a_plain_etag_as_md5() -> None:
    info = s3.object_info("s3://b/k", {"ETag": f'"{MD5}"', "ContentLength": 3})
    assert info.checksums == {"md5": MD5}
    assert (info.version, info.size) == (f'"{MD5}"', 3)


def test_object_info_offers_no_md5_for_a_multipart_etag() -> None:
    info = s3.object_info("s3://b/k", {"ETag": f'"{MD5}-3"', "ContentLength": 3})
    assert info.checksums == {}


@pytest.mark.parametrize(
    "encryption",
    [{"ServerSideEncryption": "aws:kms"}, {"SSECustomerAlgorithm": "AES256"}],
)
def test_object_info_offers_no_md5_when_encryption_makes_the_etag_opaque(encryption: dict[str, str]) -> None:
    info = s3.object_info("s3://b/k", {"ETag": f'"{MD5}"', "ContentLength": 3, **encryption})
    assert info.checksums == {}


def test_object_info_prefers_the_version_id_over_the_etag() -> None:
    info = s3.object_info("s3://b/k", {"ETag": f'"{MD5}"', "ContentLength": 3, "VersionId": "v1"})
    assert info.version == "v1"


def test_object_info_ignores_the_null_version_of_an_unversioned_object() -> None:
    info = s3.object_info("s3://b/k", {"ETag": f'"{MD5}"', "ContentLength": 3, "VersionId": "null"})
    assert info.version == f'"{MD5}"'


# --- failure translation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, NotFound),
        ("NoSuchBucket", 404, NotFound),
        ("NoSuchVersion", 404, NotFound),
        ("404", 404, NotFound),
        ("AccessDenied", 403, AccessDenied),
        ("403", 403, AccessDenied),
        ("InvalidAccessKeyId", 403, AccessDenied),
        ("SignatureDoesNotMatch", 403, AccessDenied),
        ("ExpiredToken", 400, AccessDenied),
        ("PreconditionFailed", 412, Transient),
        ("412", 412, Transient),
        ("SlowDown", 503, Transient),
        ("503", 503, Transient),
        ("InternalError", 500, Transient),
        ("RequestTimeout", 400, Transient),
        ("ThrottlingException", 400, Transient),
        ("BadGateway", 502, Transient),
        ("InvalidObjectState", 403, StageFailed),
        ("MalformedXML", 400, StageFailed),
    ],
)
def test_translate_error_maps_s3_codes(code: str, status: int, kind: type) -> None:
    assert isinstance(s3.translate_error(client_error(code, status), "s3://b/k"), kind)


def test_translate_error_names_the_object() -> None:
    failure = s3.translate_error(client_error("NoSuchKey", 404), "s3://b/runs/ckpt.pt")
    assert isinstance(failure, NotFound)
    assert "s3://b/runs/ckpt.pt" in failure.message


def test_translate_error_says_a_missing_bucket_is_the_bucket() -> None:
    failure = s3.translate_error(client_error("NoSuchBucket", 404), "s3://b/k")
    assert isinstance(failure, NotFound)
    assert "bucket does not exist" in failure.message


def test_translate_error_keeps_signing_details_out_of_the_message() -> None:
    error = client_error(
        "SignatureDoesNotMatch",
        403,
        "The request signature we calculated does not match",
        AWSAccessKeyId="AKIAIOSFODNN7EXAMPLE",
        StringToSign="AWS4-HMAC-SHA256\n20260101T000000Z",
        SignatureProvided="f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    )
    failure = s3.translate_error(error, "s3://b/k")
    assert isinstance(failure, AccessDenied)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "AWS4-HMAC", "f0e8bdb87c96"):
        assert secret not in failure.message
        assert secret not in repr(failure)


def test_translate_error_passes_on_retry_after() -> None:
    error = client_error("SlowDown", 503)
    error.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] = "7"
    failure = s3.translate_error(error, "s3://b/k")
    assert isinstance(failure, Transient)
    assert failure.retry_after == 7.0


def test_translate_error_says_a_changed_object_is_retried_from_scratch() -> None:
    failure = s3.translate_error(client_error("PreconditionFailed", 412), "s3://b/k")
    assert isinstance(failure, Transient)
    assert "changed" in failure.cause


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ],
)
def test_translate_error_makes_connection_trouble_transient(error: BotoCoreError) -> None:
    assert isinstance(s3.translate_error(error, "s3://b/k"), Transient)


@pytest.mark.parametrize(
    "error", [NoCredentialsError(), PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY")]
)
def test_translate_error_turns_missing_credentials_into_access_denied_with_a_hint(
    error: BotoCoreError,
) -> None:
    failure = s3.translate_error(error, "s3://b/k")
    assert isinstance(failure, AccessDenied)
    assert "anonymous" in failure.message
    assert "AWS_ACCESS_KEY_ID" in failure.message


def test_translate_error_turns_an_unknown_profile_into_invalid_config() -> None:
    failure = s3.translate_error(ProfileNotFound(profile="nope"), "s3://b/k")
    assert isinstance(failure, InvalidConfig)
    assert failure.problems[0].startswith("profile:")


def test_translate_error_turns_rejected_parameters_into_invalid_config() -> None:
    failure = s3.translate_error(ParamValidationError(report="Invalid bucket name"), "s3://b/k")
    assert isinstance(failure, InvalidConfig)


def test_translate_error_removes_credentials_from_urls_in_library_messages() -> None:
    error = EndpointConnectionError(endpoint_url="http://user:hunter2@proxy.local:8080")
    failure = s3.translate_error(error, "s3://b/k")
    assert isinstance(failure, Transient)
    assert "hunter2" not in failure.cause


# --- the client ---------------------------------------------------------------------------------------

SOURCE_CONFIG = S3Source(bucket="b", key="k")


def test_endpoint_for_prefers_the_config_then_options_then_the_environment() -> None:
    env = {"AWS_ENDPOINT_URL": "http://generic", "AWS_ENDPOINT_URL_S3": "http://s3-specific"}
    with_config = S3Source(bucket="b", key="k", endpoint_url="http://configured")
    assert s3.endpoint_for(with_config, {"s3_endpoint_url": "http://option"}, env) == "http://configured"
    assert s3.endpoint_for(SOURCE_CONFIG, {"s3_endpoint_url": "http://option"}, env) == "http://option"
    assert s3.endpoint_for(SOURCE_CONFIG, {}, env) == "http://s3-specific"
    assert s3.endpoint_for(SOURCE_CONFIG, {}, {"AWS_ENDPOINT_URL": "http://generic"}) == "http://generic"
    assert s3.endpoint_for(SOURCE_CONFIG, {}, {}) is None


def test_make_client_uses_a_client_handed_in_through_options(tmp_path: Path, s3_client: Any) -> None:
    assert s3.make_client(SOURCE_CONFIG, settings(tmp_path, s3_client=s3_client)) == Success(s3_client)


def test_make_client_leaves_retrying_to_the_engine_and_takes_timeouts_from_settings(
    tmp_path: Path, s3_credentials: Any
) -> None:
    fetch_settings = FetchSettings(cache_dir=tmp_path, timeout=12.5)
    client = s3.make_client(SOURCE_CONFIG, fetch_settings).unwrap()
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (12.5, 12.5)


def test_make_client_signs_nothing_for_an_anonymous_source(tmp_path: Path, s3_credentials: Any) -> None:
    anonymous = S3Source(bucket="b", key="k", anonymous=True)
    client = s3.make_client(anonymous, settings(tmp_path)).unwrap()
    assert client.meta.config.signature_version is botocore.UNSIGNED


def test_make_client_uses_the_configured_region_and_endpoint(tmp_path: Path, s3_credentials: Any) -> None:
    config = S3Source(bucket="b", key="k", region="eu-west-3", endpoint_url="http://127.0.0.1:9")
    client = s3.make_client(config, settings(tmp_path)).unwrap()
    assert (client.meta.region_name, client.meta.endpoint_url) == ("eu-west-3", "http://127.0.0.1:9")


def test_make_client_refuses_an_endpoint_that_is_not_a_url(tmp_path: Path, s3_credentials: Any) -> None:
    config = S3Source(bucket="b", key="k", endpoint_url="localhost:9000")
    failure = s3.make_client(config, settings(tmp_path)).failure()
    assert isinstance(failure, InvalidConfig)
    assert failure.problems[0].startswith("endpoint_url:")


def test_make_client_reports_an_unknown_profile_as_invalid_config(
    tmp_path: Path, s3_credentials: Any
) -> None:
    config = S3Source(bucket="b", key="k", profile="no-such-profile")
    failure = s3.make_client(config, settings(tmp_path)).failure()
    assert isinstance(failure, InvalidConfig)
    assert "no-such-profile" in failure.message


# --- stat and open against moto -------------------------------------------------------------------


def test_stat_describes_the_object(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("runs/ckpt.pt", DATA)
    info = s3_object(s3_bucket, "runs/ckpt.pt").stat().unwrap()
    md5 = hashlib.md5(DATA).hexdigest()
    assert info == ObjectInfo(
        identity=f"s3://{s3_bucket.name}/runs/ckpt.pt",
        size=len(DATA),
        version=f'"{md5}"',
        supports_range=True,
        checksums={"md5": md5},
        immutable=False,
    )


def test_stat_offers_no_md5_for_a_multipart_upload(s3_bucket: S3Bucket) -> None:
    s3_bucket.put_multipart("big.pt", b"\x01" * (5 * MIB + 10))
    info = s3_object(s3_bucket, "big.pt").stat().unwrap()
    assert info.checksums == {}
    assert info.version is not None and info.version.endswith('-2"')


def test_stat_pins_a_versioned_object_by_version_id(s3_versioned_bucket: S3Bucket) -> None:
    put = s3_versioned_bucket.put("ckpt.pt", DATA)
    info = s3_object(s3_versioned_bucket, "ckpt.pt").stat().unwrap()
    assert info.version == put["VersionId"]


def test_stat_of_a_requested_version_is_immutable_and_named_by_it(s3_versioned_bucket: S3Bucket) -> None:
    first = s3_versioned_bucket.put("ckpt.pt", b"first")
    s3_versioned_bucket.put("ckpt.pt", b"second")
    info = s3_object(s3_versioned_bucket, "ckpt.pt", first["VersionId"]).stat().unwrap()
    assert info.immutable
    assert (info.size, info.version) == (5, first["VersionId"])
    assert info.identity == f"s3://{s3_versioned_bucket.name}/ckpt.pt?versionId={first['VersionId']}"


def test_stat_of_a_missing_key_is_not_found(s3_bucket: S3Bucket) -> None:
    failure = s3_object(s3_bucket, "absent.pt").stat().failure()
    assert isinstance(failure, NotFound)
    assert f"s3://{s3_bucket.name}/absent.pt" in failure.message


def test_stat_of_a_missing_bucket_is_not_found(s3_client: Any) -> None:
    failure = s3.S3Object(client=s3_client, bucket="no-such-bucket-here", key="k").stat().failure()
    assert isinstance(failure, NotFound)


def test_open_of_a_missing_key_is_not_found(s3_bucket: S3Bucket) -> None:
    info = ObjectInfo(identity="s3://x/absent.pt", size=None)
    assert isinstance(s3_object(s3_bucket, "absent.pt").open(info).failure(), NotFound)


def test_open_of_a_missing_bucket_says_it_is_the_bucket(s3_client: Any) -> None:
    obj = s3.S3Object(client=s3_client, bucket="no-such-bucket-here", key="k")
    failure = obj.open(ObjectInfo(identity="s3://no-such-bucket-here/k", size=None)).failure()
    assert isinstance(failure, NotFound)
    assert "bucket does not exist" in failure.message


def test_open_reads_the_whole_object(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    obj = s3_object(s3_bucket, "ckpt.pt")
    info = obj.stat().unwrap()
    body = obj.open(info).unwrap()
    assert body.start == 0
    assert b"".join(body.chunks()) == DATA
    body.close()


@pytest.mark.parametrize(
    ("start", "end"), [(0, 1), (100, None), (3, 17), (len(DATA) - 1, None), (0, len(DATA))]
)
def test_open_reads_exactly_the_requested_range(s3_bucket: S3Bucket, start: int, end: int | None) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    obj = s3_object(s3_bucket, "ckpt.pt")
    info = obj.stat().unwrap()
    body = obj.open(info, start, end).unwrap()
    assert body.start == start
    assert b"".join(body.chunks()) == DATA[start:end]
    body.close()


def test_open_reads_an_empty_object(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("empty.pt", b"")
    obj = s3_object(s3_bucket, "empty.pt")
    assert read_all(obj, obj.stat().unwrap()) == b""


def test_open_yields_chunks_of_the_chunk_size(s3_bucket: S3Bucket) -> None:
    data = bytes(range(256)) * (10 * MIB // 256 // 4)
    s3_bucket.put("ckpt.pt", data)
    obj = s3_object(s3_bucket, "ckpt.pt")
    body = obj.open(obj.stat().unwrap()).unwrap()
    sizes = [len(chunk) for chunk in body.chunks()]
    body.close()
    assert sizes == [s3.CHUNK_SIZE, s3.CHUNK_SIZE, len(data) - 2 * s3.CHUNK_SIZE]


def test_chunk_size_is_at_least_one_mebibyte() -> None:
    assert s3.CHUNK_SIZE >= MIB


def test_open_of_a_versioned_object_reads_the_described_version_after_an_overwrite(
    s3_versioned_bucket: S3Bucket,
) -> None:
    s3_versioned_bucket.put("ckpt.pt", b"version one")
    obj = s3_object(s3_versioned_bucket, "ckpt.pt")
    info = obj.stat().unwrap()
    s3_versioned_bucket.put("ckpt.pt", b"version two")
    assert read_all(obj, info, 8) == b"one"


def test_open_fails_transiently_when_the_object_changed_since_stat(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("ckpt.pt", b"version one")
    obj = s3_object(s3_bucket, "ckpt.pt")
    info = obj.stat().unwrap()
    s3_bucket.put("ckpt.pt", b"version two")
    failure = obj.open(info, 8).failure()
    assert isinstance(failure, Transient)
    assert "changed" in failure.cause


def test_open_of_a_requested_version_reads_that_version(s3_versioned_bucket: S3Bucket) -> None:
    first = s3_versioned_bucket.put("ckpt.pt", b"first")
    s3_versioned_bucket.put("ckpt.pt", b"second")
    obj = s3_object(s3_versioned_bucket, "ckpt.pt", first["VersionId"])
    assert read_all(obj, obj.stat().unwrap()) == b"first"


# --- credentials against a moto that checks them ------------------------------------------------------


def test_stat_with_unknown_credentials_is_access_denied(s3_auth_server: AuthServer) -> None:
    client = make_s3_client(s3_auth_server.endpoint)
    failure = (
        s3.S3Object(client=client, bucket=s3_auth_server.bucket, key=s3_auth_server.key).stat().failure()
    )
    assert isinstance(failure, AccessDenied)


def test_open_with_unknown_credentials_is_access_denied_naming_the_code(s3_auth_server: AuthServer) -> None:
    client = make_s3_client(s3_auth_server.endpoint)
    obj = s3.S3Object(client=client, bucket=s3_auth_server.bucket, key=s3_auth_server.key)
    failure = obj.open(ObjectInfo(identity="s3://guarded/model.pt", size=None)).failure()
    assert isinstance(failure, AccessDenied)
    assert "InvalidAccessKeyId" in failure.message


def test_anonymous_access_to_a_private_bucket_is_access_denied(
    tmp_path: Path, s3_auth_server: AuthServer, s3_credentials: Any
) -> None:
    config = S3Source(
        bucket=s3_auth_server.bucket,
        key=s3_auth_server.key,
        anonymous=True,
        endpoint_url=s3_auth_server.endpoint,
    )
    client = s3.make_client(config, settings(tmp_path)).unwrap()
    failure = s3.S3Object(client=client, bucket=config.bucket, key=config.key).stat().failure()
    assert isinstance(failure, AccessDenied)


def test_missing_credentials_are_access_denied_with_a_hint(
    tmp_path: Path, s3_server: str, s3_credentials: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    config = S3Source(bucket="any", key="ckpt.pt", endpoint_url=s3_server)
    client = s3.make_client(config, settings(tmp_path)).unwrap()
    failure = s3.S3Object(client=client, bucket="any", key="ckpt.pt").stat().failure()
    assert isinstance(failure, AccessDenied)
    assert "anonymous" in failure.message


# --- broken connections (a real server that misbehaves on request) ------------------------------------


def fault_object(server: FaultServer, data: bytes, **config: Any) -> s3.S3Object:
    """``s3://b/ckpt.pt`` served by ``server`` (botocore addresses an IP endpoint path-style)."""
    server.put("b/ckpt.pt", data)
    client = make_s3_client(f"http://127.0.0.1:{server.port}", **config)
    return s3.S3Object(client=client, bucket="b", key="ckpt.pt")


def test_a_connection_dropped_mid_body_interrupts_the_read(s3_fault_server: FaultServer) -> None:
    s3_fault_server.faults.drop_after = 100
    obj = fault_object(s3_fault_server, DATA)
    body = obj.open(obj.stat().unwrap()).unwrap()
    with pytest.raises(Interrupted):
        b"".join(body.chunks())
    body.close()


def test_a_stalled_body_interrupts_the_read_at_the_read_timeout(s3_fault_server: FaultServer) -> None:
    s3_fault_server.faults.delay = 2.0
    obj = fault_object(s3_fault_server, DATA, read_timeout=0.3)
    body = obj.open(obj.stat().unwrap()).unwrap()
    with pytest.raises(Interrupted):
        b"".join(body.chunks())
    body.close()


def test_open_sends_range_and_if_match(s3_fault_server: FaultServer) -> None:
    obj = fault_object(s3_fault_server, DATA)
    info = obj.stat().unwrap()
    assert read_all(obj, info, 10, 20) == DATA[10:20]
    sent = s3_fault_server.requests[-1]
    assert (sent.method, sent.path, sent.range) == ("GET", "/b/ckpt.pt", "bytes=10-19")
    assert sent.headers["if-match"] == info.version


def test_a_server_error_on_open_is_transient(s3_fault_server: FaultServer) -> None:
    obj = fault_object(s3_fault_server, DATA)
    info = obj.stat().unwrap()
    s3_fault_server.faults.fail_first, s3_fault_server.faults.retry_after = (
        len(s3_fault_server.requests) + 1,
        "3",
    )
    failure = obj.open(info).failure()
    assert failure == Transient(cause="S3 503", retry_after=3.0)


def test_an_unreachable_endpoint_is_transient(tmp_path: Path, s3_credentials: Any) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    obj = s3.S3Object(client=make_s3_client(endpoint, connect_timeout=2), bucket="b", key="k")
    assert isinstance(obj.stat().failure(), Transient)


# --- the registered source ------------------------------------------------------------------------


def test_source_spec_registers_the_s3_scheme_and_config() -> None:
    assert (s3.SOURCE.name, s3.SOURCE.schemes, s3.SOURCE.config_type) == ("s3", ("s3",), S3Source)
    assert s3.SOURCE.from_uri("s3://b/k") == Success(S3Source(bucket="b", key="k"))


def test_fetch_fails_before_any_request_for_a_bad_endpoint(tmp_path: Path, s3_credentials: Any) -> None:
    config = S3Source(bucket="b", key="k", endpoint_url="ftp://example")
    assert isinstance(s3.fetch(config, settings(tmp_path)).failure(), InvalidConfig)


# --- end to end: ckptflow.fetch through the registry, the engine and the cache ------------------------

FAST_RETRY = RetryPolicy(attempts=3, base=0.0, cap=0.0)


def blobs_in(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "blobs").rglob("*") if p.is_file()]


def fetch_s3(uri: str, cache_dir: Path, endpoint: str, **kwargs: Any) -> Result[Path, Error]:
    return fetch(
        uri, cache_dir=cache_dir, options={"s3_endpoint_url": endpoint, "retry": FAST_RETRY}, **kwargs
    )


def test_fetch_puts_the_object_in_the_cache_under_its_sha256(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    s3_bucket.put("runs/ckpt.pt", DATA)
    path = fetch_s3(s3_bucket.uri("runs/ckpt.pt"), tmp_path, s3_bucket.endpoint).unwrap()
    assert path.read_bytes() == DATA
    assert path == tmp_path / "blobs" / "sha256" / hashlib.sha256(DATA).hexdigest()


def test_a_second_fetch_is_a_cache_hit(
    tmp_path: Path, s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    first = fetch_s3(s3_bucket.uri("ckpt.pt"), tmp_path, s3_bucket.endpoint).unwrap()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        second = fetch_s3(s3_bucket.uri("ckpt.pt"), tmp_path, s3_bucket.endpoint).unwrap()
    assert second == first
    assert "cache.hit" in engine_events(caplog)
    assert "fetch.started" not in engine_events(caplog)


def test_fetch_with_the_wrong_sha256_is_a_checksum_mismatch_leaving_no_blob(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    failure = fetch_s3(s3_bucket.uri("ckpt.pt"), tmp_path, s3_bucket.endpoint, sha256="0" * 64).failure()
    assert isinstance(failure, ChecksumMismatch)
    assert failure.actual == hashlib.sha256(DATA).hexdigest()
    assert blobs_in(tmp_path) == []


def test_fetch_with_the_right_sha256_succeeds(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    digest = hashlib.sha256(DATA).hexdigest()
    path = fetch_s3(s3_bucket.uri("ckpt.pt"), tmp_path, s3_bucket.endpoint, sha256=digest).unwrap()
    assert path.name == digest


def test_fetch_by_version_id_gets_that_version(tmp_path: Path, s3_versioned_bucket: S3Bucket) -> None:
    first = s3_versioned_bucket.put("ckpt.pt", b"first weights")
    s3_versioned_bucket.put("ckpt.pt", b"second weights")
    uri = s3.identity_of(s3_versioned_bucket.name, "ckpt.pt", first["VersionId"])
    path = fetch_s3(uri, tmp_path, s3_versioned_bucket.endpoint).unwrap()
    assert path.read_bytes() == b"first weights"


def test_fetch_without_version_id_gets_the_latest_version(
    tmp_path: Path, s3_versioned_bucket: S3Bucket
) -> None:
    s3_versioned_bucket.put("ckpt.pt", b"first weights")
    s3_versioned_bucket.put("ckpt.pt", b"second weights")
    path = fetch_s3(s3_versioned_bucket.uri("ckpt.pt"), tmp_path, s3_versioned_bucket.endpoint).unwrap()
    assert path.read_bytes() == b"second weights"


def test_fetch_after_an_overwrite_gets_the_new_content(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    s3_bucket.put("ckpt.pt", b"old weights")
    fetch_s3(s3_bucket.uri("ckpt.pt"), tmp_path, s3_bucket.endpoint).unwrap()
    s3_bucket.put("ckpt.pt", b"new weights")
    path = fetch_s3(s3_bucket.uri("ckpt.pt"), tmp_path, s3_bucket.endpoint).unwrap()
    assert path.read_bytes() == b"new weights"


def test_fetch_of_a_multipart_object_succeeds_without_an_md5(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    data = bytes(range(256)) * (5 * MIB // 256) + b"tail"
    s3_bucket.put_multipart("big.pt", data)
    path = fetch_s3(s3_bucket.uri("big.pt"), tmp_path, s3_bucket.endpoint).unwrap()
    assert path.name == hashlib.sha256(data).hexdigest()


def test_fetch_of_a_missing_key_is_not_found(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    failure = fetch_s3(s3_bucket.uri("absent.pt"), tmp_path, s3_bucket.endpoint).failure()
    assert isinstance(failure, NotFound)


def test_fetch_with_unknown_credentials_is_access_denied(
    tmp_path: Path, s3_auth_server: AuthServer, s3_credentials: Any
) -> None:
    uri = f"s3://{s3_auth_server.bucket}/{s3_auth_server.key}"
    failure = fetch_s3(uri, tmp_path, s3_auth_server.endpoint).failure()
    assert isinstance(failure, AccessDenied)
    assert "testing-secret-key" not in failure.message


def test_fetch_of_a_config_uses_its_endpoint(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    config = S3Source(bucket=s3_bucket.name, key="ckpt.pt", endpoint_url=s3_bucket.endpoint)
    assert fetch(config, cache_dir=tmp_path).unwrap().read_bytes() == DATA


def test_fetch_finds_the_endpoint_in_aws_endpoint_url_s3(
    tmp_path: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint)
    assert fetch(s3_bucket.uri("ckpt.pt"), cache_dir=tmp_path).unwrap().read_bytes() == DATA


def test_fetch_offline_answers_from_the_cache(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    s3_bucket.put("ckpt.pt", DATA)
    online = fetch_s3(s3_bucket.uri("ckpt.pt"), tmp_path, s3_bucket.endpoint).unwrap()
    offline = fetch(
        s3_bucket.uri("ckpt.pt"),
        cache_dir=tmp_path,
        offline=True,
        options={"s3_endpoint_url": "http://127.0.0.1:9"},
    )
    assert offline == Success(online)


def test_fetch_resumes_a_dropped_download_from_where_it_stopped(
    tmp_path: Path, s3_fault_server: FaultServer
) -> None:
    s3_fault_server.put("b/ckpt.pt", DATA)
    s3_fault_server.faults.drop_after = 4000
    endpoint = f"http://127.0.0.1:{s3_fault_server.port}"
    path = fetch_s3("s3://b/ckpt.pt", tmp_path, endpoint).unwrap()
    assert path.read_bytes() == DATA
    gets = [r for r in s3_fault_server.requests if r.method == "GET"]
    assert [r.range for r in gets] == [None, "bytes=4000-"]
    assert all(r.headers["if-match"] for r in gets)


def test_fetch_restarts_when_the_object_changes_mid_download(
    tmp_path: Path, s3_fault_server: FaultServer
) -> None:
    s3_fault_server.put("b/ckpt.pt", DATA * 20)
    s3_fault_server.faults.change_after, s3_fault_server.faults.changed_to = 1, b"replacement weights"
    endpoint = f"http://127.0.0.1:{s3_fault_server.port}"
    path = fetch_s3("s3://b/ckpt.pt", tmp_path, endpoint).unwrap()
    assert path.read_bytes() == b"replacement weights"
    first, second = (r for r in s3_fault_server.requests if r.method == "GET")
    assert first.headers["if-match"] != second.headers["if-match"]


def test_a_transfer_learning_load_from_s3_skips_the_mismatched_head(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    pretrained = make_classifier(10, seed=1)
    buffer = io.BytesIO()
    torch.save(pretrained.state_dict(), buffer)
    s3_bucket.put("pretrained.pt", buffer.getvalue())
    model = make_classifier(3, seed=2)
    report = load(
        model,
        s3_bucket.uri("pretrained.pt"),
        strategy="transfer_learning",
        cache_dir=tmp_path,
        source_options={"s3_endpoint_url": s3_bucket.endpoint},
    ).unwrap()
    assert {skipped.key for skipped in report.skipped} == {"head.weight", "head.bias"}
    assert all(skipped.reason.startswith("shape mismatch") for skipped in report.skipped)
    encoder = {k: v for k, v in pretrained.state_dict().items() if k.startswith("encoder.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in encoder.items())
