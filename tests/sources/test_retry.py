"""Specification of the retry policy: the backoff schedule's laws and the retry loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from ckptflow.errors import Error, NetworkError, NotFound
from ckptflow.sources.base import TransferError, Transient
from ckptflow.sources.retry import RetryPolicy, backoff_ceiling, backoff_schedule, policy_from, with_retries

policies = st.builds(
    RetryPolicy,
    attempts=st.integers(1, 20),
    base=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 600.0),
    max_retry_after=st.floats(0.0, 600.0),
)
attempts = st.integers(1, 10_000)
draws = st.floats(0.0, 1.0)
retry_afters = st.none() | st.floats(-10.0, 10_000.0)


@given(policies, attempts, retry_afters, draws)
def test_delay_is_never_negative_and_never_beyond_the_cap_or_the_bounded_retry_after(policy, n, after, u):
    delay = backoff_schedule(policy, n, after, u)
    bound = max(policy.cap, min(after, policy.max_retry_after) if after is not None else 0.0)
    assert 0.0 <= delay <= bound


@given(policies, attempts)
def test_ceiling_grows_monotonically_with_the_attempt_and_stays_capped(policy, n):
    assert backoff_ceiling(policy, n) <= backoff_ceiling(policy, n + 1) <= policy.cap


@given(policies, attempts, st.floats(0.0, 10_000.0), draws)
def test_retry_after_is_waited_out_up_to_the_policy_bound(policy, n, after, u):
    assert backoff_schedule(policy, n, after, u) >= min(after, policy.max_retry_after)


@given(policies, attempts)
def test_full_jitter_spans_zero_to_the_ceiling(policy, n):
    assert backoff_schedule(policy, n, None, 0.0) == 0.0
    assert backoff_schedule(policy, n, None, 1.0) == backoff_ceiling(policy, n)


def test_ceiling_doubles_from_the_base():
    policy = RetryPolicy(base=0.5, cap=100.0)
    assert [backoff_ceiling(policy, n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_policy_rejects_zero_attempts():
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_policy_from_options_uses_the_given_policy_or_the_default():
    chosen = RetryPolicy(attempts=2)
    assert policy_from({"retry": chosen}) is chosen
    assert policy_from({}) == RetryPolicy()


class Script:
    """An operation answering from a list of results, counting calls."""

    def __init__(self, *results: Result[int, TransferError]) -> None:
        self.results = list(results)
        self.calls = 0

    def __call__(self) -> Result[int, TransferError]:
        self.calls += 1
        return self.results.pop(0)


def run(script: Script, policy: RetryPolicy, **kw: object) -> tuple[Result[int, Error], list[float]]:
    slept: list[float] = []
    result = with_retries(script, policy, what="obj", sleep=slept.append, rng=lambda: 1.0, **kw)  # type: ignore[arg-type]
    return result, slept


def test_success_after_transient_failures_sleeps_the_scheduled_delays():
    policy = RetryPolicy(attempts=5, base=1.0, cap=3.0)
    script = Script(Failure(Transient(cause="a")), Failure(Transient(cause="b")), Success(7))
    result, slept = run(script, policy)
    assert result == Success(7)
    assert slept == [1.0, 2.0]


def test_final_failure_is_returned_without_retrying():
    script = Script(Failure(NotFound(what="obj")))
    result, slept = run(script, RetryPolicy())
    assert result == Failure(NotFound(what="obj"))
    assert script.calls == 1 and slept == []


def test_exhaustion_is_a_network_error_counting_every_attempt_and_naming_the_last_cause():
    script = Script(*[Failure(Transient(cause=f"try {i}")) for i in range(3)])
    result, slept = run(script, RetryPolicy(attempts=3, base=0.0))
    assert result == Failure(NetworkError(what="obj", attempts=3, cause="try 2"))
    assert len(slept) == 2


def test_retry_after_from_the_failure_raises_the_wait():
    script = Script(Failure(Transient(cause="busy", retry_after=7.0)), Success(1))
    _, slept = run(script, RetryPolicy(base=0.1, cap=0.2))
    assert slept == [7.0]


def test_progress_resets_the_consecutive_failure_count():
    script = Script(*[Failure(Transient(cause="drop")) for _ in range(4)], Success(3))
    result, _ = run(script, RetryPolicy(attempts=2, base=0.0), progressed=lambda: True)
    assert result == Success(3)
    assert script.calls == 5


def test_on_retry_is_told_each_attempt_failure_and_delay():
    seen: list[tuple[int, str, float]] = []
    script = Script(Failure(Transient(cause="x")), Success(1))
    run(script, RetryPolicy(base=2.0), on_retry=lambda n, f, d: seen.append((n, f.cause, d)))
    assert seen == [(1, "x", 2.0)]
