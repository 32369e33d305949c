"""A seeded, randomized soak: many fetches of small files through random faults, on loopback only.

Every result must be the right bytes or a typed failure the fault explains, ``blobs/`` must only ever
hold verified files, and ``ckptflow cache verify`` must report the cache clean afterwards. The size and
seed come from the environment, so the suite runs a short soak and docs/reliability.md a long one:

    CKPTFLOW_SOAK_FETCHES=2000 CKPTFLOW_SOAK_SEED=7 CKPTFLOW_SOAK_REPORT=soak.json \\
        .venv/bin/pytest tests/reliability/test_soak.py -q -s
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen
from returns.result import Failure

from ckptflow.cli import main
from ckptflow.errors import ERROR_TYPES
from ckptflow.fetch import fetch
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import Faults, FaultServer
from tests.reliability.helpers import BlobAudit

FETCHES = int(os.environ.get("CKPTFLOW_SOAK_FETCHES", "150"))
SEED = int(os.environ.get("CKPTFLOW_SOAK_SEED", "7"))
REPORT = os.environ.get("CKPTFLOW_SOAK_REPORT")
FILES = 12
NEW_VERSION = 0.6  # chance that a file was replaced since it was last fetched (else a cache hit is likely)
POLICY = RetryPolicy(attempts=3, base=0.002, cap=0.01, max_retry_after=0.01)
TIMEOUT = 2.0
SLOW_TIMEOUT = 0.05
PARALLEL = {"parallel_threshold": 128 * 1024, "part_size": 64 * 1024, "max_concurrency": 4}


@frozen
class Plan:
    """One fetch of the soak: which file and fault, digest given or not, parallel parts or one stream,
    and what may come back."""

    name: str
    kind: str
    faults: Faults
    sha256: bool
    allowed: frozenset[str]
    timeout: float = TIMEOUT
    parallel: bool = False


def _plan(rng: random.Random, name: str, size: int) -> Plan:
    """Draw a fault and say which failure kinds it may end in (besides the right bytes)."""
    kind = rng.choices(
        ["none", "drop", "busy", "outage", "truncated", "wrong_bytes", "change", "ignore_range", "slow"],
        weights=[3, 4, 3, 1, 1, 2, 2, 1, 1],
    )[0]
    cut = rng.randrange(1, size)
    faults = {
        "none": Faults(),
        "drop": Faults(drop_after=cut, drop_times=rng.randint(1, 3)),
        "busy": Faults(
            fail_first=rng.randint(1, 2), fail_status=rng.choice([429, 500, 502, 503]), retry_after="0"
        ),
        "outage": Faults(fail_first=1000, fail_status=503),
        "truncated": Faults(overstate=rng.randint(1, 4096)),
        "wrong_bytes": Faults(wrong_bytes=True),
        "change": Faults(change_after=cut, changed_to=rng.randbytes(rng.randint(1, size))),
        "ignore_range": Faults(drop_after=cut, ignore_range=True),
        "slow": Faults(delay=0.2),
    }[kind]
    allowed = {
        "outage": {"network_error"},
        "truncated": {"network_error"},
        "wrong_bytes": {"checksum_mismatch"},
        "slow": {"network_error"},
    }.get(kind, set())
    return Plan(
        name=name,
        kind=kind,
        faults=faults,
        sha256=kind == "wrong_bytes" or (kind != "change" and rng.random() < 0.5),
        allowed=frozenset(allowed),
        timeout=SLOW_TIMEOUT if kind == "slow" else TIMEOUT,
        parallel=rng.random() < 0.5,
    )


class _EventCounter(logging.Handler):
    """Counts the ``ckptflow`` events logged from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "ckptflow_event", None)
        if name is not None:
            self.counts[str(name)] += 1


@contextmanager
def _counting_events() -> Iterator[Counter[str]]:
    logger = logging.getLogger("ckptflow")
    handler, level = _EventCounter(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.counts
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _check(plan: Plan, result: Any, data: bytes, cache_dir: Path) -> str | None:
    """A violation of the soak's rule, or None: right bytes, or a typed failure this fault explains."""
    if isinstance(result, Failure):
        error = result.failure()
        if not isinstance(error, ERROR_TYPES):
            return f"{plan}: untyped failure {error!r}"
        return None if error.kind in plan.allowed else f"{plan}: unexpected {error.kind}: {error.message}"
    path = result.unwrap()
    got = path.read_bytes()
    fine = {data} | ({plan.faults.changed_to} if plan.kind == "change" else set())
    if got not in fine:
        return f"{plan}: wrong bytes ({len(got)} bytes, sha256 {hashlib.sha256(got).hexdigest()[:12]})"
    if not path.is_relative_to(cache_dir):
        return f"{plan}: {path} is outside the cache"
    return None


def _soak(server: FaultServer, cache_dir: Path) -> dict[str, Any]:
    rng = random.Random(SEED)
    files = {f"f{i}.pt": rng.randbytes(rng.randint(16 * 1024, 512 * 1024)) for i in range(FILES)}
    audit = BlobAudit(cache_dir)
    faults: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    served = Counter[str]()
    violations: list[str] = []
    started = time.monotonic()
    with _counting_events() as events:
        for _ in range(FETCHES):
            name = rng.choice(sorted(files))
            if rng.random() < NEW_VERSION:
                files[name] = rng.randbytes(len(files[name]))
            data = files[name]
            plan = _plan(rng, name, len(data))
            server.reset()
            url = server.put(name, data)
            server.faults = plan.faults
            result = fetch(
                url,
                cache_dir=cache_dir,
                sha256=hashlib.sha256(data).hexdigest() if plan.sha256 else None,
                timeout=plan.timeout,
                options={"retry": POLICY, **(PARALLEL if plan.parallel else {})},
            )
            faults[plan.kind] += 1
            modes["parallel" if plan.parallel else "stream"] += 1
            outcomes[result.failure().kind if isinstance(result, Failure) else "ok"] += 1
            served.update(bytes=server.bytes_served, GET=server.count("GET"), HEAD=server.count("HEAD"))
            problem = _check(plan, result, data, cache_dir)
            if problem is not None:
                violations.append(problem)
            audit.check()
        elapsed = time.monotonic() - started
        counted = dict(events)
    server.reset()
    return {
        "seed": SEED,
        "fetches": FETCHES,
        "files": FILES,
        "new_version_chance": NEW_VERSION,
        "faults": dict(sorted(faults.items())),
        "modes": dict(sorted(modes.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "served": dict(served),
        "events": dict(sorted(counted.items())),
        "seconds": round(elapsed, 1),
        "violations": violations,
    }


@pytest.fixture(scope="module")
def soak(http_server_session: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache_dir = tmp_path_factory.mktemp("soak")
    figures = _soak(http_server_session, cache_dir)
    figures["cache_dir"] = cache_dir
    printable = {k: v for k, v in figures.items() if k != "cache_dir"}
    print("\nsoak:", json.dumps(printable, indent=1))
    if REPORT:
        Path(REPORT).write_text(json.dumps(printable, indent=1))
    return figures


@pytest.mark.slow
def test_every_fetch_is_the_right_bytes_or_a_failure_its_fault_explains(soak):
    assert soak["violations"] == []
    assert sum(soak["outcomes"].values()) == FETCHES


@pytest.mark.slow
def test_the_soak_exercised_every_fault_and_both_outcomes(soak):
    if FETCHES >= 100:
        assert set(soak["faults"]) >= {"drop", "busy", "wrong_bytes", "change", "outage", "slow"}
        assert soak["outcomes"]["ok"] > 0 and len(soak["outcomes"]) > 1
        assert soak["events"].get("fetch.retry", 0) > 0 and soak["events"].get("cache.hit", 0) > 0


@pytest.mark.slow
def test_cache_verify_reports_the_cache_clean_after_the_soak(soak, capsys):
    capsys.readouterr()
    code = main(["cache", "verify", "--cache-dir", str(soak["cache_dir"]), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["ok"] is True and report["corrupt"] == [] and report["dangling"] == []
    assert report["checked"] > 0
