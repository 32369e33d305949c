"""Specification of events: what happened during a load is in the report and in the ``ckptflow`` log."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch

import ckptflow
from ckptflow.context import Event, LoadReport, SkippedKey
from ckptflow.events import announce, collect, emit, skipped_key_events
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import Faults, FaultServer

FAST = {"retry": RetryPolicy(base=0.01, cap=0.05)}


def _records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "ckptflow_event", None) == name]


# --- emit / collect / announce ---------------------------------------------------------------------


def test_an_emitted_event_is_logged_with_its_name_and_data(caplog):
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        emit("cache.hit", stage="fetch", identity="s3://b/k")
    (record,) = _records(caplog, "cache.hit")
    assert record.ckptflow_data == {"identity": "s3://b/k"}
    assert record.ckptflow_stage == "fetch"
    assert record.name == "ckptflow"


def test_collect_gathers_the_events_emitted_inside_it_in_order():
    with collect() as outer:
        emit("a")
        with collect() as inner:
            emit("b")
        emit("c")
    assert [e.name for e in outer.events] == ["a", "b", "c"]
    assert [e.name for e in inner.events] == ["b"]


def test_collect_sees_nothing_emitted_by_another_thread():
    with collect() as seen:
        worker = threading.Thread(target=emit, args=("elsewhere",))
        worker.start()
        worker.join()
    assert seen.events == ()


def test_skipped_keys_become_one_event_each_with_the_reason():
    events = skipped_key_events([SkippedKey("head.weight", "shape mismatch: ckpt (10, 4) vs model (3, 4)")])
    assert events == (
        Event(
            "load.skipped_key",
            {"key": "head.weight", "reason": "shape mismatch: ckpt (10, 4) vs model (3, 4)"},
            "apply",
        ),
    )


def test_announce_logs_each_event_once_and_adds_the_skipped_keys(caplog):
    live = Event("fetch.started", {"identity": "x"})
    recorded = Event("plan.made", {"strategy": "transfer_learning"}, "plan")
    report = LoadReport(
        strategy="transfer_learning", skipped=(SkippedKey("k", "not in model"),), events=(live, recorded)
    )
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        out = announce(report, logged=(live,))
    assert [e.name for e in out.events] == ["fetch.started", "plan.made", "load.skipped_key"]
    assert [r.ckptflow_event for r in caplog.records] == ["plan.made", "load.skipped_key"]
    assert report.events == (live, recorded)


# --- what a user sees after a load -----------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, classes)


@pytest.fixture
def served_checkpoint(http_server: FaultServer, tmp_path: Path) -> str:
    path = tmp_path / "net.pt"
    torch.save(Net(10).state_dict(), path)
    return http_server.put("net.pt", path.read_bytes())


def test_the_report_of_a_load_holds_the_fetch_events(served_checkpoint, http_server, tmp_path):
    http_server.faults = Faults(fail_first=2, fail_status=503, retry_after="0")
    report = ckptflow.load(
        Net(10), served_checkpoint, cache_dir=tmp_path / "cache", source_options=FAST
    ).unwrap()
    names = [e.name for e in report.events]
    assert names.count("fetch.retry") == 2
    assert names.index("fetch.started") < names.index("fetch.done") < names.index("checkpoint.read")


def test_a_second_load_reports_a_cache_hit(served_checkpoint, tmp_path):
    ckptflow.load(Net(10), served_checkpoint, cache_dir=tmp_path / "cache", source_options=FAST).unwrap()
    report = ckptflow.load(Net(10), served_checkpoint, cache_dir=tmp_path / "cache").unwrap()
    names = [e.name for e in report.events]
    assert "cache.hit" in names and "fetch.started" not in names


def test_a_resumed_fetch_is_in_the_report_with_its_offset(http_server, tmp_path):
    data = bytes(range(256)) * 8192
    url = http_server.put("big.bin", data)
    http_server.faults = Faults(drop_after=1 << 20, fail_from=2)
    ckptflow.fetch(url, cache_dir=tmp_path, options={"retry": RetryPolicy(attempts=1)})
    http_server.faults = Faults()
    with collect() as seen:
        ckptflow.fetch(url, cache_dir=tmp_path).unwrap()
    (resumed,) = [e for e in seen.events if e.name == "fetch.resumed"]
    assert resumed.data["offset"] == 1 << 20


def test_every_skipped_key_is_an_event_in_the_report_and_the_log(served_checkpoint, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        report = ckptflow.load(
            Net(3), served_checkpoint, strategy="transfer_learning", cache_dir=tmp_path, source_options=FAST
        ).unwrap()
    skipped = {e.data["key"]: e.data["reason"] for e in report.events if e.name == "load.skipped_key"}
    assert skipped == {s.key: s.reason for s in report.skipped}
    assert set(skipped) == {"head.weight", "head.bias"}
    assert "shape mismatch" in skipped["head.weight"]
    logged = {r.ckptflow_data["key"] for r in _records(caplog, "load.skipped_key")}
    assert logged == set(skipped)


def test_every_event_of_a_load_is_logged_exactly_once(served_checkpoint, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ckptflow"):
        report = ckptflow.load(Net(10), served_checkpoint, cache_dir=tmp_path, source_options=FAST).unwrap()
    logged = [r.ckptflow_event for r in caplog.records if hasattr(r, "ckptflow_event")]
    assert sorted(logged) == sorted(e.name for e in report.events)
