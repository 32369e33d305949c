"""Specification of ``ckptflow.config.uris``: one pure parser per scheme, and the table that picks it."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Success

from ckptflow.config.converter import parse_config
from ckptflow.config.schema import (
    AzureSource,
    CheckpointConfig,
    GcsSource,
    HttpSource,
    LocalSource,
    MlflowSource,
    S3Source,
)
from ckptflow.config.uris import (
    URI_SCHEMES,
    azure_from_uri,
    did_you_mean,
    gcs_from_uri,
    http_from_uri,
    is_azure_blob_url,
    local_from_uri,
    s3_from_uri,
    scheme_of,
    shown_uri,
    source_from_uri,
    source_type_of,
    without_userinfo,
)
from ckptflow.errors import InvalidConfig
from ckptflow.sources.registry import get_source
from tests.config.test_converter import problems

# --- the scheme table -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "tag"),
    [
        ("ckpt/last.pt", "local"),
        ("C:/ckpt/last.pt", "local"),
        ("file:///ckpt/last.pt", "local"),
        ("https://host/last.pt", "http"),
        ("S3://bucket/key", "s3"),
        ("gs://bucket/object", "gcs"),
        ("az://container/blob", "azure"),
        ("https://acct.blob.core.windows.net/c/b.pt", "azure"),
        ("http://acct.blob.core.chinacloudapi.cn/c/b.pt", "azure"),
        ("runs:/abc/model.pt", "mlflow"),
        ("models:/net/3", "mlflow"),
        ("ftp://host/last.pt", None),
    ],
)
def test_source_type_of_names_the_source_a_uri_belongs_to(uri: str, tag: str | None) -> None:
    assert source_type_of(uri) == tag


def test_every_scheme_maps_to_a_source_type_the_config_knows() -> None:
    assert set(URI_SCHEMES.values()) == {"local", "http", "s3", "gcs", "azure", "mlflow"}


def test_scheme_of_is_lower_case_and_ignores_drive_letters() -> None:
    assert (scheme_of("GS://b/o"), scheme_of("d:\\ckpt.pt"), scheme_of("ckpt.pt")) == ("gs", None, None)


def test_a_word_before_a_colon_is_a_scheme_here_as_in_the_registry() -> None:
    assert source_type_of("weights:v2.pt") is None
    assert problems(source_from_uri("weights:v2.pt"))[0].startswith(
        "'weights:v2.pt': unknown scheme 'weights'"
    )


def test_an_unknown_scheme_suggests_the_closest_known_one() -> None:
    (problem,) = problems(source_from_uri("htps://host/x.pt"))
    assert problem.endswith("→ did you mean 'https'?")


def test_did_you_mean_is_empty_when_nothing_is_close() -> None:
    assert did_you_mean("zzzz", ["s3", "gs"]) == ""


def test_an_empty_reference_is_invalid() -> None:
    assert problems(source_from_uri("")) == ("empty source; give a path or a URI",)


# --- one parser per scheme: the config and the sources agree ----------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "relative/last.ckpt",
        "file:///data/a%20b.ckpt",
        "file://fileserver/share/x.pt",
        "https://host/x.pt?v=1",
        "https:///x.pt",
        "s3://models/ckpt.pt?versionId=3/L4kq+rmSpX",
        "s3://my models/ckpt.pt",
        "s3://models/ckpt.pt?partNumber=1",
        "gs://bucket/obj.pt#1712",
        "gs://Bad_Bucket!/x",
        "az://container/blob.pt",
        "az://models",
        "https://acct.blob.core.windows.net/c/b.pt?sv=1&sig=abc",
        "runs:/0a1b/checkpoints/last.ckpt",
        "runs:/abc/../other/last.ckpt",
        "models:/resnet@champion",
    ],
)
def test_the_source_resolving_a_uri_parses_it_exactly_as_the_config_does(uri: str) -> None:
    tag = source_type_of(uri)
    assert tag is not None
    assert get_source(tag).unwrap().from_uri(uri) == source_from_uri(uri)


def test_a_plus_in_an_s3_version_id_stays_a_plus_in_a_config() -> None:
    parsed = parse_config({"source": "s3://models/ckpt.pt?versionId=3/L4kq+rmSpX"})
    expected = S3Source(bucket="models", key="ckpt.pt", version_id="3/L4kq+rmSpX")
    assert parsed == Success(CheckpointConfig(source=expected))


def test_a_config_s3_uri_gets_the_s3_bucket_validation() -> None:
    (problem,) = problems(parse_config({"source": "s3://my models/ckpt.pt"}))
    assert "'my models' is not a valid bucket name" in problem


def test_a_config_s3_uri_reports_every_problem_at_once() -> None:
    assert len(problems(source_from_uri("s3://models/?colour=blue"))) == 2


def test_a_config_gs_uri_gets_the_gcs_bucket_validation() -> None:
    (problem,) = problems(source_from_uri("gs://Bad_Bucket!/x"))
    assert "is not a valid bucket name" in problem


def test_a_config_https_uri_needs_a_host() -> None:
    assert problems(source_from_uri("https:///x.pt")) == ("not an http(s) URL with a host: https:///x.pt",)


# --- Azure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:10000/devstoreaccount1/models/model.pt",
        "https://acct.blob.example.com/c/b.pt",
        "https://files.example.com/acct.blob.core.windows.net/b.pt",
        "az://container/blob",
    ],
)
def test_only_http_urls_on_a_blob_core_host_are_blob_service_urls(url: str) -> None:
    assert not is_azure_blob_url(url)


def test_an_az_name_is_taken_literally_with_its_hash() -> None:
    assert azure_from_uri("az://models/best#2.pt") == Success(
        AzureSource(container="models", blob="best#2.pt")
    )


def test_an_az_uri_may_carry_a_sas_token() -> None:
    config = azure_from_uri("az://models/m.pt?sv=2021-08-06&sp=r&sig=abc%3D").unwrap()
    assert (config.blob, config.sas_token) == ("m.pt", "sv=2021-08-06&sp=r&sig=abc%3D")


def test_an_az_uri_with_a_query_that_is_not_a_sas_is_invalid() -> None:
    (problem,) = problems(azure_from_uri("az://models/m.pt?snapshot=1"))
    assert "the only query a blob URL may carry is a SAS token" in problem


@pytest.mark.parametrize(
    "uri", ["az://key:S3CR3TKEY@models/m.pt", "https://key:S3CR3TKEY@acct.blob.core.windows.net/c/b.pt"]
)
def test_credentials_in_a_blob_uri_are_refused_without_being_shown(uri: str) -> None:
    (problem,) = problems(source_from_uri(uri))
    assert "credentials do not belong" in problem and "S3CR3TKEY" not in problem


# --- local paths --------------------------------------------------------------------------------------


def test_a_file_uri_is_percent_decoded_once() -> None:
    assert local_from_uri("file:///data/a%2520b.pt") == Success(LocalSource(path="/data/a%20b.pt"))


def test_a_file_uri_without_a_path_is_invalid() -> None:
    assert problems(local_from_uri("file://")) == ("'file://' has no path",)


# --- what messages show -------------------------------------------------------------------------------


def test_shown_uri_drops_userinfo_query_and_fragment() -> None:
    assert shown_uri("https://u:pw@host/p/x.pt?sig=abc#frag") == "https://host/p/x.pt"


def test_without_userinfo_removes_a_password_containing_an_at_sign() -> None:
    assert without_userinfo("failed for s3://AKIA:pa@ss@bucket/key") == "failed for s3://bucket/key"


def test_without_userinfo_keeps_a_query_that_holds_an_at_sign() -> None:
    assert without_userinfo("https://host/p?mail=a@b") == "https://host/p?mail=a@b"


# --- laws -----------------------------------------------------------------------------------------------

uri_text = st.text(string.printable, max_size=40) | st.sampled_from(
    ["s3://", "gs://", "az://", "file://", "https://", "runs:/", "models:/", "http://[::1"]
).flatmap(lambda prefix: st.text(string.printable, max_size=30).map(lambda rest: prefix + rest))


@given(uri_text)
def test_any_text_is_a_source_config_or_an_invalid_config_never_an_exception(uri: str) -> None:
    result = source_from_uri(uri)
    assert isinstance(result, Success) or isinstance(result.failure(), InvalidConfig)


@given(uri_text)
def test_parsing_is_deterministic(uri: str) -> None:
    assert source_from_uri(uri) == source_from_uri(uri)


@given(
    bucket=st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True),
    blob=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
        lambda b: not b.endswith("/") and not re.search(r"#[0-9]+$", b)
    ),
    generation=st.none() | st.integers(min_value=1, max_value=10**16).map(str),
)
def test_gs_uri_round_trips_bucket_object_and_generation(
    bucket: str, blob: str, generation: str | None
) -> None:
    uri = f"gs://{bucket}/{blob}" + (f"#{generation}" if generation else "")
    assert gcs_from_uri(uri) == Success(GcsSource(bucket=bucket, blob=blob, generation=generation))


@given(st.from_regex(r"https?://[a-z]{1,10}\.example/[a-z0-9/]{0,20}", fullmatch=True))
def test_an_http_url_is_kept_whole(url: str) -> None:
    assert http_from_uri(url) == Success(HttpSource(url=url))


@given(
    run_id=st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True),
    path=st.from_regex(r"[a-z0-9_]{1,10}(/[a-z0-9_.]{1,10}){0,3}", fullmatch=True),
)
def test_a_runs_uri_round_trips_run_id_and_artifact_path(run_id: str, path: str) -> None:
    assert source_from_uri(f"runs:/{run_id}/{path}") == Success(
        MlflowSource(run_id=run_id, artifact_path=path)
    )


@given(st.text(st.characters(codec="utf-8"), max_size=30))
def test_s3_uri_parsing_never_raises(rest: str) -> None:
    result = s3_from_uri(f"s3://{rest}")
    assert isinstance(result, Success) or isinstance(result.failure(), InvalidConfig)
