"""Specification of the parallel-part pieces: the plan, the knobs, the ledger and the in-order hasher."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptflow.errors import InvalidConfig
from ckptflow.sources.base import ObjectInfo
from ckptflow.sources.parts import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PART_SIZE,
    DEFAULT_THRESHOLD,
    MIN_PART_SIZE,
    Ledger,
    ParallelSettings,
    Part,
    PrefixHasher,
    connection_pool_size,
    contiguous_prefix,
    ledger_path,
    parallel_settings,
    parts_within,
    plan_parts,
    read_ledger,
    record_part,
    remove_ledger,
    wants_parallel,
    write_ledger,
)

MiB = 1 << 20
BIG = ObjectInfo(identity="http://h/w.pt", size=256 * MiB, version='"v1"')

# --- the plan ---------------------------------------------------------------------------------------


@given(size=st.integers(0, 10**12), count=st.integers(1, 2000))
def test_parts_cover_the_object_in_order_without_gaps_or_overlaps(size, count):
    part_size = max(1, -(-size // count))
    parts = plan_parts(size, part_size)
    assert [p.index for p in parts] == list(range(len(parts)))
    assert [p.start for p in parts] == [0, *(p.end for p in parts[:-1])][: len(parts)]
    assert (parts[-1].end if parts else 0) == size
    assert all(0 < p.length <= part_size for p in parts)
    assert all(p.length == part_size for p in parts[:-1])


def test_a_non_positive_part_size_is_a_programming_error():
    with pytest.raises(ValueError, match="part_size"):
        plan_parts(10, 0)


@given(size=st.integers(1, 10**9), count=st.integers(1, 300), data=st.data())
def test_the_contiguous_prefix_stops_at_the_first_missing_part(size, count, data):
    parts = plan_parts(size, -(-size // count))
    done = data.draw(st.sets(st.sampled_from([p.index for p in parts])))
    prefix = contiguous_prefix(parts, done)
    covered = [p for p in parts if p.end <= prefix]
    assert all(p.index in done for p in covered)
    assert prefix == size or parts[len(covered)].index not in done


@given(size=st.integers(1, 10**9), count=st.integers(1, 300), prefix=st.integers(0, 10**9))
def test_parts_within_a_prefix_are_exactly_those_ending_inside_it(size, count, prefix):
    parts = plan_parts(size, -(-size // count))
    inside = parts_within(parts, prefix)
    assert inside == {p.index for p in parts if p.end <= prefix}
    assert contiguous_prefix(parts, inside) <= max(prefix, 0)


# --- the knobs --------------------------------------------------------------------------------------


def test_defaults_are_64_mib_threshold_32_mib_parts_8_at_a_time():
    chosen = parallel_settings({}).unwrap()
    assert chosen == ParallelSettings()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_core = max(2, min(8, 2 * cores))
    assert (chosen.threshold, chosen.part_size, chosen.max_concurrency) == (64 * MiB, 32 * MiB, per_core)
    assert (64 * MiB, 32 * MiB, per_core) == (DEFAULT_THRESHOLD, DEFAULT_PART_SIZE, DEFAULT_MAX_CONCURRENCY)


def test_options_override_each_knob():
    chosen = parallel_settings({"parallel_threshold": 0, "part_size": MIN_PART_SIZE, "max_concurrency": 3})
    assert chosen.unwrap() == ParallelSettings(threshold=0, part_size=MIN_PART_SIZE, max_concurrency=3)


def test_every_bad_knob_is_reported_at_once_with_its_name():
    failure = parallel_settings({"part_size": 1, "max_concurrency": 0, "parallel_threshold": "big"}).failure()
    assert isinstance(failure, InvalidConfig)
    text = " ".join(failure.problems)
    assert len(failure.problems) == 3
    assert "options.part_size" in text and "options.max_concurrency" in text
    assert "options.parallel_threshold" in text


def test_concurrency_is_bounded():
    assert isinstance(parallel_settings({"max_concurrency": 1000}).failure(), InvalidConfig)
    assert isinstance(parallel_settings({"max_concurrency": True}).failure(), InvalidConfig)


def test_a_client_pool_holds_at_least_one_connection_per_concurrent_part():
    assert connection_pool_size({"max_concurrency": 32}) >= 32
    assert connection_pool_size({}) >= DEFAULT_MAX_CONCURRENCY
    assert connection_pool_size({"max_concurrency": "bad"}) >= DEFAULT_MAX_CONCURRENCY


def test_a_large_pinned_ranged_object_goes_parallel():
    assert wants_parallel(BIG, ParallelSettings())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"size": 63 * MiB}, "under the threshold"),
        ({"size": None}, "unknown size"),
        ({"supports_range": False}, "no ranges"),
        ({"version": None}, "nothing pins the content"),
    ],
)
def test_objects_that_cannot_be_split_safely_go_in_one_stream(change, why):
    import attrs

    assert not wants_parallel(attrs.evolve(BIG, **change), ParallelSettings()), why


def test_an_immutable_object_without_a_version_still_goes_parallel():
    import attrs

    assert wants_parallel(attrs.evolve(BIG, version=None, immutable=True), ParallelSettings())


def test_one_part_or_one_connection_is_not_parallel():
    assert not wants_parallel(BIG, ParallelSettings(part_size=BIG.size or 0))
    assert not wants_parallel(BIG, ParallelSettings(max_concurrency=1))


# --- the ledger -------------------------------------------------------------------------------------


def test_the_ledger_sits_beside_the_part_file(tmp_path):
    assert ledger_path(tmp_path / "abc.part") == tmp_path / "abc.parts"


def test_a_ledger_round_trips_with_appended_parts(tmp_path):
    path = tmp_path / "k.parts"
    write_ledger(path, Ledger(size=1000, version='"e"', part_size=100, done=frozenset({0, 3})))
    record_part(path, 5)
    record_part(path, 1)
    assert read_ledger(path) == Ledger(size=1000, version='"e"', part_size=100, done=frozenset({0, 1, 3, 5}))


def test_only_whole_lines_count_so_a_torn_append_is_ignored(tmp_path):
    path = tmp_path / "k.parts"
    write_ledger(path, Ledger(size=1000, version=None, part_size=100, done=frozenset({2})))
    with path.open("a", encoding="utf-8") as f:
        f.write("4")  # "42\n" cut off by a crash must not claim part 4
    ledger = read_ledger(path)
    assert ledger is not None and ledger.done == {2}


def test_indices_beyond_the_last_part_and_junk_lines_are_ignored(tmp_path):
    path = tmp_path / "k.parts"
    write_ledger(path, Ledger(size=1000, version=None, part_size=100, done=frozenset({2})))
    with path.open("a", encoding="utf-8") as f:
        f.write("10\nx7\n9\n")
    ledger = read_ledger(path)
    assert ledger is not None and ledger.done == {2, 9}


@pytest.mark.parametrize(
    "text", ["", "not json\n1\n", '{"size": 10}\n', '{"size": -1, "version": null, "part_size": 4}']
)
def test_an_unreadable_ledger_is_no_ledger(tmp_path, text):
    path = tmp_path / "k.parts"
    path.write_text(text, encoding="utf-8")
    assert read_ledger(path) is None


def test_a_missing_ledger_is_none_and_removing_it_twice_is_fine(tmp_path):
    path = tmp_path / "k.parts"
    assert read_ledger(path) is None
    remove_ledger(path)
    write_ledger(path, Ledger(size=1, version=None, part_size=1))
    remove_ledger(path)
    assert not path.exists()


# --- the in-order hasher ----------------------------------------------------------------------------


def _write_out_of_order(
    data: bytes, part_size: int, chunk: int, order_seed: int, done: set[int]
) -> tuple[str, PrefixHasher]:
    """Write ``data`` part by part in a shuffled order (chunks in order inside a part), then hash."""
    parts = plan_parts(len(data), part_size)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.part"
        path.write_bytes(bytes(len(data)))
        fd = os.open(path, os.O_RDWR)
        try:
            for part in parts:
                if part.index in done:
                    os.pwrite(fd, data[part.start : part.end], part.start)
            hasher = PrefixHasher(digest.update, fd, parts, done, handoff=2 * chunk)
            todo = [p for p in parts if p.index not in done]
            random.Random(order_seed).shuffle(todo)
            for part in todo:
                for offset in range(part.start, part.end, chunk):
                    piece = data[offset : min(part.end, offset + chunk)]
                    os.pwrite(fd, piece, offset)
                    hasher.wrote(part, offset, piece)
            hasher.close()
            assert hasher.follow() == len(data)
            return digest.hexdigest(), hasher
        finally:
            os.close(fd)


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=4000),
    part_size=st.integers(1, 700),
    chunk=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    done_fraction=st.floats(0, 1),
)
def test_the_digest_of_parts_written_in_any_order_is_the_digest_of_the_file(
    data, part_size, chunk, seed, done_fraction
):
    parts = plan_parts(len(data), part_size)
    done = {p.index for p in parts if random.Random(seed + p.index).random() < done_fraction}
    digest, hasher = _write_out_of_order(data, part_size, chunk, seed, done)
    assert digest == hashlib.sha256(data).hexdigest()
    assert hasher.read_back + hasher.in_memory == len(data)


def test_chunks_written_where_the_hash_continues_are_hashed_from_memory(tmp_path):
    data = os.urandom(50_000)
    parts = plan_parts(len(data), 10_000)
    digest = hashlib.sha256()
    path = tmp_path / "f.part"
    path.write_bytes(bytes(len(data)))
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = PrefixHasher(digest.update, fd, parts, (), handoff=len(data))
        for part in parts:
            for offset in range(part.start, part.end, 1000):
                piece = data[offset : offset + 1000]
                os.pwrite(fd, piece, offset)
                hasher.wrote(part, offset, piece)
        hasher.close()
        assert hasher.follow() == len(data)
    finally:
        os.close(fd)
    assert (hasher.in_memory, hasher.read_back) == (len(data), 0)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_handed_over_bytes_are_bounded_and_the_rest_is_read_back(tmp_path):
    data = os.urandom(50_000)
    digest, hasher = _write_out_of_order(data, 10_000, 1000, 0, set())
    assert digest == hashlib.sha256(data).hexdigest()
    assert hasher.read_back > 0 and hasher.in_memory <= 2 * 1000


def test_parts_already_done_are_read_back_once(tmp_path):
    data = os.urandom(50_000)
    digest, hasher = _write_out_of_order(data, 10_000, 1000, 0, {0, 1})
    assert digest == hashlib.sha256(data).hexdigest()
    assert hasher.read_back + hasher.in_memory == len(data)
    assert hasher.read_back >= 20_000


def test_follow_returns_at_the_first_gap_once_closed(tmp_path):
    parts = plan_parts(30, 10)
    path = tmp_path / "f.part"
    path.write_bytes(bytes(30))
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = PrefixHasher(hashlib.sha256().update, fd, parts, {0, 2})
        hasher.close()
        assert hasher.follow() == 10
    finally:
        os.close(fd)


def test_concurrent_writers_and_a_following_hasher_produce_the_file_digest(tmp_path):
    data = os.urandom(2_000_000)
    parts = plan_parts(len(data), 150_000)
    path = tmp_path / "f.part"
    path.write_bytes(bytes(len(data)))
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = PrefixHasher(digest.update, fd, parts, (), handoff=50_000)

        def write(part: Part) -> None:
            for offset in range(part.start, part.end, 7_000):
                piece = data[offset : min(part.end, offset + 7_000)]
                os.pwrite(fd, piece, offset)
                hasher.wrote(part, offset, piece)

        writers = [threading.Thread(target=write, args=(p,)) for p in reversed(parts)]

        def close_when_written() -> None:
            for t in writers:
                t.join()
            hasher.close()

        closer = threading.Thread(target=close_when_written)
        for t in [*writers, closer]:
            t.start()
        frontier = hasher.follow()
        closer.join()
    finally:
        os.close(fd)
    assert frontier == len(data)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
