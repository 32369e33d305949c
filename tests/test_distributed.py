"""Specification of distributed acquisition: one download per node, the same result on every rank.

The multi-rank behaviour is observed once per module: four gloo ranks (torch.multiprocessing spawn,
``file://`` rendezvous) run the scenarios against the real fault server in this process, and each test
below checks one thing the ranks reported.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from returns.result import Failure, Success

import ckptflow
from ckptflow.context import state_equal
from ckptflow.distributed import Member, coordinate, leaders, local_rank_of, wanted
from ckptflow.errors import InvalidConfig, NotFound, StageFailed
from tests.fixtures.fault_server import Faults, FaultServer

WORLD = 4


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))


def _rank_main(rank: int, init_file: str, urls: dict[str, str], cache_dir: str, out_dir: str) -> None:
    """One rank: load with distributed=True, fetch a missing object (automatic), then a rank goes missing."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(1000 + rank)
    model = _model()
    loaded = ckptflow.load(model, urls["weights"], cache_dir=cache_dir, distributed=True)
    fetched = ckptflow.fetch(urls["weights"], cache_dir=cache_dir)
    missing = ckptflow.fetch(urls["missing"], cache_dir=cache_dir)
    if rank == 0:
        stranded: Any = None  # rank 0 never joins: the others must give up within their timeout
    else:
        stranded = ckptflow.fetch(urls["other"], cache_dir=cache_dir, options={"distributed_timeout": 3})
    outcome = {
        "loaded": loaded.map(lambda r: [e.name for e in r.events]),
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "fetched": fetched,
        "missing": missing,
        "stranded": stranded,
    }
    Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(outcome))


@pytest.fixture(scope="module")
def ranks(http_server_session: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the four ranks once; their outcomes by rank, with the checkpoint and what the server saw."""
    server = http_server_session
    server.reset()
    work = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    checkpoint = _model().state_dict()
    saved = work / "weights.pt"
    torch.save(checkpoint, saved)
    data = saved.read_bytes()
    urls = {
        "weights": server.put("weights.pt", data),
        "missing": server.url("absent.pt"),
        "other": server.put("other.pt", b"never fetched by rank 0"),
    }
    server.faults = Faults(delay=0.005)
    try:
        mp.spawn(
            _rank_main,
            args=(str(work / "rendezvous"), urls, str(work / "cache"), str(work)),
            nprocs=WORLD,
            join=True,
        )
        outcomes = [pickle.loads((work / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]
        served = {"bytes": server.bytes_served, "requests": list(server.requests)}
    finally:
        server.reset()
    return {"outcomes": outcomes, "checkpoint": checkpoint, "size": len(data), "served": served, "urls": urls}


def _requests_for(ranks: dict[str, Any], name: str, method: str) -> int:
    return sum(1 for r in ranks["served"]["requests"] if r.path == f"/{name}" and r.method == method)


@pytest.mark.slow
def test_one_rank_downloads_for_the_node(ranks):
    assert ranks["served"]["bytes"] <= 1.1 * ranks["size"]
    assert _requests_for(ranks, "weights.pt", "GET") == 1


@pytest.mark.slow
def test_every_rank_loads_identical_weights(ranks):
    for outcome in ranks["outcomes"]:
        assert isinstance(outcome["loaded"], Success)
        assert state_equal(outcome["state"], ranks["checkpoint"])


@pytest.mark.slow
def test_every_rank_gets_the_same_verified_path(ranks):
    paths = {outcome["fetched"].unwrap() for outcome in ranks["outcomes"]}
    assert len(paths) == 1
    path = paths.pop()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


@pytest.mark.slow
def test_a_missing_checkpoint_gives_every_rank_the_same_not_found(ranks):
    failures = [outcome["missing"] for outcome in ranks["outcomes"]]
    assert all(isinstance(f, Failure) and isinstance(f.failure(), NotFound) for f in failures)
    assert len({f.failure() for f in failures}) == 1
    assert _requests_for(ranks, "absent.pt", "HEAD") == 1


@pytest.mark.slow
def test_ranks_waiting_for_a_rank_that_never_comes_fail_within_their_timeout(ranks):
    for outcome in ranks["outcomes"][1:]:
        error = outcome["stranded"].failure()
        assert isinstance(error, StageFailed)
        assert "distributed_timeout" in error.message
    assert _requests_for(ranks, "other.pt", "GET") == 0


@pytest.mark.slow
def test_the_load_report_says_which_rank_downloaded(ranks):
    names = [outcome["loaded"].unwrap() for outcome in ranks["outcomes"]]
    assert "distributed.leader" in names[0]
    assert all("distributed.waiting" in n for n in names[1:])


# --- without a process group -----------------------------------------------------------------------


def test_leader_of_each_host_is_its_lowest_rank():
    members = [Member(rank=r, host=f"node{r // 2}") for r in (3, 0, 2, 1)]
    assert leaders(members) == {0: 0, 1: 0, 2: 2, 3: 2}


def test_leader_is_the_launchers_local_rank_zero_when_known():
    members = [Member(rank=0, host="h", local_rank=1), Member(rank=1, host="h", local_rank=0)]
    assert leaders(members) == {0: 1, 1: 1}


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("3", 3), ("", None), ("x", None)])
def test_local_rank_comes_from_the_launchers_environment(value, expected):
    assert local_rank_of({"LOCAL_RANK": value}) == expected


def test_without_a_process_group_fetch_is_not_distributed_by_default():
    assert wanted(None) == Success(False)


def test_asking_for_distributed_without_a_process_group_is_invalid_before_any_request(http_server, tmp_path):
    url = http_server.put("w.pt", b"weights")
    failure = ckptflow.fetch(url, cache_dir=tmp_path, distributed=True).failure()
    assert isinstance(failure, InvalidConfig)
    assert "init_process_group" in failure.message
    assert http_server.count() == 0


def test_a_single_rank_job_fetches_as_usual(http_server, tmp_path):
    url = http_server.put("w.pt", b"weights")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        assert ckptflow.fetch(url, cache_dir=tmp_path / "cache").unwrap().read_bytes() == b"weights"
    finally:
        dist.destroy_process_group()


def test_coordinate_is_a_collective_that_passes_a_world_of_one_through(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        assert coordinate(lambda offline: Success(tmp_path / f"offline={offline}")) == Success(
            tmp_path / "offline=False"
        )
    finally:
        dist.destroy_process_group()
