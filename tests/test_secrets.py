"""Secrets never leak into failure messages, events, ``ckptflow`` log records, reprs or ``--json`` output.

Each test sends a recognisable secret (a bearer token, a SAS signature, an S3 secret key, a GCS token,
an Azure account key, a URL password) to a real server on loopback (the fault server, or moto), lets the
request fail or succeed, and searches everything a user or a log collector could see for it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from attrs import define, field
from hypothesis import given
from returns.result import Failure, Result

import ckptflow
from ckptflow.cli import main
from ckptflow.config.schema import AzureSource, CheckpointConfig, GcsSource, HttpSource
from ckptflow.errors import AccessDenied, InvalidConfig, NetworkError, NotFound
from ckptflow.events import Collector, collect
from ckptflow.fetch import fetch
from ckptflow.sources.retry import RetryPolicy
from ckptflow.testing import source_configs
from ckptflow.testing.strategies import SECRET_MARKER
from tests.fixtures.fault_server import FaultServer
from tests.fixtures.s3_server import AuthServer, free_port

TOKEN = "tok-7c1e55d0-SECRET-bearer"
SIG = "sig7f3a9b2c1dSECRETsig"
PASSWORD = "pw-91b2c3SECRET"
S3_SECRET = "s3key/9Qx2SECRET+Zk"
GCS_TOKEN = "ya29.gcs-SECRET-0042"
AZURE_KEY = base64.b64encode(b"azure-account-key-SECRET-bytes!!").decode()
ONCE = {"retry": RetryPolicy(attempts=2, base=0.01, cap=0.02)}


@define
class Seen:
    """Everything a fetch or load let a user or a log collector see."""

    caplog: pytest.LogCaptureFixture
    collector: Collector = field(factory=Collector)
    extra: list[str] = field(factory=list)

    def text(self, result: Result[Any, Any] | None = None) -> str:
        parts = [*self.extra, *(repr(e) for e in self.collector.events)]
        parts += [f"{r.getMessage()} {getattr(r, 'ckptflow_data', '')!r}" for r in self.caplog.records]
        if result is not None:
            parts.append(repr(result))
            if isinstance(result, Failure):
                parts += [result.failure().message, repr(result.failure())]
        return "\n".join(parts)

    def assert_hidden(self, result: Result[Any, Any] | None, *secrets: str) -> None:
        shown = self.text(result)
        for secret in secrets:
            assert secret not in shown, f"secret {secret!r} leaked into:\n{shown}"


@pytest.fixture
def seen(caplog: pytest.LogCaptureFixture) -> Iterator[Seen]:
    with caplog.at_level(logging.DEBUG, logger="ckptflow"), collect() as collector:
        yield Seen(caplog, collector)


def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), buffer)
    return buffer.getvalue()


def cli_json(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        main([*argv, "--json"])
    return out.getvalue()


# --- HTTP headers ----------------------------------------------------------------------------------


def test_a_rejected_bearer_token_appears_nowhere(http_server: FaultServer, tmp_path, seen):
    url = http_server.put("m.pt", checkpoint_bytes())
    http_server.required_headers = {"Authorization": "Bearer the-right-one"}
    config = HttpSource(url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    result = fetch(config, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result.failure(), AccessDenied)
    assert http_server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    seen.extra.append(repr(config))
    seen.assert_hidden(result, TOKEN)


def test_an_accepted_token_appears_nowhere_in_a_load_or_its_report(http_server: FaultServer, tmp_path, seen):
    url = http_server.put("m.pt", checkpoint_bytes())
    http_server.required_headers = {"Authorization": f"Bearer {TOKEN}"}
    config = HttpSource(url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    result = ckptflow.load(torch.nn.Linear(2, 2), config, cache_dir=tmp_path)
    report = result.unwrap()
    seen.extra += [repr(report), json.dumps([(e.name, dict(e.data)) for e in report.events], default=str)]
    seen.assert_hidden(result, TOKEN)


def test_a_token_sent_to_an_unreachable_server_appears_nowhere(tmp_path, seen):
    config = HttpSource(url=f"http://127.0.0.1:{free_port()}/m.pt", headers={"X-Api-Key": TOKEN})
    result = fetch(config, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result.failure(), NetworkError)
    seen.assert_hidden(result, TOKEN)


def test_a_config_with_a_token_and_a_mistake_reports_the_mistake_not_the_token(seen):
    block = {
        "source": {"type": "http", "url": "https://h/m.pt", "headers": {"Authorization": TOKEN}},
        "bogus": 1,
    }
    result = ckptflow.parse_config(block)
    assert isinstance(result.failure(), InvalidConfig) and "bogus" in result.failure().message
    seen.assert_hidden(result, TOKEN)


# --- URLs: SAS-style query signatures and userinfo passwords -----------------------------------------


def test_a_signed_url_that_fails_shows_no_signature(http_server: FaultServer, tmp_path, seen):
    url = http_server.url(f"absent.pt?sv=2024-01-01&se=2099-01-01&sig={SIG}")
    result = fetch(url, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result.failure(), NotFound)
    seen.extra.append(cli_json("fetch", url, "--cache-dir", str(tmp_path)))
    seen.assert_hidden(result, SIG)


def test_a_signed_url_that_succeeds_logs_and_records_no_signature(http_server: FaultServer, tmp_path, seen):
    url = http_server.put("m.pt", checkpoint_bytes()) + f"?sv=2024-01-01&sig={SIG}"
    result = fetch(url, cache_dir=tmp_path)
    assert result.unwrap().is_file()
    seen.assert_hidden(result, SIG)


def test_a_url_password_that_is_refused_appears_nowhere(http_server: FaultServer, tmp_path, seen):
    http_server.put("m.pt", checkpoint_bytes())
    http_server.required_headers = {"Authorization": "Bearer something-else"}
    url = f"http://reader:{PASSWORD}@127.0.0.1:{http_server.port}/m.pt"
    result = fetch(url, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result.failure(), AccessDenied)
    seen.extra.append(cli_json("fetch", url, "--cache-dir", str(tmp_path)))
    seen.assert_hidden(result, PASSWORD)


def test_a_url_password_that_is_accepted_appears_in_no_event_or_log(http_server: FaultServer, tmp_path, seen):
    url = http_server.put("m.pt", checkpoint_bytes()).replace("http://", f"http://reader:{PASSWORD}@")
    result = ckptflow.load(torch.nn.Linear(2, 2), url, cache_dir=tmp_path)
    seen.extra += [repr(e) for e in result.unwrap().events]
    seen.assert_hidden(result.map(lambda r: r.events), PASSWORD)


SECRET_URLS = [f"http://reader:{PASSWORD}@{{host}}/m.pt", f"http://{{host}}/m.pt?sv=2024&sig={SIG}"]


@pytest.mark.parametrize("template", SECRET_URLS, ids=["userinfo", "sas"])
def test_the_load_report_names_its_source_without_secrets(http_server: FaultServer, tmp_path, template):
    http_server.put("m.pt", checkpoint_bytes())
    url = template.format(host=f"127.0.0.1:{http_server.port}")
    report = ckptflow.load(torch.nn.Linear(2, 2), url, cache_dir=tmp_path).unwrap()
    assert PASSWORD not in repr(report) and SIG not in repr(report)


@pytest.mark.parametrize("command", ["fetch", "inspect"])
@pytest.mark.parametrize("template", SECRET_URLS, ids=["userinfo", "sas"])
def test_cli_json_names_the_ref_without_secrets(http_server: FaultServer, tmp_path, template, command):
    http_server.put("m.pt", checkpoint_bytes())
    out = cli_json(
        command, template.format(host=f"127.0.0.1:{http_server.port}"), "--cache-dir", str(tmp_path)
    )
    assert "error" not in json.loads(out)
    assert PASSWORD not in out and SIG not in out


# --- cloud credentials -----------------------------------------------------------------------------


def test_a_rejected_s3_secret_key_appears_nowhere(s3_auth_server: AuthServer, tmp_path, monkeypatch, seen):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    uri = f"s3://{s3_auth_server.bucket}/{s3_auth_server.key}"
    options = {"s3_endpoint_url": s3_auth_server.endpoint, **ONCE}
    result = fetch(uri, cache_dir=tmp_path, options=options)
    assert isinstance(result.failure(), AccessDenied)
    seen.extra.append(cli_json("fetch", uri, "--cache-dir", str(tmp_path)))
    seen.assert_hidden(result, S3_SECRET)


def test_credentials_written_into_an_s3_uri_are_refused_without_being_repeated(tmp_path, seen):
    result = fetch(f"s3://AKIAEXAMPLE:{S3_SECRET.replace('/', '')}@bucket/key.pt", cache_dir=tmp_path)
    assert isinstance(result.failure(), InvalidConfig)
    seen.assert_hidden(result, S3_SECRET.replace("/", ""))


def test_an_s3_secret_key_with_a_slash_written_into_a_uri_is_not_repeated(tmp_path, seen):
    result = fetch(f"s3://AKIAEXAMPLE:{S3_SECRET}@bucket/key.pt", cache_dir=tmp_path)
    assert isinstance(result.failure(), InvalidConfig)
    seen.assert_hidden(result, S3_SECRET)


def test_a_rejected_gcs_token_appears_nowhere(http_server: FaultServer, tmp_path, seen):
    http_server.required_headers = {"Authorization": "Bearer the-right-one"}
    config = GcsSource(bucket="ckpt-bucket", blob="m.pt", token=GCS_TOKEN, endpoint_url=http_server.url(""))
    result = fetch(config, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result.failure(), AccessDenied)
    assert any(GCS_TOKEN in r.headers.get("authorization", "") for r in http_server.requests)
    seen.extra.append(repr(config))
    seen.assert_hidden(result, GCS_TOKEN)


def _azure(server: FaultServer, **credential: str) -> AzureSource:
    return AzureSource(
        container="models",
        blob="m.pt",
        account="devstoreaccount1",
        endpoint_url=server.url("devstoreaccount1"),
        **credential,
    )


def test_a_rejected_azure_account_key_and_its_signatures_appear_nowhere(
    http_server: FaultServer, tmp_path, seen
):
    http_server.required_headers = {"Authorization": "SharedKey devstoreaccount1:expected"}
    config = _azure(http_server, account_key=AZURE_KEY)
    result = fetch(config, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result.failure(), AccessDenied)
    signatures = [r.headers["authorization"].rsplit(":", 1)[-1] for r in http_server.requests]
    assert signatures and all(signatures)
    seen.extra.append(repr(config))
    seen.assert_hidden(result, AZURE_KEY, *signatures)


def test_a_rejected_azure_sas_appears_nowhere(http_server: FaultServer, tmp_path, seen):
    http_server.required_headers = {"x-required": "yes"}
    config = _azure(http_server, sas_token=f"sv=2024-01-01&sp=r&sig={SIG}")
    result = fetch(config, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result.failure(), AccessDenied)
    assert SIG in http_server.requests[0].path
    seen.extra.append(repr(config))
    seen.assert_hidden(result, SIG)


def test_an_azure_connection_string_appears_in_no_repr_or_failure(tmp_path, seen):
    connection = f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={AZURE_KEY};BlobEndpoint=nope"
    config = AzureSource(container="models", blob="m.pt", connection_string=connection)
    result = fetch(config, cache_dir=tmp_path, options=ONCE)
    assert isinstance(result, Failure)
    seen.extra += [repr(config), repr(CheckpointConfig(source=config))]
    seen.assert_hidden(result, AZURE_KEY)


# --- reprs of every config -------------------------------------------------------------------------


@given(source_configs())
def test_no_source_config_shows_its_credentials_in_its_repr(config):
    assert SECRET_MARKER not in repr(config)
    assert SECRET_MARKER not in repr(CheckpointConfig(source=config))


def test_an_offline_miss_of_a_signed_url_shows_no_signature(tmp_path: Path, seen):
    result = fetch(f"https://example.invalid/m.pt?sig={SIG}", cache_dir=tmp_path, offline=True)
    assert isinstance(result.failure(), NotFound)
    seen.assert_hidden(result, SIG)
