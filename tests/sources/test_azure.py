"""The Azure Blob source: pure addressing and credential choice, then real fetches against Azurite."""

from __future__ import annotations

import base64
import hashlib
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from returns.result import Failure, Success

from ckptflow.config.schema import AzureSource, HttpSource
from ckptflow.errors import AccessDenied, ChecksumMismatch, InvalidConfig, NotFound
from ckptflow.fetch import fetch
from ckptflow.sources.azure import (
    SOURCE,
    Ambient,
    AzureTarget,
    BearerToken,
    SasToken,
    SharedKeyAuth,
    account_of_endpoint,
    azure_object,
    blob_info,
    blob_url,
    from_uri,
    identity_token,
    if_match,
    resolve_target,
)
from ckptflow.sources.azure_auth import (
    API_VERSION,
    DEV_ACCOUNT,
    DEV_ACCOUNT_KEY,
    DEV_BLOB_ENDPOINT,
    SharedKey,
    shared_key,
    sign_request,
)
from ckptflow.sources.base import ObjectInfo
from ckptflow.sources.registry import resolve
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.azurite import AZ_BLOB, AZ_CONTAINER, AZ_SPACED_BLOB, AzuriteServer, read_sas
from tests.fixtures.gcs_server import InterruptOnce, engine_events, range_start

NO_WAIT = {"retry": RetryPolicy(attempts=3, base=0.0, cap=0.0)}
DEV_KEY = shared_key(DEV_ACCOUNT, DEV_ACCOUNT_KEY).unwrap()
NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _blobs(cache: Path) -> list[Path]:
    return [p for p in (cache / "blobs").rglob("*") if p.is_file()] if (cache / "blobs").exists() else []


def _invalid(result: object) -> InvalidConfig:
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, InvalidConfig)
    return error


# --- URIs -------------------------------------------------------------------------------------------


def test_from_uri_reads_container_and_blob_of_an_az_uri() -> None:
    assert from_uri("az://models/runs/7/model.pt") == Success(
        AzureSource(container="models", blob="runs/7/model.pt")
    )


def test_from_uri_reads_account_and_endpoint_from_a_blob_service_url() -> None:
    assert from_uri("https://acct.blob.core.windows.net/models/dir/model%20v1.pt") == Success(
        AzureSource(
            container="models",
            blob="dir/model v1.pt",
            account="acct",
            endpoint_url="https://acct.blob.core.windows.net",
        )
    )


def test_from_uri_reads_an_emulator_url_with_the_account_in_the_path() -> None:
    assert from_uri("http://127.0.0.1:10000/devstoreaccount1/models/model.pt") == Success(
        AzureSource(container="models", blob="model.pt", account=DEV_ACCOUNT, endpoint_url=DEV_BLOB_ENDPOINT)
    )


def test_from_uri_takes_a_sas_query_as_the_sas_token() -> None:
    config = from_uri("https://acct.blob.core.windows.net/c/b.pt?sv=2021-08-06&sp=r&sig=abc%3D").unwrap()
    assert config.sas_token == "sv=2021-08-06&sp=r&sig=abc%3D"


def test_from_uri_rejects_a_query_that_is_not_a_sas() -> None:
    assert "only query" in _invalid(from_uri("https://acct.blob.core.windows.net/c/b.pt?snapshot=1")).message


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("gs://bucket/object", "not an Azure blob URI"),
        ("az://models", "does not name a blob"),
        ("az://models/dir/", "does not name a blob"),
        ("az:///blob", "no container"),
    ],
)
def test_from_uri_rejects_what_is_not_a_blob(uri: str, says: str) -> None:
    assert says in _invalid(from_uri(uri)).message


def test_a_failure_for_a_sas_url_does_not_show_the_signature() -> None:
    message = _invalid(from_uri("https://acct.blob.core.windows.net/c/?sv=1&sig=SECRETSIG")).message
    assert "SECRETSIG" not in message


def test_source_spec_routes_the_az_scheme_to_azure_configs() -> None:
    assert (SOURCE.name, SOURCE.schemes, SOURCE.config_type) == ("azure", ("az",), AzureSource)


def test_the_registry_routes_a_blob_service_url_to_the_azure_source() -> None:
    spec, config = resolve("https://acct.blob.core.windows.net/models/m.pt?sv=1&sig=abc").unwrap()
    assert spec is SOURCE
    assert config == AzureSource(
        container="models",
        blob="m.pt",
        account="acct",
        endpoint_url="https://acct.blob.core.windows.net",
        sas_token="sv=1&sig=abc",
    )


def test_the_registry_keeps_other_https_urls_on_the_http_source() -> None:
    spec, config = resolve("https://files.example.com/models/m.pt").unwrap()
    assert (spec.name, config) == ("http", HttpSource(url="https://files.example.com/models/m.pt"))


def test_a_blob_service_url_is_fetched_as_a_blob_with_its_sas(tmp_path: Path) -> None:
    payload = b"weights from the blob service"
    seen: list[httpx.Request] = []

    def blob_service(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Content-Length": str(len(payload)), "ETag": '"0x1"', "Accept-Ranges": "bytes"}
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else payload)

    url = "https://acct.blob.core.windows.net/models/m.pt?sv=2021-08-06&sr=b&sp=r&sig=SECRETSIG"
    path = fetch(url, cache_dir=tmp_path, transport=httpx.MockTransport(blob_service))
    assert path.unwrap().read_bytes() == payload
    assert all(r.headers["x-ms-version"] == API_VERSION for r in seen)
    assert all(r.url.params["sig"] == "SECRETSIG" for r in seen)


@pytest.mark.parametrize(
    ("endpoint", "account"),
    [
        ("https://acct.blob.core.windows.net", "acct"),
        ("https://acct.blob.core.chinacloudapi.cn/", "acct"),
        ("http://127.0.0.1:10000/devstoreaccount1", DEV_ACCOUNT),
        ("http://127.0.0.1:10000", None),
    ],
)
def test_account_of_endpoint(endpoint: str, account: str | None) -> None:
    assert account_of_endpoint(endpoint) == account


def test_blob_url_encodes_the_name_but_keeps_its_slashes() -> None:
    assert blob_url("http://e/acct/", "models", "d/a b+c.pt") == "http://e/acct/models/d/a%20b%2Bc.pt"


# --- where the account lives and which credential to present ----------------------------------------


def test_a_development_connection_string_means_azurite_with_the_well_known_key() -> None:
    config = AzureSource(container="c", blob="b", connection_string="UseDevelopmentStorage=true")
    assert resolve_target(config, {}) == Success(
        AzureTarget(endpoint=DEV_BLOB_ENDPOINT, container="c", blob="b", credential=DEV_KEY)
    )


def test_the_environment_connection_string_applies_when_the_config_names_no_account() -> None:
    environ = {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=acct;AccountKey=a2V5"}
    target = resolve_target(AzureSource(container="c", blob="b"), environ).unwrap()
    assert target.endpoint == "https://acct.blob.core.windows.net"
    assert target.credential == SharedKey("acct", b"key")


def test_the_environment_connection_string_is_ignored_for_another_account() -> None:
    environ = {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=other;AccountKey=a2V5"}
    target = resolve_target(AzureSource(container="c", blob="b", account="acct"), environ).unwrap()
    assert (target.endpoint, target.credential) == ("https://acct.blob.core.windows.net", Ambient())


def test_a_sas_token_wins_over_an_account_key_and_loses_its_question_mark() -> None:
    config = AzureSource(container="c", blob="b", account="acct", sas_token="?sv=1&sig=x", account_key="a2V5")
    assert resolve_target(config, {}).unwrap().credential == SasToken("sv=1&sig=x")


def test_an_account_alone_is_the_public_endpoint_with_ambient_credentials() -> None:
    target = resolve_target(AzureSource(container="c", blob="b"), {"AZURE_STORAGE_ACCOUNT": "acct"}).unwrap()
    assert target == AzureTarget(
        endpoint="https://acct.blob.core.windows.net", container="c", blob="b", credential=Ambient()
    )


def test_environment_key_signs_for_its_own_account_only() -> None:
    environ = {"AZURE_STORAGE_ACCOUNT": "other", "AZURE_STORAGE_KEY": "a2V5"}
    config = AzureSource(container="c", blob="b", account="acct")
    assert resolve_target(config, environ).unwrap().credential == Ambient()
    assert resolve_target(AzureSource(container="c", blob="b"), environ).unwrap().credential == SharedKey(
        "other", b"key"
    )


def test_no_account_anywhere_is_a_configuration_problem() -> None:
    error = _invalid(resolve_target(AzureSource(container="c", blob="b"), {}))
    assert "no storage account" in error.message
    assert "AZURE_STORAGE_CONNECTION_STRING" in error.message


def test_a_sas_needs_only_an_endpoint_not_an_account_name() -> None:
    config = AzureSource(container="c", blob="b", endpoint_url="https://blobs.example.com", sas_token="sig=x")
    target = resolve_target(config, {}).unwrap()
    assert (target.identity, target.credential) == ("https://blobs.example.com/c/b", SasToken("sig=x"))


def test_an_account_key_without_an_account_name_is_a_configuration_problem() -> None:
    config = AzureSource(
        container="c", blob="b", endpoint_url="https://blobs.example.com", account_key="a2V5"
    )
    assert "set account" in _invalid(resolve_target(config, {})).message


def test_an_account_key_that_is_not_base64_is_a_configuration_problem() -> None:
    config = AzureSource(container="c", blob="b", account="acct", account_key="not-base64-KEYSECRET!")
    error = _invalid(resolve_target(config, {}))
    assert "not valid base64" in error.message and "KEYSECRET" not in error.message


def test_a_malformed_environment_connection_string_names_the_variable() -> None:
    error = _invalid(
        resolve_target(AzureSource(container="c", blob="b"), {"AZURE_STORAGE_CONNECTION_STRING": "x"})
    )
    assert "AZURE_STORAGE_CONNECTION_STRING" in error.message


def test_credential_values_keep_their_secrets_out_of_repr() -> None:
    shown = repr((SasToken("sv=1&sig=SASSECRET"), BearerToken("BEARERSECRET"), DEV_KEY))
    assert "SASSECRET" not in shown and "BEARERSECRET" not in shown and DEV_ACCOUNT_KEY[:12] not in shown


def test_without_azure_identity_no_bearer_token_is_sought(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    assert identity_token() == Success(None)


# --- requests and responses -------------------------------------------------------------------------


def test_if_match_pins_a_ranged_read_to_the_etag() -> None:
    info = ObjectInfo(identity="x", size=3, version='"0x8D"')
    assert if_match(info) == {"If-Match": '"0x8D"'}
    assert if_match(ObjectInfo(identity="x", size=3)) == {}


def test_blob_info_maps_etag_size_and_content_md5() -> None:
    md5 = hashlib.md5(b"abc").digest()
    response = httpx.Response(
        200,
        headers={"ETag": '"0x8D"', "Content-Length": "3", "Content-MD5": base64.b64encode(md5).decode()},
    )
    assert blob_info(response, "id") == ObjectInfo(
        identity="id", size=3, version='"0x8D"', checksums={"md5": md5.hex()}
    )


def test_blob_info_of_a_ranged_probe_uses_the_whole_blobs_size_and_md5() -> None:
    md5 = hashlib.md5(b"abcdef").digest()
    response = httpx.Response(
        206,
        headers={
            "ETag": '"0x8D"',
            "Content-Length": "1",
            "Content-Range": "bytes 0-0/6",
            "Content-MD5": base64.b64encode(hashlib.md5(b"a").digest()).decode(),
            "x-ms-blob-content-md5": base64.b64encode(md5).decode(),
        },
    )
    info = blob_info(response, "id")
    assert (info.size, info.checksums) == (6, {"md5": md5.hex()})


def test_blob_info_without_content_md5_announces_no_checksum() -> None:
    assert blob_info(httpx.Response(200, headers={"Content-Length": "3"}), "id").checksums == {}


def test_shared_key_auth_signs_each_request_with_its_clock() -> None:
    request = httpx.Request(
        "GET", "http://127.0.0.1:1/devstoreaccount1/c/b", headers={"x-ms-version": API_VERSION}
    )
    unsigned = dict(request.headers)
    flow = SharedKeyAuth(DEV_KEY, clock=lambda: NOW).auth_flow(request)
    signed = next(flow)
    expected = sign_request("GET", str(request.url), unsigned, DEV_KEY, NOW)
    assert signed.headers["Authorization"] == expected["Authorization"]
    assert signed.headers["x-ms-date"] == "Tue, 02 Jan 2024 03:04:05 GMT"


def test_a_sas_joins_the_url_but_not_the_identity() -> None:
    target = AzureTarget(
        endpoint="https://a.blob.core.windows.net", container="c", blob="b", credential=SasToken("sig=S")
    )
    with httpx.Client() as client:
        obj = azure_object(client, target)
    assert obj.url == "https://a.blob.core.windows.net/c/b?sig=S"
    assert obj.identity == "https://a.blob.core.windows.net/c/b"
    assert "sig=S" not in repr(obj)


def test_a_bearer_token_travels_in_the_authorization_header() -> None:
    target = AzureTarget(
        endpoint="https://a.blob.core.windows.net", container="c", blob="b", credential=BearerToken("T")
    )
    with httpx.Client() as client:
        obj = azure_object(client, target)
    assert obj.headers == {"x-ms-version": API_VERSION, "Authorization": "Bearer T"}


# --- against Azurite --------------------------------------------------------------------------------


def test_fetch_with_the_connection_string_in_the_environment(
    azurite_env: AzuriteServer, tmp_path: Path
) -> None:
    path = fetch(f"az://{AZ_CONTAINER}/{AZ_BLOB}", cache_dir=tmp_path).unwrap()
    assert path.read_bytes() == azurite_env.blobs[AZ_BLOB].data


def test_fetch_signs_names_with_spaces_and_plus(azurite_env: AzuriteServer, tmp_path: Path) -> None:
    path = fetch(AzureSource(container=AZ_CONTAINER, blob=AZ_SPACED_BLOB), cache_dir=tmp_path).unwrap()
    assert path.read_bytes() == azurite_env.blobs[AZ_SPACED_BLOB].data


def test_fetch_with_a_configured_connection_string(azurite: AzuriteServer, tmp_path: Path) -> None:
    source = AzureSource(container=AZ_CONTAINER, blob=AZ_BLOB, connection_string=azurite.connection_string)
    assert fetch(source, cache_dir=tmp_path).unwrap().read_bytes() == azurite.blobs[AZ_BLOB].data


def test_fetch_with_endpoint_account_and_key(azurite: AzuriteServer, tmp_path: Path) -> None:
    source = AzureSource(
        container=AZ_CONTAINER,
        blob=AZ_BLOB,
        endpoint_url=azurite.endpoint,
        account=DEV_ACCOUNT,
        account_key=DEV_ACCOUNT_KEY,
    )
    assert fetch(source, cache_dir=tmp_path).unwrap().read_bytes() == azurite.blobs[AZ_BLOB].data


def test_fetch_with_a_sas_token(azurite: AzuriteServer, tmp_path: Path) -> None:
    source = AzureSource(
        container=AZ_CONTAINER,
        blob=AZ_BLOB,
        endpoint_url=azurite.endpoint,
        sas_token=read_sas(AZ_CONTAINER, AZ_BLOB),
    )
    assert fetch(source, cache_dir=tmp_path).unwrap().read_bytes() == azurite.blobs[AZ_BLOB].data


def test_a_wrong_sas_is_access_denied_and_never_shown(azurite: AzuriteServer, tmp_path: Path) -> None:
    forged = read_sas(AZ_CONTAINER, AZ_BLOB).replace("sp=r", "sp=rw")
    source = AzureSource(
        container=AZ_CONTAINER, blob=AZ_BLOB, endpoint_url=azurite.endpoint, sas_token=forged
    )
    result = fetch(source, cache_dir=tmp_path)
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, AccessDenied)
    signature = forged.rsplit("sig=", 1)[1]
    assert signature not in error.message and signature not in repr(error)


def test_anonymous_access_to_a_private_container_says_which_credentials_to_give(
    azurite: AzuriteServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    source = AzureSource(container=AZ_CONTAINER, blob=AZ_BLOB, endpoint_url=azurite.endpoint)
    result = fetch(source, cache_dir=tmp_path)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), AccessDenied)
    assert "sas_token, account_key or connection_string" in result.failure().message


def test_second_fetch_is_a_cache_hit(
    azurite_env: AzuriteServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = fetch(f"az://{AZ_CONTAINER}/{AZ_BLOB}", cache_dir=tmp_path).unwrap()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        second = fetch(f"az://{AZ_CONTAINER}/{AZ_BLOB}", cache_dir=tmp_path).unwrap()
    assert second == first
    assert "cache.hit" in engine_events(caplog)
    assert "fetch.started" not in engine_events(caplog)


def test_a_missing_blob_is_not_found(azurite_env: AzuriteServer, tmp_path: Path) -> None:
    result = fetch(f"az://{AZ_CONTAINER}/absent.pt", cache_dir=tmp_path)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), NotFound)
    assert f"{azurite_env.endpoint}/{AZ_CONTAINER}/absent.pt" in result.failure().message


def test_a_missing_container_is_not_found(azurite_env: AzuriteServer, tmp_path: Path) -> None:
    result = fetch("az://no-such-container/model.pt", cache_dir=tmp_path)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), NotFound)


def test_wrong_sha256_is_a_mismatch_and_nothing_is_cached(azurite_env: AzuriteServer, tmp_path: Path) -> None:
    result = fetch(f"az://{AZ_CONTAINER}/{AZ_BLOB}", cache_dir=tmp_path, sha256="f" * 64)
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, ChecksumMismatch)
    assert error.actual == hashlib.sha256(azurite_env.blobs[AZ_BLOB].data).hexdigest()
    assert _blobs(tmp_path) == []


def test_a_stored_content_md5_that_disagrees_with_the_bytes_is_a_mismatch(
    azurite_env: AzuriteServer, tmp_path: Path
) -> None:
    azurite_env.upload("checks/tampered.bin", b"the real content")
    wrong = base64.b64encode(hashlib.md5(b"other content").digest()).decode()
    azurite_env.set_content_md5("checks/tampered.bin", wrong)
    result = fetch(f"az://{AZ_CONTAINER}/checks/tampered.bin", cache_dir=tmp_path)
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, ChecksumMismatch)
    assert (error.algorithm, error.expected) == ("md5", hashlib.md5(b"other content").hexdigest())
    assert _blobs(tmp_path) == []


def _is_blob_get(request: httpx.Request) -> bool:
    return request.url.path.endswith("/checks/large.pt")


def test_an_interrupted_body_resumes_from_its_offset_pinned_by_if_match(
    azurite_env: AzuriteServer, tmp_path: Path
) -> None:
    large = azurite_env.upload("checks/large.pt", bytes(range(256)) * 6144)  # 1.5 MiB: more than one chunk
    limit = (1 << 20) + 1000
    transport = InterruptOnce(limit=limit, cut=_is_blob_get)
    path = fetch(
        f"az://{AZ_CONTAINER}/checks/large.pt", cache_dir=tmp_path, transport=transport, options=NO_WAIT
    )
    assert path.unwrap().read_bytes() == large.data
    first, resumed = transport.gets(_is_blob_get)
    assert transport.cuts == 1 and "Range" not in first.headers
    assert 0 < range_start(resumed) <= limit
    assert resumed.headers["If-Match"] == large.etag


def test_an_account_key_never_appears_in_a_failure(azurite: AzuriteServer, tmp_path: Path) -> None:
    source = AzureSource(
        container=AZ_CONTAINER,
        blob="absent.pt",
        endpoint_url=azurite.endpoint,
        account=DEV_ACCOUNT,
        account_key=DEV_ACCOUNT_KEY,
    )
    result = fetch(source, cache_dir=tmp_path)
    assert isinstance(result, Failure)
    assert DEV_ACCOUNT_KEY not in result.failure().message and DEV_ACCOUNT_KEY not in repr(result.failure())
    assert DEV_ACCOUNT_KEY not in repr(source)
