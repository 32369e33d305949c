"""Specification of the MLflow source: URI parsing, pure decisions, and fetches against a real server."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    PERMISSION_DENIED,
    RESOURCE_DOES_NOT_EXIST,
)
from returns.result import Failure, Result, Success

from ckptflow.cache import lookup, open_cache
from ckptflow.config.schema import MlflowSource
from ckptflow.errors import AccessDenied, ChecksumMismatch, Error, InvalidConfig, NetworkError, NotFound
from ckptflow.fetch import fetch as fetch_any
from ckptflow.sources.base import FetchSettings
from ckptflow.sources.mlflow import (
    DEFAULT_MAX_RETRIES,
    SOURCE,
    ModelRef,
    RunArtifact,
    choose_checkpoint,
    fetch,
    from_uri,
    http_bounds,
    model_identity,
    run_identity,
    target_of,
    tracking_uri_of,
    translate_error,
)
from tests.fixtures.gcs_server import engine_events
from tests.fixtures.mlflow_server import MlflowRun, checkpoint_bytes
from tests.fixtures.processes import free_port

HTTP_ENV = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


def failure(result: Result[Any, Error]) -> Error:
    assert isinstance(result, Failure), f"expected a failure, got {result!r}"
    error: Error = result.failure()
    return error


def settings_for(tmp_path: Path, **kwargs: Any) -> FetchSettings:
    return FetchSettings(cache_dir=tmp_path / "cache", **kwargs)


def dead_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient MLflow settings, and an empty working directory that must stay empty."""
    for name in (*HTTP_ENV, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CKPTFLOW_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


# --- URIs -------------------------------------------------------------------------------------------


def test_runs_uri_names_a_run_artifact() -> None:
    assert from_uri("runs:/0a1b2c/checkpoints/last.ckpt") == Success(
        MlflowSource(run_id="0a1b2c", artifact_path="checkpoints/last.ckpt")
    )


def test_models_uri_keeps_the_model_reference() -> None:
    assert from_uri("models:/resnet/3") == Success(MlflowSource(model_uri="models:/resnet/3"))
    assert from_uri("models:/resnet@champion") == Success(MlflowSource(model_uri="models:/resnet@champion"))


@pytest.mark.parametrize(
    "uri",
    [
        "runs:/abc/../other-run/last.ckpt",
        "runs:/abc//etc/passwd",
        "runs:/abc/ckpt\x00.pt",
        "runs:/abc/ckpt\\last.ckpt",
        "runs:/abc",
        "models:/resnet",
    ],
)
def test_unsafe_or_incomplete_uris_are_invalid_config(uri: str) -> None:
    error = failure(from_uri(uri))
    assert isinstance(error, InvalidConfig)
    assert error.source == uri


def test_target_of_a_model_uri_given_as_runs_is_the_run_artifact() -> None:
    assert target_of(MlflowSource(model_uri="runs:/abc/dir/x.pt")) == RunArtifact("abc", "dir/x.pt")
    assert target_of(MlflowSource(model_uri="models:/net@best")) == ModelRef("net", "best")
    assert target_of(MlflowSource(run_id="abc", artifact_path="single/")) == RunArtifact("abc", "single")


def test_source_spec_routes_runs_and_models_schemes() -> None:
    assert (SOURCE.name, SOURCE.schemes, SOURCE.config_type) == ("mlflow", ("runs", "models"), MlflowSource)


# --- pure decisions ---------------------------------------------------------------------------------


def test_run_identity_is_immutable_name_of_the_artifact() -> None:
    assert run_identity("abc", "single/last.ckpt") == "mlflow:runs:/abc/single/last.ckpt"
    assert RunArtifact("abc", "x.pt").identity == "mlflow:runs:/abc/x.pt"


def test_model_identity_names_the_server_without_credentials() -> None:
    identity = model_identity("https://user:hunter2@mlflow.example.com/", "net", "champion")
    assert "hunter2" not in identity and "user" not in identity
    assert identity.endswith("/models:/net/champion") and "mlflow.example.com" in identity


def test_directory_with_one_checkpoint_resolves_to_it() -> None:
    assert choose_checkpoint("runs:/a/dir", ["notes.txt", "last.ckpt", "config.yaml"]) == Success("last.ckpt")


@given(st.sampled_from([".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".CKPT"]))
def test_every_checkpoint_extension_is_recognised(suffix: str) -> None:
    assert choose_checkpoint("d", ["README.md", f"model{suffix}"]) == Success(f"model{suffix}")


def test_directory_with_several_checkpoints_lists_them() -> None:
    error = failure(choose_checkpoint("runs:/a/dir", ["b.pt", "a.ckpt", "x.txt"]))
    assert isinstance(error, InvalidConfig)
    assert error.problems == (
        "artifact_path: runs:/a/dir holds several checkpoints (a.ckpt, b.pt); name one",
    )


def test_directory_without_checkpoint_is_not_found_listing_its_files() -> None:
    error = failure(choose_checkpoint("runs:/a/dir", ["README.md", "config.yaml"]))
    assert isinstance(error, NotFound)
    assert "it holds README.md, config.yaml" in error.message


def test_tracking_uri_comes_from_config_before_environment() -> None:
    env = {"MLFLOW_TRACKING_URI": "http://env:5000"}
    assert tracking_uri_of(
        MlflowSource(tracking_uri="http://cfg:5000", run_id="a", artifact_path="b"), env
    ) == Success("http://cfg:5000")
    assert tracking_uri_of(MlflowSource(run_id="a", artifact_path="b"), env) == Success("http://env:5000")


def test_missing_tracking_uri_is_invalid_config() -> None:
    error = failure(tracking_uri_of(MlflowSource(run_id="a", artifact_path="b"), {}))
    assert isinstance(error, InvalidConfig)
    assert "MLFLOW_TRACKING_URI" in error.message


def test_http_bounds_limit_retries_and_use_the_fetch_timeout(tmp_path: Path) -> None:
    bounds = http_bounds(settings_for(tmp_path, timeout=7.5))
    assert bounds["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(DEFAULT_MAX_RETRIES)
    assert bounds["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "8"
    assert (
        http_bounds(settings_for(tmp_path, options={"mlflow_max_retries": 0}))[
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
        ]
        == "0"
    )


def test_resource_does_not_exist_translates_to_not_found() -> None:
    exc = MlflowException("Run with id=abc not found", error_code=RESOURCE_DOES_NOT_EXIST)
    error = translate_error(exc, "MLflow run abc", attempts=3)
    assert isinstance(error, NotFound) and error.what == "MLflow run abc"


def test_unknown_alias_translates_to_not_found() -> None:
    exc = MlflowException("Registered model alias best not found.", error_code=INVALID_PARAMETER_VALUE)
    assert isinstance(translate_error(exc, "models:/m/best", attempts=1), NotFound)


def test_permission_denied_translates_to_access_denied() -> None:
    exc = MlflowException("no", error_code=PERMISSION_DENIED)
    assert isinstance(translate_error(exc, "run abc", attempts=1), AccessDenied)


@pytest.mark.parametrize(("status", "kind"), [(401, AccessDenied), (403, AccessDenied), (404, NotFound)])
def test_artifact_http_errors_translate_by_status(status: int, kind: type) -> None:
    response = requests.Response()
    response.status_code = status
    exc = requests.HTTPError(
        f"{status} Client Error for url: http://h/api/2.0/mlflow-artifacts/x", response=response
    )
    assert isinstance(translate_error(exc, "runs:/abc/x.pt", attempts=3), kind)


def test_connection_failure_translates_to_network_error_with_attempts_and_no_secrets() -> None:
    exc = MlflowException(
        "API request to http://bob:hunter2@host/api?token=abc123 failed", error_code=INTERNAL_ERROR
    )
    exc.__context__ = requests.ConnectionError("refused")
    error = translate_error(exc, "run abc", attempts=3, secrets=("abc123",))
    assert isinstance(error, NetworkError) and error.attempts == 3
    assert "hunter2" not in error.message and "abc123" not in error.message


# --- fetching from a real server --------------------------------------------------------------------


def run_source(run: MlflowRun, path: str, tracking_uri: str | None = None) -> MlflowSource:
    return MlflowSource(tracking_uri=tracking_uri or run.tracking_uri, run_id=run.run_id, artifact_path=path)


def model_source(run: MlflowRun, uri: str, tracking_uri: str | None = None) -> MlflowSource:
    return MlflowSource(tracking_uri=tracking_uri or run.tracking_uri, model_uri=uri)


def fetched_bytes(result: Result[Path, Error]) -> bytes:
    assert isinstance(result, Success), result
    return result.unwrap().read_bytes()


def test_fetch_downloads_a_run_file_into_the_cache(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    result = fetch(run_source(mlflow_run, mlflow_run.file), settings_for(tmp_path))
    assert fetched_bytes(result) == mlflow_run.file_bytes
    path = result.unwrap()
    assert path.parent == tmp_path / "cache" / "blobs" / "sha256"


def test_second_fetch_is_a_cache_hit_without_the_server(
    mlflow_run: MlflowRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = fetch(run_source(mlflow_run, mlflow_run.file), settings_for(tmp_path))
    caplog.set_level(logging.INFO, logger="ckptflow")
    caplog.clear()
    dead = run_source(mlflow_run, mlflow_run.file, tracking_uri=dead_uri())
    second = fetch(dead, settings_for(tmp_path, options={"mlflow_max_retries": 0}))
    assert second == first
    assert engine_events(caplog) == ["cache.hit"]


def test_fetch_goes_through_the_registry_with_the_tracking_uri_from_the_environment(
    mlflow_run: MlflowRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_run.tracking_uri)
    result = fetch_any(mlflow_run.uri(mlflow_run.file), cache_dir=tmp_path / "cache")
    assert fetched_bytes(result) == mlflow_run.file_bytes


def test_directory_artifact_resolves_to_its_single_checkpoint(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    result = fetch(run_source(mlflow_run, mlflow_run.single_dir), settings_for(tmp_path))
    assert fetched_bytes(result) == mlflow_run.single_bytes
    cache = open_cache(tmp_path / "cache").unwrap()
    resolved = run_identity(mlflow_run.run_id, mlflow_run.single_checkpoint)
    assert lookup(cache, resolved, mlflow_run.run_id) == result.unwrap()


def test_directory_with_two_checkpoints_fails_listing_both(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    error = failure(fetch(run_source(mlflow_run, mlflow_run.ambiguous_dir), settings_for(tmp_path)))
    assert isinstance(error, InvalidConfig)
    assert "epoch=1.ckpt, epoch=2.ckpt" in error.message


def test_directory_without_a_checkpoint_is_not_found_listing_its_files(
    mlflow_run: MlflowRun, tmp_path: Path
) -> None:
    error = failure(fetch(run_source(mlflow_run, mlflow_run.empty_dir), settings_for(tmp_path)))
    assert isinstance(error, NotFound)
    assert "README.md" in error.message


def test_unknown_artifact_is_not_found_listing_what_the_run_holds(
    mlflow_run: MlflowRun, tmp_path: Path
) -> None:
    error = failure(fetch(run_source(mlflow_run, "modle.ckpt"), settings_for(tmp_path)))
    assert isinstance(error, NotFound)
    assert error.what == f"artifact modle.ckpt in MLflow run {mlflow_run.run_id}"
    assert "model.ckpt" in error.message and "single/" in error.message


def test_unknown_run_is_not_found(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    source = MlflowSource(tracking_uri=mlflow_run.tracking_uri, run_id="f" * 32, artifact_path="model.ckpt")
    error = failure(fetch(source, settings_for(tmp_path)))
    assert isinstance(error, NotFound)
    assert "f" * 32 in error.message


def test_unsafe_artifact_path_in_a_config_is_refused_before_any_request(tmp_path: Path) -> None:
    source = MlflowSource(tracking_uri=dead_uri(), run_id="abc", artifact_path="../../etc/passwd")
    error = failure(fetch(source, settings_for(tmp_path)))
    assert isinstance(error, InvalidConfig)
    assert error.problems == ("source.artifact_path: must not contain '..'",)


def test_model_version_resolves_to_the_run_artifact_it_was_registered_from(
    mlflow_run: MlflowRun, tmp_path: Path
) -> None:
    uri = f"models:/{mlflow_run.model}/{mlflow_run.model_version}"
    result = fetch(model_source(mlflow_run, uri), settings_for(tmp_path))
    assert fetched_bytes(result) == mlflow_run.single_bytes
    cache = open_cache(tmp_path / "cache").unwrap()
    run_key = run_identity(mlflow_run.run_id, mlflow_run.single_dir)
    assert lookup(cache, run_key, mlflow_run.run_id) == result.unwrap()


def test_model_alias_resolves_to_its_version(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    result = fetch(
        model_source(mlflow_run, f"models:/{mlflow_run.model}@{mlflow_run.alias}"), settings_for(tmp_path)
    )
    assert fetched_bytes(result) == mlflow_run.single_bytes


def test_model_registered_from_a_single_file(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    result = fetch(model_source(mlflow_run, f"models:/{mlflow_run.file_model}/1"), settings_for(tmp_path))
    assert fetched_bytes(result) == mlflow_run.file_bytes


def test_model_registered_from_an_artifact_location(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    source = model_source(mlflow_run, f"models:/{mlflow_run.artifact_model}/1")
    first = fetch(source, settings_for(tmp_path))
    assert fetched_bytes(first) == mlflow_run.single_bytes
    assert fetch(source, settings_for(tmp_path)) == first


def test_moved_alias_fetches_the_new_version_not_the_cached_one(
    mlflow_run: MlflowRun, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=mlflow_run.tracking_uri)
    name = f"moving-{os.getpid()}-{tmp_path.name}"
    client.create_registered_model(name)
    v1 = client.create_model_version(name, mlflow_run.uri(mlflow_run.single_dir), run_id=mlflow_run.run_id)
    v2 = client.create_model_version(name, mlflow_run.uri(mlflow_run.file), run_id=mlflow_run.run_id)
    source = model_source(mlflow_run, f"models:/{name}@best")
    client.set_registered_model_alias(name, "best", v1.version)
    assert fetched_bytes(fetch(source, settings_for(tmp_path))) == mlflow_run.single_bytes
    client.set_registered_model_alias(name, "best", v2.version)
    assert fetched_bytes(fetch(source, settings_for(tmp_path))) == mlflow_run.file_bytes


def test_unknown_model_and_unknown_alias_are_not_found(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    for uri in (
        "models:/no-such-model/1",
        f"models:/{mlflow_run.model}@no-such-alias",
        f"models:/{mlflow_run.model}/99",
    ):
        error = failure(fetch(model_source(mlflow_run, uri), settings_for(tmp_path)))
        assert isinstance(error, NotFound), (uri, error)
        assert error.what == uri


def test_expected_sha256_is_verified(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    wrong = "0" * 64
    error = failure(fetch(run_source(mlflow_run, mlflow_run.file), settings_for(tmp_path, sha256=wrong)))
    assert isinstance(error, ChecksumMismatch) and error.expected == wrong
    cache = open_cache(tmp_path / "cache").unwrap()
    assert lookup(cache, run_identity(mlflow_run.run_id, mlflow_run.file), mlflow_run.run_id) is None
    right = error.actual
    assert fetch(run_source(mlflow_run, mlflow_run.file), settings_for(tmp_path, sha256=right)).map(
        lambda p: p.name
    ) == Success(right)


def test_downloads_stay_inside_the_cache_and_leave_no_scratch_files(
    mlflow_run: MlflowRun, tmp_path: Path
) -> None:
    fetched_bytes(fetch(run_source(mlflow_run, mlflow_run.single_dir), settings_for(tmp_path)))
    fetched_bytes(
        fetch(model_source(mlflow_run, f"models:/{mlflow_run.artifact_model}/1"), settings_for(tmp_path))
    )
    assert list(Path.cwd().iterdir()) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_progress_callback_sees_the_start_and_the_whole_file(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    fetch(
        run_source(mlflow_run, mlflow_run.file),
        settings_for(tmp_path, progress=lambda d, t: seen.append((d, t))),
    )
    size = len(mlflow_run.file_bytes)
    assert seen == [(0, size), (size, size)]


def test_concurrent_fetches_share_the_bounds_and_restore_the_environment(
    mlflow_run: MlflowRun, tmp_path: Path
) -> None:
    paths = [mlflow_run.file, mlflow_run.single_dir, mlflow_run.single_checkpoint, "modle.ckpt"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda p: fetch(run_source(mlflow_run, p), settings_for(tmp_path / p)), paths)
        )
    assert [type(r) for r in results] == [Success, Success, Success, Failure]
    assert not any(name in os.environ for name in (*HTTP_ENV, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"))


# --- offline ----------------------------------------------------------------------------------------


def test_offline_serves_a_cached_run_artifact_without_the_server(
    mlflow_run: MlflowRun, tmp_path: Path
) -> None:
    first = fetch(run_source(mlflow_run, mlflow_run.file), settings_for(tmp_path))
    offline = fetch(
        run_source(mlflow_run, mlflow_run.file, tracking_uri=dead_uri()), settings_for(tmp_path, offline=True)
    )
    assert offline == first


def test_offline_without_a_cached_copy_is_not_found(mlflow_run: MlflowRun, tmp_path: Path) -> None:
    error = failure(fetch(run_source(mlflow_run, mlflow_run.file), settings_for(tmp_path, offline=True)))
    assert isinstance(error, NotFound)
    assert "offline" in error.message


def test_offline_serves_a_model_alias_fetched_before(
    mlflow_run: MlflowRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = model_source(mlflow_run, f"models:/{mlflow_run.model}@{mlflow_run.alias}")
    first = fetch(source, settings_for(tmp_path))
    monkeypatch.setenv("CKPTFLOW_OFFLINE", "1")
    assert fetch(source, settings_for(tmp_path)) == first


# --- a server that is not there ---------------------------------------------------------------------


def test_unreachable_server_is_a_network_error_after_bounded_retries(tmp_path: Path) -> None:
    source = MlflowSource(tracking_uri=dead_uri(), run_id="abc", artifact_path="model.ckpt")
    error = failure(fetch(source, settings_for(tmp_path)))
    assert isinstance(error, NetworkError)
    assert error.attempts == 1 + DEFAULT_MAX_RETRIES
    assert not any(name in os.environ for name in HTTP_ENV)


def test_user_set_mlflow_retry_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    source = MlflowSource(tracking_uri=dead_uri(), run_id="abc", artifact_path="model.ckpt")
    error = failure(fetch(source, settings_for(tmp_path)))
    assert isinstance(error, NetworkError) and error.attempts == 1
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_tracking_credentials_never_appear_in_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-live-998877")
    uri = dead_uri().replace("http://", "http://alice:pa55word-1234@")
    source = MlflowSource(tracking_uri=uri, run_id="abc", artifact_path="model.ckpt")
    error = failure(fetch(source, settings_for(tmp_path, options={"mlflow_max_retries": 0})))
    assert isinstance(error, NetworkError)
    assert "pa55word-1234" not in repr(error) + error.message
    assert "tok-live-998877" not in repr(error) + error.message


def test_fetch_without_any_tracking_uri_is_invalid_config(tmp_path: Path) -> None:
    error = failure(fetch(MlflowSource(run_id="abc", artifact_path="model.ckpt"), settings_for(tmp_path)))
    assert isinstance(error, InvalidConfig)


def test_fixture_checkpoints_are_distinguishable_by_content() -> None:
    assert checkpoint_bytes(1) != checkpoint_bytes(2)
