"""Format detection and extraction: which layout a payload is, and how it is taken apart."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from ckptflow.context import Context, TrainingState, state_equal
from ckptflow.errors import Error, InvalidConfig, StageFailed, UnknownFormat
from ckptflow.pipeline import NamedStage, pipeline
from ckptflow.stages.formats import (
    FORMAT_STAGES,
    FORMATS,
    SafetensorsPayload,
    auto_strip_prefix,
    detect,
    detect_format,
    extract,
    extract_stage,
    jsonable,
)
from ckptflow.testing import check_pure, state_dicts


def weights() -> dict[str, torch.Tensor]:
    return {"model.encoder.weight": torch.randn(3, 2), "model.encoder.bias": torch.zeros(3)}


def optimizer_state() -> dict[str, Any]:
    return {"state": {0: {"exp_avg": torch.ones(3, 2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}


def lightning_checkpoint() -> dict[str, Any]:
    return {
        "epoch": 42,
        "global_step": 10000,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": weights(),
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 42}}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.25)}},
        "optimizer_states": [optimizer_state(), optimizer_state()],
        "lr_schedulers": [{"last_epoch": 42, "_step_count": 43}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.1, "layers": (2, 3), "dtype": torch.float32},
    }


def failure(result: Result[Any, Error]) -> Error:
    assert isinstance(result, Failure), result
    return result.failure()


# -- detection -----------------------------------------------------------------------------------------

DETECTION_TABLE = [
    ("lightning by version", {"pytorch-lightning_version": "2.4.0", "state_dict": weights()}, "lightning"),
    ("lightning by two markers", {"state_dict": weights(), "loops": {}, "callbacks": {}}, "lightning"),
    ("lightning full", lightning_checkpoint(), "lightning"),
    ("one lightning marker is not enough", {"state_dict": weights(), "callbacks": {}}, "pytorch"),
    ("pytorch model_state_dict", {"model_state_dict": weights(), "epoch": 3}, "pytorch"),
    ("pytorch state_dict", {"state_dict": weights(), "optimizer_state_dict": optimizer_state()}, "pytorch"),
    ("pytorch model key", {"model": weights(), "optimizer": optimizer_state(), "epoch": 1}, "pytorch"),
    ("bare state dict", weights(), "state_dict"),
    ("safetensors", SafetensorsPayload(weights(), {"format": "pt"}), "safetensors"),
]


@pytest.mark.parametrize(
    ("raw", "fmt"), [row[1:] for row in DETECTION_TABLE], ids=[r[0] for r in DETECTION_TABLE]
)
def test_detect_format_recognises_each_layout(raw: object, fmt: str) -> None:
    assert detect_format(raw) == Success(fmt)


def test_unknown_format_lists_the_top_level_keys() -> None:
    err = failure(detect_format({"weights": [1, 2], "step": 3}))
    assert isinstance(err, UnknownFormat)
    assert err.keys == ("weights", "step")
    assert "weights, step" in err.message


def test_a_non_mapping_payload_is_unknown_naming_its_type() -> None:
    err = failure(detect_format(torch.nn.Linear(2, 2)))
    assert isinstance(err, UnknownFormat) and "Linear" in err.message


def test_an_empty_mapping_is_unknown() -> None:
    assert isinstance(failure(detect_format({})), UnknownFormat)


def test_lightning_markers_without_a_state_dict_are_unknown() -> None:
    err = failure(detect_format({"pytorch-lightning_version": "2.4.0", "loops": {}, "callbacks": {}}))
    assert isinstance(err, UnknownFormat)
    assert "pytorch-lightning_version" in err.keys


def test_a_mapping_with_a_non_tensor_value_is_not_a_bare_state_dict() -> None:
    assert isinstance(failure(detect_format({"w": torch.ones(1), "note": "hi"})), UnknownFormat)


# -- extraction ------------------------------------------------------------------------------------------


def test_lightning_checkpoint_is_extracted_with_counters_optimizers_and_schedulers() -> None:
    raw = lightning_checkpoint()
    out = extract(raw, "lightning").unwrap()
    assert state_equal(out.state, raw["state_dict"])
    assert out.training.epoch == 42
    assert out.training.global_step == 10000
    assert len(out.training.optimizer_states) == 2
    assert out.training.optimizer_states[0] is raw["optimizer_states"][0]
    assert out.training.scheduler_states == ({"last_epoch": 42, "_step_count": 43},)


def test_lightning_metadata_is_json_friendly_and_keeps_hyper_parameters() -> None:
    metadata = extract(lightning_checkpoint(), "lightning").unwrap().metadata
    assert metadata["pytorch-lightning_version"] == "2.4.0"
    assert metadata["hyper_parameters"] == {"lr": 0.1, "layers": [2, 3], "dtype": "torch.float32"}
    assert "callbacks" not in metadata  # holds a tensor: it stays in training.extra
    json.dumps(metadata)


def test_lightning_leftovers_are_kept_untouched_in_training_extra() -> None:
    raw = lightning_checkpoint()
    extra = extract(raw, "lightning").unwrap().training.extra
    assert extra["callbacks"] is raw["callbacks"]
    assert extra["loops"] is raw["loops"]
    assert not {"state_dict", "optimizer_states", "lr_schedulers", "epoch", "global_step"} & set(extra)


def test_pytorch_checkpoint_is_extracted_with_single_optimizer_and_scheduler() -> None:
    raw = {
        "model_state_dict": weights(),
        "optimizer_state_dict": optimizer_state(),
        "lr_scheduler_state_dict": {"last_epoch": 7},
        "epoch": 7,
        "step": 700,
        "best_accuracy": 0.91,
    }
    out = extract(raw, "pytorch").unwrap()
    assert state_equal(out.state, raw["model_state_dict"])
    assert out.training.optimizer_states == (raw["optimizer_state_dict"],)
    assert out.training.scheduler_states == ({"last_epoch": 7},)
    assert (out.training.epoch, out.training.global_step) == (7, 700)
    assert out.metadata == {"best_accuracy": 0.91}


def test_pytorch_counters_saved_as_tensors_are_read_as_integers() -> None:
    out = extract({"state_dict": weights(), "epoch": torch.tensor(5)}, "pytorch").unwrap()
    assert out.training.epoch == 5


def test_a_non_integer_epoch_is_not_taken_as_a_counter() -> None:
    out = extract({"state_dict": weights(), "epoch": "five"}, "pytorch").unwrap()
    assert out.training.epoch is None
    assert out.metadata == {"epoch": "five"}


def test_extracted_state_is_a_new_dict_holding_the_same_tensors() -> None:
    raw = {"state_dict": weights()}
    state = extract(raw, "pytorch").unwrap().state
    assert state is not raw["state_dict"]
    assert all(state[k] is raw["state_dict"][k] for k in state)


def test_bare_state_dict_extracts_with_no_training_state() -> None:
    raw = weights()
    out = extract(raw, "state_dict").unwrap()
    assert state_equal(out.state, raw) and out.state is not raw
    assert out.training == TrainingState()
    assert out.metadata == {}


def test_safetensors_payload_extracts_tensors_and_its_metadata() -> None:
    payload = SafetensorsPayload(weights(), {"format": "pt"})
    out = extract(payload, "safetensors").unwrap()
    assert state_equal(out.state, payload.tensors)
    assert out.metadata == {"format": "pt"}


def test_an_explicit_format_is_honoured_when_the_payload_fits_it() -> None:
    raw = lightning_checkpoint()
    out = extract(raw, "pytorch").unwrap()
    assert state_equal(out.state, raw["state_dict"])


def test_extracting_a_payload_of_another_layout_is_unknown_format() -> None:
    assert isinstance(failure(extract(weights(), "lightning")), UnknownFormat)
    assert isinstance(failure(extract(weights(), "safetensors")), UnknownFormat)


def test_extracting_with_an_unknown_format_name_lists_the_known_ones() -> None:
    err = failure(extract(weights(), "onnx"))
    assert isinstance(err, InvalidConfig)
    assert all(name in err.message for name in FORMATS)


def test_jsonable_shortens_long_reprs() -> None:
    assert len(jsonable(object.__new__(type("X" * 300, (), {})))) <= 200


# -- stages -----------------------------------------------------------------------------------------------


def test_format_stages_run_detect_extract_and_auto_strip_prefix_in_order() -> None:
    assert pipeline(*FORMAT_STAGES).names == ("detect", "extract", "auto_strip_prefix")


def test_format_stages_take_a_lightning_payload_to_a_stripped_state_dict() -> None:
    out = pipeline(*FORMAT_STAGES)(
        Context(raw=lightning_checkpoint(), metadata={"source_note": "x"})
    ).unwrap()
    assert out.format == "lightning"
    assert list(out.state or {}) == ["encoder.weight", "encoder.bias"]
    assert out.training is not None and out.training.epoch == 42
    assert out.metadata["source_note"] == "x" and out.metadata["hparams_name"] == "kwargs"
    assert [e.name for e in out.events] == ["format.detected", "checkpoint.extracted", "prefix.stripped"]


def test_detect_keeps_a_format_already_set() -> None:
    out = detect(Context(raw=weights(), format="safetensors")).unwrap()
    assert out.format == "safetensors"
    assert out.events[-1].data["preset"] is True


def test_detect_without_a_payload_says_to_read_first() -> None:
    err = failure(detect(Context()))
    assert isinstance(err, StageFailed) and err.stage == "detect" and "read" in err.message


def test_detect_failure_is_located_at_the_detect_stage() -> None:
    err = failure(detect(Context(raw={"x": 1})))
    assert isinstance(err, UnknownFormat) and err.stage == "detect"


def test_extract_without_a_format_says_to_detect_first() -> None:
    err = failure(extract_stage(Context(raw=weights())))
    assert isinstance(err, StageFailed) and "detect" in err.message


def test_auto_strip_prefix_keeps_keys_and_says_why_when_some_lack_the_prefix() -> None:
    state = {"model.a": torch.ones(1), "head.b": torch.ones(1), "model.c": torch.ones(1)}
    out = auto_strip_prefix(Context(format="lightning", state=state)).unwrap()
    assert out.state is state
    event = out.events[-1]
    assert event.name == "prefix.kept"
    assert "1 of 3 keys" in event.data["reason"] and "'head.b'" in event.data["reason"]


def test_auto_strip_prefix_leaves_other_formats_alone() -> None:
    ctx = Context(format="pytorch", state=weights())
    assert auto_strip_prefix(ctx) == Success(ctx)


def test_auto_strip_prefix_without_a_state_dict_fails() -> None:
    assert isinstance(failure(auto_strip_prefix(Context(format="lightning"))), StageFailed)


@st.composite
def payload_contexts(draw: st.DrawFn) -> Context:
    sd = draw(state_dicts(min_keys=1, max_keys=4))
    layout = draw(st.sampled_from(["lightning", "pytorch", "state_dict", "safetensors"]))
    raw: object = {
        "lightning": {
            "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in sd.items()},
            "epoch": draw(st.integers(0, 9)),
            "global_step": draw(st.integers(0, 999)),
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": []}],
            "lr_schedulers": [{"last_epoch": 1}],
            "callbacks": {"cb": {"score": torch.tensor(1.0)}},
        },
        "pytorch": {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "epoch": 1},
        "state_dict": sd,
        "safetensors": SafetensorsPayload(sd, {"format": "pt"}),
    }[layout]
    return Context(raw=raw, metadata=draw(st.just({}) | st.just({"note": "kept"})))


def test_format_stages_are_pure() -> None:
    check_pure(pipeline(*FORMAT_STAGES), payload_contexts())


@pytest.mark.parametrize(
    ("stage", "before"),
    [(detect, ()), (extract_stage, (detect,)), (auto_strip_prefix, (detect, extract_stage))],
    ids=["detect", "extract", "auto_strip_prefix"],
)
def test_each_format_stage_is_pure(stage: NamedStage, before: tuple[NamedStage, ...]) -> None:
    check_pure(stage, payload_contexts().map(lambda ctx: pipeline(*before)(ctx).unwrap()))
