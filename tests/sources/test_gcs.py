"""The GCS source: pure addressing and metadata mapping, then real fetches against gcp-storage-emulator."""

from __future__ import annotations

import base64
import hashlib
import logging
import sys
from pathlib import Path

import attrs
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from ckptflow.config.schema import GcsSource
from ckptflow.errors import AccessDenied, ChecksumMismatch, Error, InvalidConfig, NetworkError, NotFound
from ckptflow.fetch import fetch
from ckptflow.sources.base import Body, FetchSettings, ObjectInfo, TransferError
from ckptflow.sources.checksums import md5_hex
from ckptflow.sources.gcs import (
    DEFAULT_ENDPOINT,
    SOURCE,
    GcsObject,
    auth_headers,
    default_credentials_token,
    endpoint_for,
    from_uri,
    gcs_object,
    media_url,
    metadata_url,
    object_info,
)
from ckptflow.sources.retry import RetryPolicy
from ckptflow.sources.transfer import download
from tests.fixtures.gcs_server import (
    GCS_OBJECT,
    GCS_SPACED_OBJECT,
    GcsEmulator,
    InterruptOnce,
    engine_events,
    range_start,
)

NO_WAIT = {"retry": RetryPolicy(attempts=3, base=0.0, cap=0.0)}
EMPTY_MD5_BASE64 = "1B2M2Y8AsgTpgAmY7PhCfg=="
EMPTY_MD5_HEX = "d41d8cd98f00b204e9800998ecf8427e"


def _never_called() -> Result[str, Error]:
    raise AssertionError("application default credentials must not be consulted here")


def _blobs(cache: Path) -> list[Path]:
    return [p for p in (cache / "blobs").rglob("*") if p.is_file()] if (cache / "blobs").exists() else []


# --- URIs -------------------------------------------------------------------------------------------


def test_from_uri_reads_bucket_and_object_path() -> None:
    assert from_uri("gs://my-bucket/runs/7/model.pt") == Success(
        GcsSource(bucket="my-bucket", blob="runs/7/model.pt")
    )


def test_from_uri_reads_a_trailing_generation_as_gsutil_does() -> None:
    assert from_uri("gs://my-bucket/model.pt#1712345678901234") == Success(
        GcsSource(bucket="my-bucket", blob="model.pt", generation="1712345678901234")
    )


def test_from_uri_keeps_a_hash_that_is_not_a_generation_in_the_name() -> None:
    assert from_uri("gs://my-bucket/model#best.pt").unwrap().blob == "model#best.pt"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("s3://bucket/key", "not a gs:// URI"),
        ("gs://bucket", "no object name"),
        ("gs://bucket/dir/", "names a folder"),
        ("gs://Bad_Bucket!/x", "not a valid bucket name"),
    ],
)
def test_from_uri_rejects_what_is_not_an_object(uri: str, says: str) -> None:
    result = from_uri(uri)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), InvalidConfig)
    assert says in result.failure().message


def test_source_spec_routes_the_gs_scheme_to_gcs_configs() -> None:
    assert (SOURCE.name, SOURCE.schemes, SOURCE.config_type) == ("gcs", ("gs",), GcsSource)


# --- endpoints and URLs -----------------------------------------------------------------------------


def test_configured_endpoint_wins_over_the_emulator_variable() -> None:
    environ = {"STORAGE_EMULATOR_HOST": "localhost:9023"}
    assert endpoint_for("http://127.0.0.1:4443/", environ) == "http://127.0.0.1:4443"


def test_emulator_host_without_scheme_means_plain_http() -> None:
    assert endpoint_for(None, {"STORAGE_EMULATOR_HOST": "localhost:9023"}) == "http://localhost:9023"


def test_emulator_host_with_scheme_is_kept() -> None:
    assert endpoint_for(None, {"STORAGE_EMULATOR_HOST": "https://gcs.test:443/"}) == "https://gcs.test:443"


def test_without_configuration_the_endpoint_is_google() -> None:
    assert endpoint_for(None, {}) == DEFAULT_ENDPOINT == "https://storage.googleapis.com"


def test_metadata_url_encodes_the_object_name_as_one_segment() -> None:
    assert (
        metadata_url("http://e", "b", "dir/a b+c#1.pt") == "http://e/storage/v1/b/b/o/dir%2Fa%20b%2Bc%231.pt"
    )


def test_metadata_url_pins_a_given_generation() -> None:
    assert metadata_url("http://e", "b", "m.pt", "42") == "http://e/storage/v1/b/b/o/m.pt?generation=42"


def test_media_url_asks_for_media_pinned_to_the_generation() -> None:
    assert (
        media_url("http://e", "b", "d/m.pt", "42")
        == "http://e/storage/v1/b/b/o/d%2Fm.pt?alt=media&generation=42"
    )


# --- metadata → ObjectInfo --------------------------------------------------------------------------


def test_md5_hex_decodes_the_base64_digest() -> None:
    assert md5_hex(EMPTY_MD5_BASE64) == EMPTY_MD5_HEX


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_md5_hex_refuses_what_is_not_a_16_byte_digest(value: str) -> None:
    assert md5_hex(value) is None


@given(st.binary(max_size=64))
def test_md5_hex_inverts_the_base64_encoding_gcs_uses(data: bytes) -> None:
    digest = hashlib.md5(data).digest()
    assert md5_hex(base64.b64encode(digest).decode()) == digest.hex()


def test_object_info_maps_generation_size_and_both_checksums() -> None:
    metadata = {"generation": "1700", "size": "1024", "md5Hash": EMPTY_MD5_BASE64, "crc32c": "AAAAAA=="}
    assert object_info("gs://b/o", metadata, pinned=False) == ObjectInfo(
        identity="gs://b/o",
        size=1024,
        version="1700",
        checksums={"md5": EMPTY_MD5_HEX, "crc32c": "AAAAAA=="},
        immutable=False,
    )


def test_composite_objects_carry_only_crc32c() -> None:
    info = object_info("gs://b/o", {"generation": "1", "size": "3", "crc32c": "AAAAAA=="}, pinned=False)
    assert info.checksums == {"crc32c": "AAAAAA=="}


def test_a_named_generation_makes_the_content_immutable() -> None:
    assert object_info("gs://b/o", {"generation": "1", "size": "3"}, pinned=True).immutable


def test_object_info_leaves_the_metadata_unchanged() -> None:
    metadata = {"generation": "1700", "size": "1024", "md5Hash": EMPTY_MD5_BASE64}
    before = dict(metadata)
    object_info("gs://b/o", metadata, pinned=False)
    assert metadata == before


# --- credentials ------------------------------------------------------------------------------------


def test_anonymous_sends_no_authorization_even_with_a_token_around() -> None:
    config = GcsSource(bucket="b", blob="o", anonymous=True, token="tok")
    assert auth_headers(
        config, DEFAULT_ENDPOINT, {"GOOGLE_OAUTH_ACCESS_TOKEN": "env"}, _never_called
    ) == Success({})


def test_a_configured_token_is_sent_as_bearer() -> None:
    config = GcsSource(bucket="b", blob="o", token="ya29.config")
    assert auth_headers(config, DEFAULT_ENDPOINT, {}, _never_called) == Success(
        {"Authorization": "Bearer ya29.config"}
    )


def test_a_token_from_the_environment_is_sent_as_bearer() -> None:
    config = GcsSource(bucket="b", blob="o")
    headers = auth_headers(config, DEFAULT_ENDPOINT, {"GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.env"}, _never_called)
    assert headers == Success({"Authorization": "Bearer ya29.env"})


def test_ambient_credentials_never_go_to_an_emulator_or_other_endpoint() -> None:
    config = GcsSource(bucket="b", blob="o")
    assert auth_headers(config, "http://127.0.0.1:9023", {}, _never_called) == Success({})


def test_googles_endpoint_without_a_token_uses_application_default_credentials() -> None:
    config = GcsSource(bucket="b", blob="o")
    headers = auth_headers(config, DEFAULT_ENDPOINT, {}, lambda: Success("ya29.adc"))
    assert headers == Success({"Authorization": "Bearer ya29.adc"})


def test_application_default_credentials_that_cannot_be_found_are_access_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    result = default_credentials_token()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), AccessDenied)
    assert "application-default login" in result.failure().message


def test_application_default_credentials_without_google_auth_name_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in ("google.auth", "google.auth.transport.requests", "google.auth.exceptions"):
        monkeypatch.setitem(sys.modules, module, None)
    result = default_credentials_token()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), InvalidConfig)
    assert "ckptflow[gcs]" in result.failure().message


# --- against the emulator ---------------------------------------------------------------------------


def test_fetch_downloads_the_objects_bytes(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    path = fetch(gcs_emulator.uri(GCS_OBJECT), cache_dir=tmp_path).unwrap()
    assert path.read_bytes() == gcs_emulator.objects[GCS_OBJECT].data


def test_fetch_handles_names_with_spaces_plus_and_hash(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    source = GcsSource(bucket=gcs_emulator.bucket, blob=GCS_SPACED_OBJECT)
    assert (
        fetch(source, cache_dir=tmp_path).unwrap().read_bytes()
        == gcs_emulator.objects[GCS_SPACED_OBJECT].data
    )


def test_endpoint_url_reaches_the_emulator_without_the_environment_variable(
    gcs_server: GcsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    source = GcsSource(
        bucket=gcs_server.bucket, blob=GCS_OBJECT, endpoint_url=gcs_server.endpoint, anonymous=True
    )
    assert fetch(source, cache_dir=tmp_path).unwrap().read_bytes() == gcs_server.objects[GCS_OBJECT].data


def test_second_fetch_is_a_cache_hit(
    gcs_emulator: GcsEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = fetch(gcs_emulator.uri(GCS_OBJECT), cache_dir=tmp_path).unwrap()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        second = fetch(gcs_emulator.uri(GCS_OBJECT), cache_dir=tmp_path).unwrap()
    assert second == first
    assert "cache.hit" in engine_events(caplog)
    assert "fetch.started" not in engine_events(caplog)


def test_offline_fetch_answers_from_the_cache(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    online = fetch(gcs_emulator.uri(GCS_OBJECT), cache_dir=tmp_path).unwrap()
    assert fetch(gcs_emulator.uri(GCS_OBJECT), cache_dir=tmp_path, offline=True) == Success(online)


def test_a_missing_object_is_not_found(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    result = fetch(gcs_emulator.uri("models/absent.pt"), cache_dir=tmp_path)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), NotFound)
    assert "gs://ckpt-test/models/absent.pt" in result.failure().message


def test_a_missing_bucket_is_not_found(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    result = fetch("gs://no-such-bucket/model.pt", cache_dir=tmp_path)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), NotFound)


def test_wrong_sha256_is_a_mismatch_and_nothing_is_cached(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    result = fetch(gcs_emulator.uri(GCS_OBJECT), cache_dir=tmp_path, sha256="0" * 64)
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, ChecksumMismatch)
    assert error.actual == hashlib.sha256(gcs_emulator.objects[GCS_OBJECT].data).hexdigest()
    assert _blobs(tmp_path) == []


def test_the_right_sha256_is_accepted(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    digest = hashlib.sha256(gcs_emulator.objects[GCS_OBJECT].data).hexdigest()
    assert fetch(gcs_emulator.uri(GCS_OBJECT), cache_dir=tmp_path, sha256=digest).unwrap().name == digest


def test_the_emulators_md5_and_crc32c_are_announced(gcs_emulator: GcsEmulator) -> None:
    expected = gcs_emulator.objects[GCS_OBJECT]
    with httpx.Client() as client:
        obj = gcs_object(
            client, GcsSource(bucket=gcs_emulator.bucket, blob=GCS_OBJECT), gcs_emulator.endpoint, {}
        )
        stat = obj.stat().unwrap()
    assert stat.checksums == {"md5": hashlib.md5(expected.data).hexdigest(), "crc32c": expected.crc32c}
    assert stat.version == expected.generation and stat.size == len(expected.data)


@attrs.frozen
class _CorruptedChecksums:
    """A real GCS object whose announced checksums are replaced, as a corrupted store would report."""

    inner: GcsObject
    checksums: dict[str, str]

    @property
    def identity(self) -> str:
        return self.inner.identity

    def stat(self) -> Result[ObjectInfo, TransferError]:
        return self.inner.stat().map(lambda info: attrs.evolve(info, checksums=self.checksums))

    def open(self, info: ObjectInfo, start: int = 0, end: int | None = None) -> Result[Body, TransferError]:
        return self.inner.open(info, start, end)


@pytest.mark.parametrize(
    ("checksums", "algorithm"),
    [({"md5": "0" * 32}, "md5"), ({"crc32c": "AAAAAA=="}, "crc32c")],
)
def test_a_store_checksum_mismatch_is_detected_without_sha256(
    gcs_emulator: GcsEmulator, tmp_path: Path, checksums: dict[str, str], algorithm: str
) -> None:
    with httpx.Client() as client:
        real = gcs_object(
            client, GcsSource(bucket=gcs_emulator.bucket, blob=GCS_OBJECT), gcs_emulator.endpoint, {}
        )
        result = download(_CorruptedChecksums(real, checksums), FetchSettings(cache_dir=tmp_path))
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, ChecksumMismatch)
    assert error.algorithm == algorithm
    assert _blobs(tmp_path) == []


def _is_media(request: httpx.Request) -> bool:
    return request.url.params.get("alt") == "media"


def test_an_interrupted_body_resumes_from_its_offset_pinned_to_the_generation(
    gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    large = gcs_emulator.upload("models/large.pt", bytes(range(256)) * 6144)  # 1.5 MiB: more than one chunk
    limit = (1 << 20) + 1000
    transport = InterruptOnce(limit=limit, cut=_is_media)
    path = fetch(
        gcs_emulator.uri(large.name), cache_dir=tmp_path, transport=transport, options=NO_WAIT
    ).unwrap()
    assert path.read_bytes() == large.data
    first, resumed = transport.gets(_is_media)
    assert transport.cuts == 1
    assert "Range" not in first.headers
    assert 0 < range_start(resumed) <= limit
    assert resumed.url.params["generation"] == first.url.params["generation"] == large.generation


def test_a_pinned_generation_is_fetched_and_immutable(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    expected = gcs_emulator.objects[GCS_OBJECT]
    uri = f"{gcs_emulator.uri(GCS_OBJECT)}#{expected.generation}"
    assert fetch(uri, cache_dir=tmp_path).unwrap().read_bytes() == expected.data
    with httpx.Client() as client:
        config = from_uri(uri).unwrap()
        assert gcs_object(client, config, gcs_emulator.endpoint, {}).stat().unwrap().immutable


def test_a_token_never_appears_in_a_failure(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    secret = "ya29.very-secret-token-value"
    source = GcsSource(bucket=gcs_emulator.bucket, blob="models/absent.pt", token=secret)
    result = fetch(source, cache_dir=tmp_path)
    assert isinstance(result, Failure)
    assert secret not in result.failure().message and secret not in repr(result.failure())
    assert secret not in repr(source)


def test_an_endpoint_that_is_not_the_json_api_fails_with_a_hint(tmp_path: Path) -> None:
    def html_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>welcome</html>", headers={"Content-Type": "text/html"})

    source = GcsSource(bucket="bucket", blob="m.pt", endpoint_url="http://portal.test", anonymous=True)
    result = fetch(source, cache_dir=tmp_path, transport=httpx.MockTransport(html_page))
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), NetworkError)
    assert "did not answer with GCS object metadata" in result.failure().message
