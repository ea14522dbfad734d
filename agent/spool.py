"""A bounded on-disk queue of alerts not yet acknowledged by the broker (SQLite, one file).

Each alert is written here before it is handed to the MQTT client and removed only when its PUBACK
arrives, so an alert survives broker outages and agent restarts (it is re-sent with the same
``event_id``: consumers de-duplicate on it). The oldest rows are dropped first beyond
``max_messages``; drops are counted in the file, so they survive restarts and show up in stats.

One connection, shared by the capture thread (``put``) and paho's network thread (``remove``),
guarded by a lock; WAL journal so a write is one fsync-light append.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import List, Optional


@dataclass(frozen=True)
class SpoolRow:
    """One spooled message: ``seq`` orders rows and names them in ``remove``."""

    seq: int
    event_id: str
    topic: str
    payload: bytes


class SpoolError(Exception):
    """The spool file cannot be opened or written (path, permissions, full disk, corrupt file)."""


class Spool:
    """Thread-safe bounded FIFO of messages keyed by a unique ``event_id``."""

    def __init__(self, path: str, max_messages: int = 10000) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        self.path = path
        self.max_messages = max_messages
        self._lock = threading.Lock()
        try:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            # isolation_level=None: autocommit; explicit BEGIN where two statements must go together.
            self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: durable against a process crash (the case we guard), cheap on SD cards.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spool ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " event_id TEXT NOT NULL UNIQUE,"
                " topic TEXT NOT NULL,"
                " payload BLOB NOT NULL)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            self._db.execute("INSERT OR IGNORE INTO counters VALUES ('dropped', 0)")
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"spool {path!r}: cannot open ({exc}); check the state dir and its permissions") from None

    def put(self, event_id: str, topic: str, payload: bytes) -> int:
        """Append a message (a repeated ``event_id`` is ignored); returns how many of the oldest
        rows were dropped to stay within ``max_messages``."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR IGNORE INTO spool (event_id, topic, payload) VALUES (?, ?, ?)",
                    (event_id, topic, sqlite3.Binary(payload)),
                )
                (depth,) = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()
                excess = max(0, depth - self.max_messages)
                if excess:
                    self._db.execute(
                        "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)", (excess,)
                    )
                    self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (excess,))
                self._db.execute("COMMIT")
                return excess
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"spool {self.path!r}: cannot write ({exc})") from None

    def after(self, seq: int, limit: int) -> List[SpoolRow]:
        """Up to ``limit`` rows with a ``seq`` greater than ``seq``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, event_id, topic, payload FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
                ).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path!r}: cannot read ({exc})") from None
        return [SpoolRow(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def remove(self, seq: int) -> bool:
        """Forget an acknowledged row; False if it was already gone (dropped or removed)."""
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path!r}: cannot write ({exc})") from None
            return cur.rowcount > 0

    def depth(self) -> int:
        """Rows waiting for an acknowledgement."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def dropped(self) -> int:
        """Rows dropped for room since the file was created."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0])

    def get(self, event_id: str) -> Optional[SpoolRow]:
        """The row of an event, if it is still waiting."""
        with self._lock:
            r = self._db.execute(
                "SELECT seq, event_id, topic, payload FROM spool WHERE event_id = ?", (event_id,)
            ).fetchone()
        return SpoolRow(r[0], r[1], r[2], bytes(r[3])) if r else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open
