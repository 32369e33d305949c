"""Laws of stage composition: identity, associativity, short-circuit, optional stages, editing by name."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from functools import reduce

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from ckptflow.context import Context, Event
from ckptflow.errors import Error, NotFound, StageFailed
from ckptflow.pipeline import NamedStage, Pipeline, as_stage, optional, pipeline, stage
from ckptflow.testing.laws import check_composes
from ckptflow.testing.strategies import contexts


def trail(ctx: Context) -> tuple[str, ...]:
    return tuple(ctx.metadata.get("trail", ()))


def tag(name: str) -> NamedStage:
    """A stage that appends its name to ``metadata['trail']`` (a new dict and tuple each time)."""

    def run(ctx: Context) -> Result[Context, Error]:
        return Success(attrs.evolve(ctx, metadata={**ctx.metadata, "trail": (*trail(ctx), name)}))

    return NamedStage(name, run)


def fail(name: str, error: Error | None = None) -> NamedStage:
    """A stage that always fails, with ``NotFound`` unless another failure is given."""
    failure = error if error is not None else NotFound(what=f"thing for {name}")
    return NamedStage(name, lambda ctx: Failure(failure))


START = Context(source="memory://start")
names = st.sampled_from(["a", "b", "c", "d"])
steps = st.one_of(names.map(tag), names.map(lambda n: fail(f"fail-{n}")))
stage_lists = st.lists(steps, max_size=5)


def by_bind(stages: Sequence[NamedStage], ctx: Context) -> Result[Context, Error]:
    start: Result[Context, Error] = Success(ctx)
    return reduce(lambda acc, s: acc.bind(s), stages, start)


# -- identity and associativity ----------------------------------------------------------------------


@given(contexts())
def test_empty_pipeline_is_identity(ctx: Context) -> None:
    assert pipeline()(ctx) == Success(ctx)


@given(stage_lists)
def test_pipeline_equals_binding_its_stages_in_turn(stages: list[NamedStage]) -> None:
    assert pipeline(*stages)(START) == by_bind(stages, START)


@given(stage_lists)
def test_identity_pipeline_on_either_side_changes_nothing(stages: list[NamedStage]) -> None:
    p = pipeline(*stages)
    assert pipeline(pipeline(), p)(START) == p(START) == pipeline(p, pipeline())(START)


@given(stage_lists, stage_lists, stage_lists)
def test_composition_is_associative(a: list[NamedStage], b: list[NamedStage], c: list[NamedStage]) -> None:
    pa, pb, pc = pipeline(*a), pipeline(*b), pipeline(*c)
    assert pipeline(pa, pipeline(pb, pc))(START) == pipeline(pipeline(pa, pb), pc)(START)


@given(stage_lists, stage_lists, stage_lists)
def test_nested_pipelines_flatten_to_the_same_stages(
    a: list[NamedStage], b: list[NamedStage], c: list[NamedStage]
) -> None:
    pa, pb, pc = pipeline(*a), pipeline(*b), pipeline(*c)
    assert pipeline(pa, pipeline(pb, pc)) == pipeline(pipeline(pa, pb), pc) == pipeline(*a, *b, *c)


def test_hand_written_stages_satisfy_the_composition_laws() -> None:
    check_composes(tag("a"), tag("b"), tag("c"), max_examples=10)


def test_stages_run_left_to_right() -> None:
    result = pipeline(tag("a"), tag("b"), tag("c"))(START)
    assert trail(result.unwrap()) == ("a", "b", "c")


# -- failures ----------------------------------------------------------------------------------------


def test_pipeline_stops_at_the_first_failure() -> None:
    calls: list[str] = []

    def later(ctx: Context) -> Result[Context, Error]:
        calls.append("later")
        return Success(ctx)

    result = pipeline(tag("a"), fail("broken"), later)(START)
    assert isinstance(result, Failure)
    assert calls == []


def test_failure_names_the_stage_that_failed() -> None:
    result = pipeline(tag("a"), fail("broken"), tag("b"))(START)
    assert result.failure().stage == "broken"


def test_failure_inside_a_nested_pipeline_names_the_inner_stage() -> None:
    result = pipeline(tag("a"), pipeline(tag("b"), fail("inner")), tag("c"))(START)
    assert result.failure().stage == "inner"


def test_failure_that_already_names_a_stage_keeps_it() -> None:
    result = pipeline(fail("outer", StageFailed(detail="x", stage="deep")))(START)
    assert result.failure().stage == "deep"


def test_failure_is_otherwise_passed_through_unchanged() -> None:
    error = NotFound(what="s3://bucket/model.pt", source="s3://bucket/model.pt")
    result = pipeline(fail("fetch", error))(START)
    assert result.failure() == attrs.evolve(error, stage="fetch")


def test_programming_errors_in_a_stage_raise_instead_of_becoming_failures() -> None:
    def buggy(ctx: Context) -> Result[Context, Error]:
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        pipeline(buggy)(START)


# -- optional stages ---------------------------------------------------------------------------------


def test_optional_stage_failure_records_a_skipped_event() -> None:
    error = NotFound(what="scheduler state")
    result = pipeline(optional(fail("restore_scheduler", error)))(START)
    event = Event("stage.skipped", {"kind": "not_found", "message": error.message}, "restore_scheduler")
    assert result.unwrap().events == (event,)


def test_optional_stage_failure_passes_the_context_on() -> None:
    result = pipeline(tag("a"), optional(fail("maybe")), tag("b"))(START)
    assert trail(result.unwrap()) == ("a", "b")


def test_optional_stage_that_succeeds_behaves_like_the_stage() -> None:
    assert pipeline(optional(tag("a")))(START) == pipeline(tag("a"))(START)


def test_optional_marks_the_stage_in_the_pipeline_value() -> None:
    p = pipeline(tag("a"), optional(tag("b")))
    assert [s.optional for s in p.stages] == [False, True]


def test_optional_of_a_pipeline_skips_it_as_a_whole() -> None:
    result = pipeline(optional(pipeline(tag("a"), fail("inner"))), tag("b"))(START)
    assert trail(result.unwrap()) == ("b",)
    assert [e.name for e in result.unwrap().events] == ["stage.skipped"]


# -- naming ------------------------------------------------------------------------------------------


def test_plain_functions_are_named_after_themselves() -> None:
    def strip_things(ctx: Context) -> Result[Context, Error]:
        return Success(ctx)

    assert pipeline(strip_things).names == ("strip_things",)


def test_stage_decorator_names_the_stage() -> None:
    @stage("renamed")
    def original(ctx: Context) -> Result[Context, Error]:
        return Success(ctx)

    @stage()
    def plain(ctx: Context) -> Result[Context, Error]:
        return Success(ctx)

    assert (original.name, plain.name) == ("renamed", "plain")


def test_stage_decorator_marks_edges() -> None:
    @stage(edge=True)
    def fetch(ctx: Context) -> Result[Context, Error]:
        return Success(ctx)

    assert fetch.edge


def test_as_stage_can_rename_a_named_stage() -> None:
    assert as_stage(tag("a"), "b").name == "b"


def test_each_stage_records_its_timing_in_order() -> None:
    result = pipeline(tag("a"), pipeline(tag("b"), tag("c")))(START)
    assert [name for name, _ in result.unwrap().timings] == ["a", "b", "c"]


# -- editing by name ---------------------------------------------------------------------------------

ABC = pipeline(tag("a"), tag("b"), tag("c"))


def test_without_removes_stages_by_name() -> None:
    assert ABC.without("b").names == ("a", "c")
    assert ABC.without("a", "c").names == ("b",)


def test_replace_swaps_one_stage_in_place() -> None:
    edited = ABC.replace("b", tag("x"))
    assert edited.names == ("a", "x", "c")
    assert trail(edited(START).unwrap()) == ("a", "x", "c")


def test_replace_with_a_pipeline_splices_its_stages() -> None:
    assert ABC.replace("b", pipeline(tag("x"), tag("y"))).names == ("a", "x", "y", "c")


def test_insert_before_and_after_place_a_stage_next_to_a_named_one() -> None:
    assert ABC.insert_before("b", tag("x")).names == ("a", "x", "b", "c")
    assert ABC.insert_after("b", tag("x")).names == ("a", "b", "x", "c")


def test_insert_at_the_ends() -> None:
    assert ABC.insert_before("a", tag("x")).names == ("x", "a", "b", "c")
    assert ABC.insert_after("c", tag("x")).names == ("a", "b", "c", "x")


def test_then_appends_stages() -> None:
    assert ABC.then(tag("x"), tag("y")).names == ("a", "b", "c", "x", "y")


def test_reorder_runs_the_stages_in_the_given_order() -> None:
    edited = ABC.reorder("c", "a", "b")
    assert trail(edited(START).unwrap()) == ("c", "a", "b")


@pytest.mark.parametrize("names", [("a", "b"), ("a", "b", "c", "c"), ("a", "b", "x")])
def test_reorder_requires_every_stage_exactly_once(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="exactly once"):
        ABC.reorder(*names)


def test_reorder_keeps_stages_that_share_a_name() -> None:
    first, second = NamedStage("x", tag("x1").fn), NamedStage("x", tag("x2").fn)
    edited = pipeline(first, second, tag("b")).reorder("b", "x", "x")
    assert trail(edited(START).unwrap()) == ("b", "x1", "x2")


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p.without("nope"),
        lambda p: p.replace("nope", tag("x")),
        lambda p: p.insert_before("nope", tag("x")),
        lambda p: p.insert_after("nope", tag("x")),
    ],
    ids=["without", "replace", "insert_before", "insert_after"],
)
def test_editing_an_unknown_stage_names_the_existing_ones(edit: object) -> None:
    with pytest.raises(KeyError, match="no stage named 'nope'; stages: a, b, c"):
        edit(ABC)  # type: ignore[operator]


# -- pipelines are values ----------------------------------------------------------------------------


def test_edits_return_new_pipelines_and_leave_the_original() -> None:
    ABC.without("b")
    ABC.replace("a", tag("x"))
    ABC.then(tag("y"))
    ABC.reorder("c", "b", "a")
    assert ABC.names == ("a", "b", "c")


def test_pipelines_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ABC.stages = ()  # type: ignore[misc]


def test_pipelines_built_alike_are_equal_and_hash_alike() -> None:
    a, b = tag("a"), tag("b")
    assert pipeline(a, b) == pipeline(a, b)
    assert hash(pipeline(a, b)) == hash(pipeline(a, b))


def test_pipelines_with_other_stages_differ() -> None:
    a, b = tag("a"), tag("b")
    assert pipeline(a, b) != pipeline(b, a)
    assert pipeline(a, b) != pipeline(a, optional(b))


def test_a_pipeline_is_a_stage() -> None:
    p: Pipeline = pipeline(tag("a"))
    assert p(START) == p.run(START)


# -- async -------------------------------------------------------------------------------------------


def edge_tag(name: str) -> NamedStage:
    """Like ``tag``, but an edge stage that also records the thread it ran on."""
    inner = tag(name)

    def run(ctx: Context) -> Result[Context, Error]:
        return inner(ctx).map(
            lambda out: out.with_event(
                "thread", name, main=threading.current_thread() is threading.main_thread()
            )
        )

    return NamedStage(name, run, edge=True)


@given(stage_lists)
def test_run_async_gives_the_same_result_as_run(stages: list[NamedStage]) -> None:
    p = pipeline(*stages)
    assert asyncio.run(p.run_async(START)) == p.run(START)


def test_run_async_gives_the_same_result_with_edge_stages() -> None:
    p = pipeline(tag("a"), edge_tag("fetch"), tag("b"))
    assert trail(asyncio.run(p.run_async(START)).unwrap()) == ("a", "fetch", "b")


def test_run_async_runs_edge_stages_off_the_event_loop_thread() -> None:
    result = asyncio.run(pipeline(edge_tag("fetch")).run_async(START))
    assert result.unwrap().events[0].data == {"main": False}


def test_run_async_runs_edge_stages_of_several_loads_concurrently() -> None:
    both_inside = threading.Barrier(2, timeout=30)

    def meet(ctx: Context) -> Result[Context, Error]:
        both_inside.wait()  # raises BrokenBarrierError unless the other load is in this stage too
        return Success(ctx)

    p = pipeline(NamedStage("fetch", meet, edge=True), tag("after"))

    async def both() -> list[Result[Context, Error]]:
        return list(await asyncio.gather(p.run_async(START), p.run_async(Context(source="other"))))

    first, second = asyncio.run(both())
    assert trail(first.unwrap()) == trail(second.unwrap()) == ("after",)
    assert second.unwrap().source == "other"


def test_run_async_stops_at_the_first_failure_naming_the_stage() -> None:
    result = asyncio.run(pipeline(tag("a"), edge_tag("e"), fail("broken"), tag("b")).run_async(START))
    assert result.failure().stage == "broken"
