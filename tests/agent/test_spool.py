"""The alert spool: order, bound, persistence across reopen, thread safety."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from agent.spool import Spool, SpoolError


def test_rows_come_back_in_order_and_leave_on_remove(tmp_path):
    s = Spool(str(tmp_path / "s.sqlite3"), max_messages=10)
    for i in range(3):
        assert s.put(f"e{i}", "t/alert", f"p{i}".encode()) == 0
    rows = s.after(0, 10)
    assert [r.event_id for r in rows] == ["e0", "e1", "e2"]
    assert [r.payload for r in rows] == [b"p0", b"p1", b"p2"]
    assert [r.event_id for r in s.after(rows[0].seq, 10)] == ["e1", "e2"]
    assert s.remove(rows[1].seq) is True
    assert s.remove(rows[1].seq) is False  # already gone
    assert [r.event_id for r in s.after(0, 10)] == ["e0", "e2"]
    assert s.depth() == 2


def test_repeated_event_id_is_stored_once(tmp_path):
    s = Spool(str(tmp_path / "s.sqlite3"))
    s.put("same", "t", b"1")
    s.put("same", "t", b"2")
    assert s.depth() == 1
    assert s.get("same").payload == b"1"


def test_bound_drops_oldest_first_and_counts_across_reopen(tmp_path):
    path = str(tmp_path / "s.sqlite3")
    s = Spool(path, max_messages=5)
    dropped = sum(s.put(f"e{i}", "t", b"x") for i in range(8))
    assert dropped == 3
    assert [r.event_id for r in s.after(0, 100)] == ["e3", "e4", "e5", "e6", "e7"]
    assert s.dropped() == 3
    s.close()
    again = Spool(path, max_messages=5)
    assert again.depth() == 5 and again.dropped() == 3
    again.put("e8", "t", b"x")
    assert again.dropped() == 4
    assert again.after(0, 1)[0].event_id == "e4"


def test_rows_survive_a_reopen_with_the_same_ids(tmp_path):
    path = str(tmp_path / "state" / "spool.sqlite3")  # the folder is created
    s = Spool(path)
    s.put("keep-me", "maskwatch/door/alert", b'{"id":"keep-me"}')
    del s  # no close(): as after a crash
    rows = Spool(path).after(0, 10)
    assert [(r.event_id, r.topic, r.payload) for r in rows] == [("keep-me", "maskwatch/door/alert", b'{"id":"keep-me"}')]


def test_concurrent_put_and_remove_lose_nothing(tmp_path):
    s = Spool(str(tmp_path / "s.sqlite3"), max_messages=100000)
    n_threads, per_thread = 4, 200
    removed = []

    def producer(k: int) -> None:
        for i in range(per_thread):
            s.put(f"{k}-{i}", "t", b"x")

    def consumer(stop: threading.Event) -> None:
        last = 0
        while not stop.is_set() or s.after(last, 1):
            for row in s.after(last, 50):
                assert s.remove(row.seq)
                removed.append(row.event_id)
                last = row.seq

    stop = threading.Event()
    c = threading.Thread(target=consumer, args=(stop,))
    c.start()
    producers = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    stop.set()
    c.join()
    assert sorted(removed) == sorted(f"{k}-{i}" for k in range(n_threads) for i in range(per_thread))
    assert s.depth() == 0


def test_unusable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SpoolError, match="cannot open"):
        Spool(str(blocker / "spool.sqlite3"))
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match="garbage.sqlite3"):
        Spool(str(garbage))


def test_max_messages_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        Spool(str(tmp_path / "s.sqlite3"), max_messages=0)


def test_file_is_plain_sqlite(tmp_path):
    """Operators can inspect a stuck spool with the sqlite3 shell."""
    path = tmp_path / "s.sqlite3"
    s = Spool(str(path))
    s.put("a", "t", b"x")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT event_id FROM spool").fetchall() == [("a",)]
