"""Retry policy and the backoff schedule: exponential backoff with full jitter, capped, honouring Retry-After.

``backoff_schedule`` is pure (the random draw is a parameter) so its laws are tested directly;
``with_retries`` is the one loop that applies it to an operation returning ``Transient`` failures.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from attrs import field, frozen, validators
from returns.result import Failure, Result, Success

from ckptflow.errors import Error, NetworkError
from ckptflow.sources.base import TransferError, Transient

__all__ = ["RetryPolicy", "backoff_ceiling", "backoff_schedule", "policy_from", "with_retries"]

T = TypeVar("T")

_MAX_EXPONENT = 64


@frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures.

    ``attempts`` bounds consecutive failed tries (a try that moved bytes forward resets the count);
    the n-th wait is a uniform draw in ``[0, min(cap, base * 2**(n-1))]``; a server's ``Retry-After``
    is waited out, but never longer than ``max_retry_after`` seconds.
    """

    attempts: int = field(default=5, validator=validators.ge(1))
    base: float = field(default=0.5, validator=validators.ge(0.0))
    cap: float = field(default=30.0, validator=validators.ge(0.0))
    max_retry_after: float = field(default=120.0, validator=validators.ge(0.0))


def backoff_ceiling(policy: RetryPolicy, attempt: int) -> float:
    """The largest jittered wait after the ``attempt``-th failure (1-based): exponential, capped."""
    exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
    return min(policy.cap, policy.base * 2.0**exponent)


def backoff_schedule(policy: RetryPolicy, attempt: int, retry_after: float | None, rng_value: float) -> float:
    """Seconds to wait after the ``attempt``-th failure, given a uniform draw ``rng_value`` in [0, 1].

    Full jitter (``rng_value * ceiling``) spreads clients apart; a ``Retry-After`` raises the wait to
    at least what the server asked for, bounded by ``policy.max_retry_after``.
    """
    jittered = min(max(rng_value, 0.0), 1.0) * backoff_ceiling(policy, attempt)
    if retry_after is None:
        return jittered
    return max(jittered, min(max(retry_after, 0.0), policy.max_retry_after))


def policy_from(options: Mapping[str, Any]) -> RetryPolicy:
    """The policy carried in ``FetchSettings.options["retry"]``, or the default one."""
    chosen = options.get("retry")
    return chosen if isinstance(chosen, RetryPolicy) else RetryPolicy()


def with_retries(
    op: Callable[[], Result[T, TransferError]],
    policy: RetryPolicy,
    *,
    what: str,
    progressed: Callable[[], bool] = lambda: False,
    on_retry: Callable[[int, Transient, float], None] = lambda attempt, failure, delay: None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> Result[T, Error]:
    """Run ``op`` until it succeeds, fails finally, or fails transiently ``policy.attempts`` times in a row.

    ``progressed()`` is asked after each transient failure: True (the try moved bytes forward) resets
    the consecutive count, so a long download over a flaky link keeps going while it makes progress.
    Exhaustion is a ``NetworkError`` naming ``what`` (which must be free of secrets) and every attempt.
    """
    total = 0
    consecutive = 0
    while True:
        total += 1
        result = op()
        match result:
            case Success(value):
                return Success(value)
            case Failure(Transient() as failure):
                consecutive = 0 if progressed() else consecutive + 1
                if consecutive >= policy.attempts:
                    return Failure(NetworkError(what=what, attempts=total, cause=failure.cause))
                delay = backoff_schedule(policy, max(consecutive, 1), failure.retry_after, rng())
                on_retry(total, failure, delay)
                sleep(delay)
            case Failure(error):
                return Failure(error)
