"""The S3 edge: URI parsing, the pure pieces, failure translation, and stat/open against real servers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import botocore
import pytest
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
from returns.result import Success

from ckptflow.config.schema import S3Source
from ckptflow.errors import AccessDenied, InvalidConfig, NotFound, StageFailed
from ckptflow.sources import s3
from ckptflow.sources.base import FetchSettings, Interrupted, ObjectInfo, Transient
from tests.fixtures.s3_server import AuthServer, FaultyObjectServer, S3Bucket, free_port, make_s3_client

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


# --- broken connections ---------------------------------------------------------------------------


def faulty_object(server: FaultyObjectServer, **config: Any) -> s3.S3Object:
    return s3.S3Object(client=make_s3_client(server.endpoint, **config), bucket="b", key="ckpt.pt")


def test_a_connection_dropped_mid_body_interrupts_the_read(faulty_s3_server: FaultyObjectServer) -> None:
    faulty_s3_server.cut_gets, faulty_s3_server.cut_after = 1, 100
    obj = faulty_object(faulty_s3_server)
    body = obj.open(obj.stat().unwrap()).unwrap()
    with pytest.raises(Interrupted):
        b"".join(body.chunks())
    body.close()


def test_a_stalled_body_interrupts_the_read_at_the_read_timeout(faulty_s3_server: FaultyObjectServer) -> None:
    faulty_s3_server.stall, faulty_s3_server.cut_after = True, 100
    obj = faulty_object(faulty_s3_server, read_timeout=0.5)
    body = obj.open(obj.stat().unwrap()).unwrap()
    with pytest.raises(Interrupted):
        b"".join(body.chunks())
    body.close()


def test_open_sends_range_and_if_match(faulty_s3_server: FaultyObjectServer) -> None:
    obj = faulty_object(faulty_s3_server)
    info = obj.stat().unwrap()
    assert read_all(obj, info, 10, 20) == faulty_s3_server.data[10:20]
    sent = faulty_s3_server.gets()[-1]
    assert (sent["range"], sent["if-match"]) == ("bytes=10-19", faulty_s3_server.etag)


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
