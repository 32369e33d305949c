"""Specification of ``ckptflow.config.converter``: mappings, YAML and URIs into ``CheckpointConfig``."""

from __future__ import annotations

import copy
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from ckptflow.config.converter import (
    make_converter,
    parse_config,
    parse_mlflow_uri,
    source_from_uri,
    split_model_uri,
    unstructure_config,
    validate_mlflow,
)
from ckptflow.config.schema import (
    AzureSource,
    CheckpointConfig,
    GcsSource,
    HttpSource,
    LocalSource,
    MlflowSource,
    S3Source,
    TransformConfig,
)
from ckptflow.errors import InvalidConfig
from ckptflow.testing import source_configs


def problems(result: Result[Any, InvalidConfig]) -> tuple[str, ...]:
    assert isinstance(result, Failure), f"expected a failure, got {result!r}"
    error = result.failure()
    assert isinstance(error, InvalidConfig)
    return error.problems


S3 = {"type": "s3", "bucket": "models", "key": "resnet/last.ckpt"}


# --- structuring valid configs ----------------------------------------------------------------------


def test_bare_mapping_structures_to_checkpoint_config() -> None:
    result = parse_config({"source": S3, "strategy": "warm_start"})
    assert result == Success(
        CheckpointConfig(source=S3Source(bucket="models", key="resnet/last.ckpt"), strategy="warm_start")
    )


def test_top_level_checkpoint_block_is_accepted_and_other_sections_are_left_alone() -> None:
    config = {"model": {"depth": 50}, "trainer": {"epochs": 3}, "checkpoint": {"source": S3}}
    assert parse_config(config) == parse_config({"source": S3})


def test_each_source_type_tag_selects_its_class() -> None:
    sources = {
        "local": ({"path": "/ckpt/last.ckpt"}, LocalSource(path="/ckpt/last.ckpt")),
        "http": ({"url": "https://h/x.pt"}, HttpSource(url="https://h/x.pt")),
        "s3": ({"bucket": "b", "key": "k"}, S3Source(bucket="b", key="k")),
        "gcs": ({"bucket": "b", "blob": "o"}, GcsSource(bucket="b", blob="o")),
        "azure": ({"container": "c", "blob": "o"}, AzureSource(container="c", blob="o")),
        "mlflow": (
            {"run_id": "abc123", "artifact_path": "ckpt/last.ckpt"},
            MlflowSource(run_id="abc123", artifact_path="ckpt/last.ckpt"),
        ),
    }
    for tag, (fields, expected) in sources.items():
        assert parse_config({"source": {"type": tag, **fields}}) == Success(CheckpointConfig(source=expected))


def test_a_single_freeze_pattern_string_means_a_list_of_one() -> None:
    result = parse_config({"source": S3, "freeze": "encoder.*"})
    assert result.map(lambda c: c.freeze) == Success(("encoder.*",))


def test_transforms_structure_with_their_arguments() -> None:
    config = {"source": S3, "transforms": [{"name": "strip_prefix", "args": {"prefix": "model."}}]}
    expected = (TransformConfig(name="strip_prefix", args={"prefix": "model."}),)
    assert parse_config(config).map(lambda c: c.transforms) == Success(expected)


def test_parse_config_does_not_modify_its_input() -> None:
    config = {
        "checkpoint": {
            "source": dict(S3),
            "freeze": ["a", "b"],
            "transforms": [{"name": "x", "args": {"k": [1]}}],
        }
    }
    before = copy.deepcopy(config)
    parse_config(config)
    assert config == before


def test_yaml_file_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("checkpoint:\n  source: s3://models/resnet/last.ckpt\n  strategy: cold_start\n")
    expected = CheckpointConfig(
        source=S3Source(bucket="models", key="resnet/last.ckpt"), strategy="cold_start"
    )
    assert parse_config(path) == Success(expected)
    assert parse_config(str(path)) == Success(expected)


def test_missing_yaml_file_is_invalid_config_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert problems(parse_config(missing)) == (f"{missing}: config file not found",)


def test_malformed_yaml_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("checkpoint:\n  source: [unclosed\n")
    (problem,) = problems(parse_config(path))
    assert problem.startswith(f"{path}: ") and "line 3" in problem


def test_omegaconf_dictconfig_is_accepted_with_interpolations_resolved() -> None:
    import omegaconf

    cfg = omegaconf.OmegaConf.create(
        {"bucket": "models", "checkpoint": {"source": {"type": "s3", "bucket": "${bucket}", "key": "k"}}}
    )
    assert parse_config(cfg) == Success(CheckpointConfig(source=S3Source(bucket="models", key="k")))


# --- URI strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/data/last.ckpt", LocalSource(path="/data/last.ckpt")),
        ("relative/last.ckpt", LocalSource(path="relative/last.ckpt")),
        ("file:///data/last.ckpt", LocalSource(path="/data/last.ckpt")),
        ("https://host/x.pt?v=1", HttpSource(url="https://host/x.pt?v=1")),
        ("s3://bucket/dir/key.ckpt", S3Source(bucket="bucket", key="dir/key.ckpt")),
        ("s3://bucket/key.ckpt?versionId=v42", S3Source(bucket="bucket", key="key.ckpt", version_id="v42")),
        ("gs://bucket/obj.pt#1712", GcsSource(bucket="bucket", blob="obj.pt", generation="1712")),
        ("file://localhost/data/a%20b.ckpt", LocalSource(path="/data/a b.ckpt")),
        ("gs://bucket/obj.pt", GcsSource(bucket="bucket", blob="obj.pt")),
        ("az://container/blob.pt", AzureSource(container="container", blob="blob.pt")),
        (
            "runs:/0a1b/checkpoints/last.ckpt",
            MlflowSource(run_id="0a1b", artifact_path="checkpoints/last.ckpt"),
        ),
        ("models:/resnet/3", MlflowSource(model_uri="models:/resnet/3")),
        ("models:/resnet@champion", MlflowSource(model_uri="models:/resnet@champion")),
    ],
)
def test_source_uri_string_resolves_by_scheme(uri: str, expected: object) -> None:
    assert source_from_uri(uri) == Success(expected)
    assert parse_config({"source": uri}) == Success(CheckpointConfig(source=expected))  # type: ignore[arg-type]


def test_unknown_uri_scheme_lists_the_known_ones() -> None:
    (problem,) = problems(parse_config({"source": "ftp://host/x.pt"}))
    assert problem.startswith("source: 'ftp://host/x.pt': unknown scheme 'ftp' (known: file, http, https, s3")


def test_file_uri_naming_a_remote_host_is_invalid() -> None:
    assert problems(source_from_uri("file://server/share/x.pt")) == (
        "'file://server/share/x.pt' names a remote host; only local file:// paths work",
    )


def test_bucket_uri_without_a_key_is_invalid() -> None:
    assert problems(source_from_uri("s3://bucket")) == ("'s3://bucket' needs s3://<bucket>/<name>",)


def test_uri_credentials_and_query_never_appear_in_problems() -> None:
    text = " ".join(problems(parse_config({"source": "ftp://user:hunter2@host/x.pt?token=s3cr3t"})))
    assert "hunter2" not in text and "s3cr3t" not in text and "host/x.pt" in text


# --- every problem, with its path -------------------------------------------------------------------


def test_missing_required_field_is_reported_with_its_full_path() -> None:
    result = parse_config({"checkpoint": {"source": {"type": "s3", "key": "k"}}})
    assert problems(result) == ("checkpoint.source.bucket: missing",)


def test_unknown_source_type_lists_the_known_types() -> None:
    result = parse_config({"source": {"type": "ftp"}})
    assert problems(result) == ("source.type: unknown 'ftp' (known: local, http, s3, gcs, azure, mlflow)",)


def test_missing_source_type_is_reported() -> None:
    (problem,) = problems(parse_config({"source": {"bucket": "b", "key": "k"}}))
    assert problem.startswith("source.type: missing")


def test_misspelled_key_suggests_the_right_one() -> None:
    assert problems(parse_config({"sorce": S3})) == (
        "source: missing",
        "sorce: unknown key → did you mean 'source'?",
    )


def test_misspelled_checkpoint_block_suggests_checkpoint() -> None:
    assert "checkpont: unknown key → did you mean 'checkpoint'?" in problems(parse_config({"checkpont": {}}))


def test_misspelled_strategy_suggests_the_closest_name() -> None:
    (problem,) = problems(parse_config({"source": S3, "strategy": "warmstart"}))
    assert problem.startswith("strategy: unknown 'warmstart' (known: weights_only, warm_start, cold_start")
    assert problem.endswith("did you mean 'warm_start'?")


def test_all_problems_are_reported_at_once() -> None:
    config = {
        "checkpoint": {
            "source": {"type": "s3", "bukcet": "b", "key": 3},
            "strategy": "warmstart",
            "freeze": ["a", 2],
            "strict": "yes",
            "sha256": "abc",
            "transforms": [{"nme": "x"}, 5],
        }
    }
    found = set(problems(parse_config(config)))
    assert found == {
        "checkpoint.source.bucket: missing",
        "checkpoint.source.key: expected a string, got int",
        "checkpoint.source.bukcet: unknown key → did you mean 'bucket'?",
        "checkpoint.strategy: unknown 'warmstart' (known: weights_only, warm_start, cold_start, "
        "transfer_learning) → did you mean 'warm_start'?",
        "checkpoint.freeze[1]: expected a string, got int",
        "checkpoint.strict: expected true or false, got str",
        "checkpoint.sha256: expected 64 hex digits, got 'abc'",
        "checkpoint.transforms[0].name: missing",
        "checkpoint.transforms[0].nme: unknown key → did you mean 'name'?",
        "checkpoint.transforms[1]: expected a mapping, got int",
    }


def test_scalars_are_not_coerced() -> None:
    result = parse_config({"source": {"type": "s3", "bucket": 5, "key": "k", "anonymous": "no"}})
    assert set(problems(result)) == {
        "source.bucket: expected a string, got int",
        "source.anonymous: expected true or false, got str",
    }


def test_empty_required_strings_are_rejected() -> None:
    assert problems(parse_config({"source": {"type": "gcs", "bucket": "", "blob": "o"}})) == (
        "source.bucket: must not be empty",
    )


def test_http_source_values_are_checked() -> None:
    source = {"type": "http", "url": "ftp://h/x", "timeout": 0, "headers": {"X-Id": 1}}
    assert set(problems(parse_config({"source": source}))) == {
        "source.url: expected an http:// or https:// URL, got 'ftp://h/x'",
        "source.timeout: must be a positive number of seconds",
        "source.headers['X-Id']: expected a string, got int",
    }


def test_secret_values_in_the_wrong_place_are_not_echoed() -> None:
    source = {"type": "http", "url": "https://h/x", "headers": "Bearer sk-live-123456"}
    (problem,) = problems(parse_config({"source": source}))
    assert problem == "source.headers: expected a mapping, got str"


def test_non_mapping_config_is_invalid() -> None:
    assert problems(parse_config([1, 2])) == ("config: expected a mapping, got list",)
    assert problems(parse_config({"checkpoint": "s3://b/k"})) == ("checkpoint: expected a mapping, got str",)


# --- MLflow references ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../other/last.ckpt", "must not contain '..'"),
        ("a/../../b", "must not contain '..'"),
        ("/etc/passwd", "must be relative to the run's artifact root, not absolute"),
        ("a\x00b", "must not contain NUL"),
        ("ckpt\\last.ckpt", "must use '/' separators, not backslashes"),
    ],
)
def test_unsafe_artifact_paths_are_invalid(path: str, problem: str) -> None:
    result = parse_config({"source": {"type": "mlflow", "run_id": "abc", "artifact_path": path}})
    assert f"source.artifact_path: {problem}" in problems(result)
    assert isinstance(parse_mlflow_uri(f"runs:/abc/{path}"), Failure)


def test_mlflow_source_needs_either_a_run_or_a_model_uri() -> None:
    assert problems(parse_config({"source": {"type": "mlflow"}})) == (
        "source.run_id: missing (or give model_uri)",
    )
    both = {"type": "mlflow", "run_id": "a", "artifact_path": "p", "model_uri": "models:/m/1"}
    assert problems(parse_config({"source": both})) == (
        "source.model_uri: give either model_uri or run_id with artifact_path, not both",
    )


def test_mlflow_run_without_artifact_path_is_invalid() -> None:
    assert problems(parse_config({"source": {"type": "mlflow", "run_id": "abc"}})) == (
        "source.artifact_path: missing",
    )


def test_split_model_uri_separates_name_from_version_or_alias() -> None:
    assert split_model_uri("models:/resnet/3") == ("resnet", "3")
    assert split_model_uri("models:/resnet/champion") == ("resnet", "champion")
    assert split_model_uri("models:/resnet@champion") == ("resnet", "champion")
    assert split_model_uri("models:/resnet") is None
    assert split_model_uri("models:/resnet/3/extra") is None
    assert split_model_uri("runs:/abc/x") is None


def test_validate_mlflow_accepts_a_safe_source_unchanged() -> None:
    source = MlflowSource(run_id="abc", artifact_path="ckpt/last.ckpt")
    assert validate_mlflow(source) == Success(source)
    assert isinstance(validate_mlflow(MlflowSource(run_id="abc", artifact_path="../x")), Failure)


# --- laws ---------------------------------------------------------------------------------------------

names = st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=12)
paths = st.lists(names.filter(lambda s: s not in {".", ".."}), min_size=1, max_size=3).map("/".join)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
transforms = st.builds(TransformConfig, name=names, args=st.dictionaries(names, json_scalars, max_size=2))
configs = st.builds(
    CheckpointConfig,
    source=source_configs(),
    strategy=st.sampled_from(["weights_only", "warm_start", "cold_start", "transfer_learning"]),
    strict=st.none() | st.booleans(),
    freeze=st.lists(names, max_size=3).map(tuple),
    unfreeze=st.lists(names, max_size=2).map(tuple),
    transforms=st.lists(transforms, max_size=2).map(tuple),
    cache_dir=st.none() | paths,
    sha256=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_every_valid_config_round_trips_through_unstructure(config: CheckpointConfig) -> None:
    assert parse_config(unstructure_config(config)) == Success(config)


@settings(max_examples=50, deadline=None)
@given(configs)
def test_round_trip_also_holds_inside_a_checkpoint_block(config: CheckpointConfig) -> None:
    assert parse_config({"checkpoint": unstructure_config(config)}) == Success(config)


keys = (
    st.sampled_from(["source", "type", "bucket", "key", "strategy", "freeze", "transforms", "name", "args"])
    | st.text(max_size=6)
    | st.integers()
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["s3", "mlflow", "local", "runs:/a/b", "s3://b/k", "warm_start"])
)
nested = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, nested, max_size=5))
def test_arbitrary_nested_mappings_never_raise(data: dict[Any, Any]) -> None:
    result = parse_config(data)
    assert isinstance(result, (Success, Failure))
    if isinstance(result, Failure):
        assert result.failure().problems


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(keys, nested, max_size=5))
def test_parsing_arbitrary_mappings_leaves_them_unchanged(data: dict[Any, Any]) -> None:
    before = copy.deepcopy(data)
    parse_config(data)
    assert data == before


def test_make_converter_structures_and_unstructures_configs_directly() -> None:
    conv = make_converter()
    config = conv.structure({"source": S3, "freeze": ["a"]}, CheckpointConfig)
    assert config == CheckpointConfig(source=S3Source(bucket="models", key="resnet/last.ckpt"), freeze=("a",))
    assert conv.unstructure(config) == unstructure_config(config)
