"""SharedKey signing and connection strings: pure functions, checked against reference vectors."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from ckptflow.errors import InvalidConfig
from ckptflow.sources.azure_auth import (
    DEV_ACCOUNT,
    DEV_ACCOUNT_KEY,
    DEV_BLOB_ENDPOINT,
    ConnectionInfo,
    SharedKey,
    canonicalized_headers,
    canonicalized_resource,
    parse_connection_string,
    shared_key,
    sign_request,
    string_to_sign,
)

NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
DEV_KEY = SharedKey(DEV_ACCOUNT, base64.b64decode(DEV_ACCOUNT_KEY))

# Reference signatures computed once with the Azure Storage SDK's own SharedKey policy
# (azure-storage-blob 12.x) for exactly these requests.
RANGED_GET_AUTH = "SharedKey devstoreaccount1:zjTMUdqBVu9SdInPGWfTWGIiozwnnKjflIajez67n4Q="
HEAD_WITH_QUERY_AUTH = "SharedKey myaccount:TxJPvIBNTJ5i69CZvKoF0H9RL7Sog49kkbwW7hgVFzM="


def _dev_key() -> SharedKey:
    return shared_key(DEV_ACCOUNT, DEV_ACCOUNT_KEY).unwrap()


def test_signature_of_ranged_get_matches_reference_vector() -> None:
    headers = {"x-ms-version": "2021-08-06", "x-ms-range": "bytes=100-199", "If-Match": '"0x8DC0000000000AB"'}
    url = "http://127.0.0.1:10000/devstoreaccount1/models/ckpt/model.pt"
    signed = sign_request("GET", url, headers, _dev_key(), NOW)
    assert signed["Authorization"] == RANGED_GET_AUTH


def test_signature_of_head_with_query_and_zero_length_matches_reference_vector() -> None:
    headers = {"x-ms-version": "2021-08-06", "x-ms-client-request-id": "abc", "Content-Length": "0"}
    url = "https://myaccount.blob.core.windows.net/models/ckpt%20a.pt?comp=metadata&timeout=30"
    key = shared_key("myaccount", DEV_ACCOUNT_KEY).unwrap()
    assert sign_request("HEAD", url, headers, key, NOW)["Authorization"] == HEAD_WITH_QUERY_AUTH


def test_string_to_sign_follows_the_documented_layout() -> None:
    headers = {
        "x-ms-version": "2021-08-06",
        "x-ms-date": "Tue, 02 Jan 2024 03:04:05 GMT",
        "Range": "bytes=0-9",
        "If-Match": '"etag"',
        "Content-Type": "application/octet-stream",
    }
    expected = (
        "GET\n"  # verb
        "\n"  # Content-Encoding
        "\n"  # Content-Language
        "\n"  # Content-Length
        "\n"  # Content-MD5
        "application/octet-stream\n"  # Content-Type
        "\n"  # Date
        "\n"  # If-Modified-Since
        '"etag"\n'  # If-Match
        "\n"  # If-None-Match
        "\n"  # If-Unmodified-Since
        "bytes=0-9\n"  # Range
        "x-ms-date:Tue, 02 Jan 2024 03:04:05 GMT\n"
        "x-ms-version:2021-08-06\n"
        "/acct/c/b.pt"
    )
    assert string_to_sign("get", "https://acct.blob.core.windows.net/c/b.pt", headers, "acct") == expected


def test_content_length_zero_signs_as_empty() -> None:
    url = "https://a.blob.core.windows.net/c/b"
    assert string_to_sign("HEAD", url, {"Content-Length": "0"}, "a") == string_to_sign("HEAD", url, {}, "a")


def test_canonicalized_headers_keep_only_x_ms_lowercased_and_sorted() -> None:
    headers = {"X-MS-Version": "v", "Accept": "*/*", "x-ms-date": "  d  ", "x-ms-blob-type": "BlockBlob"}
    assert canonicalized_headers(headers) == "x-ms-blob-type:BlockBlob\nx-ms-date:d\nx-ms-version:v\n"


def test_canonicalized_resource_sorts_query_names_and_joins_repeated_values() -> None:
    url = "http://127.0.0.1:10000/devstoreaccount1/c?restype=container&comp=list&Include=b&include=a"
    assert canonicalized_resource("devstoreaccount1", url) == (
        "/devstoreaccount1/devstoreaccount1/c\ncomp:list\ninclude:a,b\nrestype:container"
    )


def test_canonicalized_resource_decodes_query_values_but_keeps_the_encoded_path() -> None:
    url = "https://a.blob.core.windows.net/c/my%20blob?prefix=x%2Fy"
    assert canonicalized_resource("a", url) == "/a/c/my%20blob\nprefix:x/y"


def test_sign_request_adds_date_from_the_given_clock() -> None:
    signed = sign_request("GET", "https://a.blob.core.windows.net/c/b", {}, _dev_key(), NOW)
    assert signed["x-ms-date"] == "Tue, 02 Jan 2024 03:04:05 GMT"


def test_sign_request_replaces_a_stale_date_and_authorization() -> None:
    stale = {"X-MS-Date": "Mon, 01 Jan 2024 00:00:00 GMT", "authorization": "Bearer old"}
    signed = sign_request("GET", "https://a.blob.core.windows.net/c/b", stale, _dev_key(), NOW)
    assert {k.lower() for k in signed} == {"x-ms-date", "authorization"}
    assert signed["Authorization"].startswith("SharedKey devstoreaccount1:")


def test_signature_changes_with_the_clock() -> None:
    url = "https://a.blob.core.windows.net/c/b"
    first = sign_request("GET", url, {}, _dev_key(), NOW)["Authorization"]
    later = sign_request("GET", url, {}, _dev_key(), NOW + timedelta(seconds=1))["Authorization"]
    assert first != later


header_values = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)
header_maps = st.dictionaries(
    st.sampled_from(
        ["x-ms-version", "x-ms-range", "If-Match", "Range", "Content-Type", "x-ms-client-request-id"]
    ),
    header_values,
    max_size=6,
)


@given(header_maps)
def test_sign_request_leaves_its_input_headers_unchanged(headers: dict[str, str]) -> None:
    before = dict(headers)
    sign_request("GET", "https://a.blob.core.windows.net/c/b", headers, _dev_key(), NOW)
    assert headers == before


@given(header_maps)
def test_signing_is_deterministic(headers: dict[str, str]) -> None:
    url = "https://a.blob.core.windows.net/c/b?comp=x"
    assert sign_request("GET", url, headers, _dev_key(), NOW) == sign_request(
        "GET", url, headers, _dev_key(), NOW
    )


@given(header_maps)
def test_header_name_case_does_not_change_the_string_to_sign(headers: dict[str, str]) -> None:
    url = "https://a.blob.core.windows.net/c/b"
    upper = {name.upper(): value for name, value in headers.items()}
    assert string_to_sign("GET", url, upper, "a") == string_to_sign("GET", url, headers, "a")


def test_shared_key_decodes_a_base64_key() -> None:
    assert shared_key(DEV_ACCOUNT, DEV_ACCOUNT_KEY) == Success(DEV_KEY)


def test_shared_key_rejects_a_key_that_is_not_base64_without_echoing_it() -> None:
    result = shared_key("acct", "not base64 secret!!")
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, InvalidConfig)
    assert "not valid base64" in error.message
    assert "secret" not in error.message


def test_shared_key_repr_hides_the_key() -> None:
    assert "Eby8" not in repr(_dev_key()) and repr(_dev_key()) == "SharedKey(account='devstoreaccount1')"


def test_development_storage_means_the_well_known_account_on_port_10000() -> None:
    assert parse_connection_string("UseDevelopmentStorage=true") == Success(
        ConnectionInfo(blob_endpoint=DEV_BLOB_ENDPOINT, account=DEV_ACCOUNT, account_key=DEV_ACCOUNT_KEY)
    )


def test_development_storage_honours_an_explicit_blob_endpoint() -> None:
    text = "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:41234/devstoreaccount1"
    info = parse_connection_string(text).unwrap()
    assert (info.blob_endpoint, info.account) == ("http://127.0.0.1:41234/devstoreaccount1", DEV_ACCOUNT)


def test_account_key_connection_string_derives_the_blob_endpoint() -> None:
    text = (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn"
    )
    assert parse_connection_string(text) == Success(
        ConnectionInfo(
            blob_endpoint="https://acct.blob.core.chinacloudapi.cn", account="acct", account_key="a2V5"
        )
    )


def test_connection_string_names_are_case_insensitive_and_blob_endpoint_wins() -> None:
    text = "accountname=acct;ACCOUNTKEY=a2V5;blobendpoint=http://127.0.0.1:9/acct/;"
    info = parse_connection_string(text).unwrap()
    assert (info.blob_endpoint, info.account, info.account_key) == ("http://127.0.0.1:9/acct", "acct", "a2V5")


def test_connection_string_sas_loses_its_leading_question_mark() -> None:
    text = "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=?sv=2021&sig=abc%3D"
    info = parse_connection_string(text).unwrap()
    assert info.sas_token == "sv=2021&sig=abc%3D"
    assert info.account is None


def test_connection_string_without_account_or_endpoint_is_invalid() -> None:
    result = parse_connection_string("AccountKey=a2V5")
    assert isinstance(result, Failure)
    assert "AccountName or BlobEndpoint" in result.failure().message


def test_connection_string_with_key_but_no_account_is_invalid() -> None:
    result = parse_connection_string("BlobEndpoint=http://127.0.0.1:1/x;AccountKey=a2V5")
    assert isinstance(result, Failure)
    assert "without AccountName" in result.failure().message


def test_malformed_connection_string_failure_does_not_echo_its_content() -> None:
    result = parse_connection_string("AccountName=acct;supersecretvalue")
    assert isinstance(result, Failure)
    assert "supersecretvalue" not in result.failure().message


def test_connection_info_repr_hides_key_and_sas() -> None:
    info = ConnectionInfo(blob_endpoint="http://e", account="a", account_key="KEYVALUE", sas_token="SASVALUE")
    assert "KEYVALUE" not in repr(info) and "SASVALUE" not in repr(info)
