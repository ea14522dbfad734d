"""The alert spool: order, bound, persistence across reopen, thread safety, damaged files."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict

import pytest

from agent.pipeline.publish.spool import Spool, SpoolError


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
    locked = tmp_path / "locked"
    locked.mkdir()
    Spool(str(locked / "spool.sqlite3")).close()
    locked.chmod(0o500)  # the file is fine, the folder refuses writes: not a damage to recover from
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions do not apply")
        (locked / "spool.sqlite3").chmod(0o400)
        with pytest.raises(SpoolError, match="permissions"):
            Spool(str(locked / "spool.sqlite3")).put("a", "t", b"x")
    finally:
        locked.chmod(0o700)


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


# -- damaged files: moved aside, readable rows recovered, one warning ----------------------------

def _filled(path: Path, n: int) -> Dict[str, bytes]:
    """A closed spool of ``n`` rows with distinct payloads (about 1.5 MB for 3000 rows)."""
    s = Spool(str(path), max_messages=100000)
    rows = {f"e{i}": f"payload-{i}-".encode() * 20 for i in range(n)}
    for event_id, payload in rows.items():
        s.put(event_id, "maskwatch/door/alert", payload)
    s.close()  # checkpoints the WAL into the file: the damage below hits the rows themselves
    assert not os.path.exists(str(path) + "-wal") or os.path.getsize(str(path) + "-wal") == 0
    return rows


def _aside(path: Path) -> Path:
    found = sorted(path.parent.glob(path.name + ".corrupt-*"))
    assert len(found) == 1, found
    return found[0]


def _recovery_warning(caplog, path: Path) -> str:
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1, lines  # said once
    assert str(path) in lines[0] and str(_aside(path)) in lines[0]
    return lines[0]


def test_half_truncated_spool_is_moved_aside_and_its_readable_rows_recovered(tmp_path, caplog):
    path = tmp_path / "mqtt-spool.sqlite3"
    rows = _filled(path, 3000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a half-written copy, a cut power supply
    caplog.set_level(logging.INFO)
    s = Spool(str(path))
    got = s.after(0, 100000)
    # Roughly the rows in the surviving half come back, intact and in their order.
    assert 1000 <= len(got) < 3000
    assert all(r.payload == rows[r.event_id] and r.topic == "maskwatch/door/alert" for r in got)
    assert [int(r.event_id[1:]) for r in got] == sorted(int(r.event_id[1:]) for r in got)
    line = _recovery_warning(caplog, path)
    assert f"recovered {len(got)} alert(s)" in line
    # The damaged file is kept as it was found; the new spool works as usual.
    assert _aside(path).read_bytes() == data[: len(data) // 2]
    s.put("new", "t", b"x")
    assert s.remove(got[0].seq) and s.depth() == len(got)
    s.close()
    assert Spool(str(path)).depth() == len(got)  # a sound file now: no second recovery
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_overwritten_pages_lose_only_their_own_rows(tmp_path, caplog):
    path = tmp_path / "s.sqlite3"
    rows = _filled(path, 3000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 3 * 4096] = os.urandom(3 * 4096)  # three pages of noise
    path.write_bytes(bytes(data))
    caplog.set_level(logging.INFO)
    got = Spool(str(path)).after(0, 100000)
    assert len(got) >= 2900  # rows on both sides of the damage
    assert {r.event_id for r in got} >= {"e0", "e2999"}
    assert all(r.payload == rows[r.event_id] for r in got)
    assert f"recovered {len(got)} alert(s)" in _recovery_warning(caplog, path)


def test_garbage_spool_is_moved_aside_and_a_new_one_works(tmp_path, caplog):
    path = tmp_path / "mqtt-spool.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    caplog.set_level(logging.INFO)
    s = Spool(str(path))
    assert s.depth() == 0 and s.dropped() == 0
    s.put("a", "t", b"x")
    assert [r.event_id for r in s.after(0, 10)] == ["a"]
    line = _recovery_warning(caplog, path)
    assert "recovered 0 alert(s)" in line and "not a database" in line
    assert _aside(path).read_bytes() == b"this is not a database" * 100


def test_damaged_spool_keeps_its_dropped_count(tmp_path, caplog):
    path = tmp_path / "s.sqlite3"
    s = Spool(str(path), max_messages=2000)
    for i in range(2500):
        s.put(f"e{i}", "t", b"y" * 400)
    s.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    again = Spool(str(path), max_messages=2000)
    assert again.dropped() == 500 and 0 < again.depth() < 2000


def test_zero_byte_spool_is_a_new_spool_said_once(tmp_path, caplog):
    path = tmp_path / "mqtt-spool.sqlite3"
    path.write_bytes(b"")
    caplog.set_level(logging.INFO)
    s = Spool(str(path))
    s.put("a", "t", b"x")
    s.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "0 bytes" in lines[0] and str(path) in lines[0]
    assert not list(tmp_path.glob("*.corrupt-*"))  # nothing to keep aside
    assert Spool(str(path)).depth() == 1
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


# -- durability: a put that returned is on disk ------------------------------------------------

BURST = """
import sys
sys.path.insert(0, sys.argv[2])
from agent.pipeline.publish.spool import Spool
s = Spool(sys.argv[1], max_messages=10**6)
i = 0
while True:
    s.put(f"e{i}", "maskwatch/door/alert", (f"payload-{i}-" * 30).encode())
    print(i, flush=True)  # after put() returned: this alert counts as spooled
    i += 1
"""


def _burst(path: Path) -> subprocess.Popen:
    """A child that spools alerts as fast as it can, printing each id once put() returned."""
    repo = str(Path(__file__).resolve().parents[4])
    return subprocess.Popen([sys.executable, "-c", BURST, str(path), repo], stdout=subprocess.PIPE, text=True)


def _intact(rows) -> bool:
    return all(r.payload == (f"payload-{r.event_id[1:]}-" * 30).encode() for r in rows)


def test_every_put_is_fsynced_full_in_wal_mode(tmp_path):
    s = Spool(str(tmp_path / "s.sqlite3"))
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the WAL is fsynced at each commit


def test_kill_9_during_a_burst_keeps_every_alert_that_was_spooled(tmp_path, caplog):
    path = tmp_path / "mqtt-spool.sqlite3"
    child = _burst(path)
    printed = []
    for line in child.stdout:
        printed.append(int(line))
        if len(printed) >= 300:
            break
    child.send_signal(signal.SIGKILL)  # in the middle of the next transaction
    rest, _ = child.communicate(timeout=10)
    printed += [int(v) for v in rest.split()]
    caplog.set_level(logging.INFO)
    s = Spool(str(path))
    ids = {r.event_id for r in s.after(0, 10**6)}
    assert {f"e{i}" for i in printed} <= ids  # nothing that counted as spooled is lost
    assert len(ids) <= len(printed) + 1 and _intact(s.after(0, 10**6))
    assert s._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not caplog.records  # a sound file: no recovery, nothing to say


def test_copies_taken_mid_write_open_with_intact_rows(tmp_path, caplog):
    """What a disk holds when the power goes is some state of the files mid-write: copies taken
    while a burst writes (the WAL first, then the file) must open, recovering if they need to,
    and every row they give must be whole."""
    path = tmp_path / "mqtt-spool.sqlite3"
    child = _burst(path)
    copies = []
    try:
        for n, line in enumerate(child.stdout):
            if n and n % 150 == 0:
                copy = tmp_path / f"copy{n}" / "mqtt-spool.sqlite3"
                copy.parent.mkdir()
                if os.path.exists(f"{path}-wal"):
                    shutil.copyfile(f"{path}-wal", f"{copy}-wal")
                shutil.copyfile(path, copy)
                copies.append(copy)
            if len(copies) == 5:
                break
    finally:
        child.kill()
        child.communicate(timeout=10)
    caplog.set_level(logging.INFO)
    for copy in copies:
        rows = Spool(str(copy)).after(0, 10**6)
        assert rows and _intact(rows), copy
