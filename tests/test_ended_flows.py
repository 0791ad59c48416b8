"""Ended flows stay listable: their rows are kept in the flow table (the newest
``--keep-ended``), so lists, filters, hosts and flow screens of a finished replay
cover every flow of the file, with the cluster each ended in."""

from __future__ import annotations

import numpy as np
import pytest

import netmon.flows.table as table_mod
from netmon.core.link import FlowQuery
from netmon.core.settings import Settings
from netmon.engine.engine import Engine
from netmon.engine.link import EngineUILink
from netmon.flows.table import FlowTable
from netmon.sources.files import FileSource
from tests.conftest import captures_dir
from tests.test_engine_link import ask
from tests.test_flows import UDP, pkt


def udp_flow(table: FlowTable, n: int, ts: float) -> None:
    table.add_packets([pkt(ts, "10.0.0.1", 1000 + n, "10.0.0.2", 53, proto=UDP)])


def test_the_newest_ended_flows_are_kept_and_older_rows_reused() -> None:
    t = FlowTable(idle_timeout=5, keep_ended=3)
    for n in range(5):
        udp_flow(t, n, 100.0 + n)
    assert t.expire(200.0) == 5
    assert len(t) == 0 and t.ended.count == 3
    kept = t.views(t.queryable_slots())
    assert sorted(v.port_a for v in kept) == [1002, 1003, 1004]  # the newest three
    assert {v.end_reason for v in kept} == {"idle-timeout"}
    # A packet of a kept flow's 5-tuple starts a new flow; the kept row stays as it was.
    udp_flow(t, 4, 300.0)
    assert len(t) == 1 and t.ended.count == 3
    live = t.views(t.live_slots())[0]
    assert live.port_a == 1004 and live.first_epoch == 300.0 and not live.end_reason
    assert len(t.queryable_slots()) == 4
    t.take_finished()
    # Pushed out rows are reused: the table does not grow for kept rows past the limit.
    cap = t.cap
    for n in range(40):
        udp_flow(t, 100 + n, 400.0 + n)
        t.expire(400.0 + n + 10)
    assert t.cap == cap and t.ended.count == 3


def test_final_clusters_reach_kept_rows_only_while_they_are_theirs() -> None:
    t = FlowTable(idle_timeout=5, keep_ended=1)
    udp_flow(t, 1, 100.0)
    udp_flow(t, 2, 101.0)
    t.expire(200.0)
    (cols, _keys, _reason), = t.take_finished()
    t.final_clusters(cols["slot"], cols["flow_id"], np.array([7, 8], dtype=np.int32))
    (only,) = t.views(t.queryable_slots())
    assert only.port_a == 1002 and only.cluster_id == 8  # 1001's row is no longer kept


def test_a_big_table_frees_kept_rows_for_live_flows_before_doubling(monkeypatch) -> None:
    monkeypatch.setattr(table_mod, "ROOM_FROM_KEPT", 64)
    t = FlowTable(idle_timeout=5, keep_ended=1000, initial_capacity=64)
    for n in range(60):
        udp_flow(t, n, 100.0)
    t.expire(200.0)
    assert t.ended.count == 60
    for n in range(60):
        udp_flow(t, 1000 + n, 300.0)
    assert t.cap == 64  # room came from the oldest kept rows
    assert len(t) == 60 and t.ended.count == 4


def test_keeping_none_frees_rows_at_once() -> None:
    t = FlowTable(idle_timeout=5, keep_ended=0)
    udp_flow(t, 1, 100.0)
    t.expire(200.0)
    assert t.ended.count == 0 and not len(t.queryable_slots())


def test_a_finished_replay_lists_filters_and_opens_its_ended_flows() -> None:
    capture = captures_dir() / "04_mixed_lan_android_1kxun.pcap"
    engine = Engine(Settings(read=str(capture)), [FileSource(str(capture))], lambda s: None)
    link = EngineUILink(engine)
    engine.start()
    try:
        assert engine.join(60)
        assert engine.table.ended.count > 100  # most of the file's flows had ended
        page = ask(link.query_flows, FlowQuery(filter="proto udp"))
        assert page.total == 99 and not page.error  # every UDP flow of the file
        assert all(f.cluster_id is not None and f.cluster_id >= 0 for f in page.flows)
        assert sum(1 for f in page.flows if f.end_reason) > 50
        live_only = ask(link.query_flows, FlowQuery(filter="proto udp", ended=False))
        assert live_only.total < 30
        everything = ask(link.query_flows, FlowQuery(limit=500))
        assert everything.total == 197
        ended = next(f for f in page.flows if f.end_reason)
        assert link._flow_view(ended.flow_id) is not None  # its flow screen opens
        hosts = ask(link.query_hosts, FlowQuery(filter="proto udp"))
        assert hosts.total > 1
    finally:
        link.stop()
        engine.stop()
        assert engine.join(15)


@pytest.mark.parametrize("flag", ["--keep-ended"])
def test_keep_ended_is_a_checked_setting(flag: str) -> None:
    from tests.conftest import run_netmon

    bad = run_netmon(flag, "-5", "--json", "-r", str(captures_dir() / "01_http_espn.pcapng"))
    assert bad.returncode == 2 and "keep-ended" in bad.stderr and "Traceback" not in bad.stderr
