"""Hypothesis strategies and law checks for users' own stages and transforms.

    from ckptflow.testing import check_pure, contexts, state_dicts

    def test_my_stage_is_pure():
        check_pure(my_stage, contexts(state=state_dicts(min_keys=1)))

Needs ``hypothesis`` installed.
"""

from ckptflow.testing.laws import check_composes, check_idempotent, check_preserves_shapes, check_pure
from ckptflow.testing.strategies import (
    StateAndSpec,
    contexts,
    dtypes,
    errors,
    events,
    model_specs,
    secrets,
    shapes,
    source_configs,
    state_dict_and_spec,
    state_dicts,
    tensor_names,
    tensor_specs,
    tensors,
    training_states,
)

__all__ = [
    "StateAndSpec",
    "check_composes",
    "check_idempotent",
    "check_preserves_shapes",
    "check_pure",
    "contexts",
    "dtypes",
    "errors",
    "events",
    "model_specs",
    "secrets",
    "shapes",
    "source_configs",
    "state_dict_and_spec",
    "state_dicts",
    "tensor_names",
    "tensor_specs",
    "tensors",
    "training_states",
]
