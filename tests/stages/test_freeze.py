"""Freeze resolution: module paths and globs to parameter names, unfreeze winning, close matches."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success
from torch import nn

from ckptflow.context import Context, FrozenModule, LoadOptions, ModelSpec
from ckptflow.errors import FreezeTargetNotFound, StageFailed
from ckptflow.stages.freeze import FreezeResolution, freeze, resolve_freeze
from ckptflow.stages.strategies import plan
from tests.fixtures.models import Classifier, context_for, model_specs, model_state


def _resolved(spec: ModelSpec, patterns: list[str], unfreeze: list[str] | None = None) -> FreezeResolution:
    result = resolve_freeze(spec, patterns, unfreeze or [])
    assert isinstance(result, Success), result
    return result.unwrap()


def _params_under(model: nn.Module, prefix: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefix)}


def test_a_module_path_covers_every_parameter_beneath_it(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["encoder"])
    assert r.freeze == _params_under(classifier, "encoder.")
    assert r.frozen_modules == (
        FrozenModule("encoder", sum(p.numel() for p in classifier.encoder.parameters())),
    )


def test_encoder_never_covers_encoder_data(twin_encoders: nn.ModuleDict) -> None:
    r = _resolved(ModelSpec.from_model(twin_encoders), ["encoder"])
    assert r.freeze == {"encoder.weight", "encoder.bias"}


def test_a_glob_over_children_covers_each_matching_child(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["encoder.layers.*"])
    assert r.freeze == _params_under(classifier, "encoder.layers.")
    assert [m.module for m in r.frozen_modules] == ["encoder.layers.0", "encoder.layers.1"]


def test_a_leading_glob_matches_the_path_at_any_depth(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["*.norm"])
    assert r.freeze == {"encoder.norm.weight", "encoder.norm.bias"}


def test_a_parameter_name_is_a_target_too(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["head.bias"])
    assert r.freeze == {"head.bias"}
    assert r.frozen_modules == (FrozenModule("head.bias", classifier.head.bias.numel()),)


def test_buffers_are_never_frozen(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["encoder.bn"])
    assert r.freeze == {"encoder.bn.weight", "encoder.bn.bias"}


def test_unfreeze_wins_over_freeze_for_the_parameters_it_covers(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["encoder"], ["encoder.norm"])
    assert r.freeze == _params_under(classifier, "encoder.") - _params_under(classifier, "encoder.norm.")
    assert r.unfreeze == {"encoder.norm.weight", "encoder.norm.bias"}
    frozen_elements = sum(p.numel() for n, p in classifier.named_parameters() if n in r.freeze)
    assert r.frozen_modules == (FrozenModule("encoder", frozen_elements),)


def test_a_module_wholly_unfrozen_is_not_listed_as_frozen(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["encoder.norm", "head"], ["encoder"])
    assert r.freeze == {"head.weight", "head.bias"}
    assert [m.module for m in r.frozen_modules] == ["head"]


def test_overlapping_targets_list_only_the_outermost_module(classifier: Classifier) -> None:
    r = _resolved(ModelSpec.from_model(classifier), ["encoder.layers.0", "encoder"])
    assert [m.module for m in r.frozen_modules] == ["encoder"]


def test_an_unknown_target_fails_with_close_matches(classifier: Classifier) -> None:
    result = resolve_freeze(ModelSpec.from_model(classifier), ["encodr"])
    assert isinstance(result, Failure)
    err = result.failure()
    assert isinstance(err, FreezeTargetNotFound)
    assert err.target == "encodr"
    assert "encoder" in err.close_matches


def test_an_unknown_unfreeze_target_fails_too(classifier: Classifier) -> None:
    result = resolve_freeze(ModelSpec.from_model(classifier), ["encoder"], ["encoder.nrom"])
    assert isinstance(result, Failure)
    err = result.failure()
    assert isinstance(err, FreezeTargetNotFound)
    assert (err.target, err.close_matches[0]) == ("encoder.nrom", "encoder.norm")


def test_a_glob_matching_nothing_fails(classifier: Classifier) -> None:
    result = resolve_freeze(ModelSpec.from_model(classifier), ["decoder.*"])
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), FreezeTargetNotFound)


def test_the_freeze_stage_adds_the_resolution_to_the_plan(classifier: Classifier) -> None:
    ctx = plan(
        context_for(classifier, model_state(classifier), freeze=("encoder",), unfreeze=("encoder.norm",))
    )
    out = ctx.bind(freeze).unwrap()
    assert out.plan is not None
    expected = _resolved(ModelSpec.from_model(classifier), ["encoder"], ["encoder.norm"])
    assert (out.plan.freeze, out.plan.unfreeze, out.plan.frozen_modules) == (
        expected.freeze,
        expected.unfreeze,
        expected.frozen_modules,
    )
    assert out.events[-1].name == "freeze.resolved"


def test_the_freeze_stage_without_targets_passes_the_context_through(classifier: Classifier) -> None:
    ctx = plan(context_for(classifier, model_state(classifier))).unwrap()
    assert freeze(ctx).map(lambda out: out.events) == Success(ctx.events)


def test_the_freeze_stage_names_itself_in_a_failure(classifier: Classifier) -> None:
    ctx = plan(context_for(classifier, model_state(classifier), freeze=("encodr",))).unwrap()
    result = freeze(ctx)
    assert isinstance(result, Failure)
    assert result.failure().stage == "freeze"


def test_the_freeze_stage_needs_a_plan(classifier: Classifier) -> None:
    ctx = Context(spec=ModelSpec.from_model(classifier), options=LoadOptions(freeze=("encoder",)))
    result = freeze(ctx)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), StageFailed)


def _targets(spec: ModelSpec) -> st.SearchStrategy[list[str]]:
    paths = sorted({*spec.modules, *(n for n, t in spec.tensors.items() if t.parameter)})
    return st.lists(st.sampled_from(paths), max_size=3) if paths else st.just([])


@given(data=st.data(), spec=model_specs())
def test_resolution_laws(data: st.DataObject, spec: ModelSpec) -> None:
    """Unfreeze and freeze never overlap, resolution is deterministic, and the spec is untouched."""
    frozen_targets = data.draw(_targets(spec))
    unfrozen_targets = data.draw(_targets(spec))
    before = attrs.evolve(spec, tensors=dict(spec.tensors))
    first = _resolved(spec, frozen_targets, unfrozen_targets)
    assert not first.freeze & first.unfreeze
    assert first == _resolved(spec, frozen_targets, unfrozen_targets)
    assert spec == before


@given(data=st.data(), spec=model_specs())
def test_freezing_the_reported_modules_again_freezes_the_same_parameters(
    data: st.DataObject, spec: ModelSpec
) -> None:
    first = _resolved(spec, data.draw(_targets(spec)))
    again = _resolved(spec, [m.module for m in first.frozen_modules])
    assert again.freeze == first.freeze


@pytest.mark.parametrize("pattern", ["encoder", "encoder.*", "*coder"])
def test_no_pattern_reaches_across_a_name_boundary(twin_encoders: nn.ModuleDict, pattern: str) -> None:
    r = _resolved(ModelSpec.from_model(twin_encoders), [pattern])
    assert not any(name.startswith("encoder_data") for name in r.freeze)
