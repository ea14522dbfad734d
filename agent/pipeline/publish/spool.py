"""A bounded on-disk queue of alerts not yet acknowledged by the broker (SQLite, one file).

Each alert is written here before it is handed to the MQTT client and removed only when its PUBACK
arrives, so an alert survives broker outages and agent restarts (it is re-sent with the same
``event_id``: consumers de-duplicate on it). The oldest rows are dropped first beyond
``max_messages``; drops are counted in the file, so they survive restarts and show up in stats.

One connection, shared by the capture thread (``put``) and paho's network thread (``remove``),
guarded by a lock. WAL journal with ``synchronous=FULL``: ``put`` returns only after its commit is
fsynced to the WAL, so an alert that counts as spooled survives a power cut too ("NORMAL" survives
a process crash but may lose the last commits on power loss, the common failure of a Pi at a
door). A checkpoint copies the WAL into the file with its own fsyncs (SQLite's default, every
1000 pages); alerts are a few per minute, so one fsync each costs nothing that matters, even on
an SD card.

A damaged file (half-truncated, overwritten, not a database) does not stop the agent: it is moved
aside as ``<path>.corrupt-<UTC time>``, every row that can still be read is copied into a new
spool, and one warning names both files and the count (:meth:`Spool._recover`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

# SQLite's primary result codes for "the file is damaged" and "the file is not a database".
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_ROW = "seq, event_id, topic, payload"
# Beyond this many missing seqs between the readable ends, single-row lookups are not tried.
_MAX_GAP_LOOKUPS = 1_000_000


@dataclass(frozen=True)
class SpoolRow:
    """One spooled message: ``seq`` orders rows and names them in ``remove``."""

    seq: int
    event_id: str
    topic: str
    payload: bytes


class SpoolError(Exception):
    """The spool file cannot be opened or written (path, permissions, full disk)."""


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether an SQLite error means a damaged file (recoverable by moving it aside), not a
    permission, path or locking problem (which moving the file would not mend)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


class Spool:
    """Thread-safe bounded FIFO of messages keyed by a unique ``event_id``."""

    def __init__(self, path: str, max_messages: int = 10000, logger: Optional[logging.Logger] = None) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        self.path = path
        self.max_messages = max_messages
        self.log = logger or logging.getLogger("maskwatch.spool")
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if os.path.isfile(path) and os.path.getsize(path) == 0 and not os.path.exists(path + "-wal"):
                # SQLite would take it as an empty database anyway; say so, since it held no alerts.
                self.log.warning("mqtt spool %s is an empty file (0 bytes): starting a new spool there", path)
            try:
                self._db = self._open(path)
            except sqlite3.DatabaseError as exc:
                if not _is_damage(exc):
                    raise
                self._db = self._recover(exc)
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"spool {path!r}: cannot open ({exc}); check the state dir and its permissions") from None

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        """Open (creating) the spool and check it; raises sqlite3.DatabaseError on a damaged file."""
        # isolation_level=None: autocommit; explicit BEGIN where two statements must go together.
        db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit is fsynced before put() returns (see the module doc: power loss).
            db.execute("PRAGMA synchronous=FULL")
            # Reads every page once: a damage found now is recovered at start, not met at the
            # first alert. The spool is small (acknowledged rows leave it).
            (check,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            db.execute(
                "CREATE TABLE IF NOT EXISTS spool ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " event_id TEXT NOT NULL UNIQUE,"
                " topic TEXT NOT NULL,"
                " payload BLOB NOT NULL)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            db.execute("INSERT OR IGNORE INTO counters VALUES ('dropped', 0)")
        except BaseException:
            db.close()
            raise
        return db

    def _recover(self, damage: sqlite3.DatabaseError) -> sqlite3.Connection:
        """Move the damaged file aside, copy what can be read into a new spool, log it once."""
        aside = base = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        n = 1
        while os.path.exists(aside) or os.path.exists(aside + "-wal"):  # a second damage this second
            n += 1
            aside = f"{base}-{n}"
        os.replace(self.path, aside)
        # The WAL holds the latest commits: it travels with the file it belongs to. The -shm
        # index is rebuilt from the WAL by SQLite and would only mislead the new spool.
        if os.path.exists(self.path + "-wal"):
            os.replace(self.path + "-wal", aside + "-wal")
        if os.path.exists(self.path + "-shm"):
            os.remove(self.path + "-shm")
        rows, dropped = salvage(aside)
        db = self._open(self.path)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR IGNORE INTO spool (seq, event_id, topic, payload) VALUES (?, ?, ?, ?)",
                       [(r.seq, r.event_id, r.topic, sqlite3.Binary(r.payload)) for r in rows])
        db.execute("UPDATE counters SET value = ? WHERE name = 'dropped'", (dropped,))
        db.execute("COMMIT")
        self.log.warning(
            "mqtt spool %s was damaged (%s): moved it to %s and recovered %d alert(s) from it into a new"
            " spool, to be sent as usual; delete %s once you no longer need it",
            self.path, damage, aside, len(rows), aside)
        return db

    def put(self, event_id: str, topic: str, payload: bytes) -> int:
        """Append a message (a repeated ``event_id`` is ignored); returns how many of the oldest
        rows were dropped to stay within ``max_messages``. On disk (fsynced) when it returns."""
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
                    f"SELECT {_ROW} FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
                ).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path!r}: cannot read ({exc})") from None
        return [_row(r) for r in rows]

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
            r = self._db.execute(f"SELECT {_ROW} FROM spool WHERE event_id = ?", (event_id,)).fetchone()
        return _row(r) if r else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open


def _row(r: Tuple) -> SpoolRow:
    return SpoolRow(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]))


def salvage(path: str) -> Tuple[List[SpoolRow], int]:
    """Every spool row still readable in a damaged file, oldest first, and its dropped counter
    (0 when unreadable). Never raises for damage: what cannot be read is left behind. The file
    itself is not touched: a copy is read (in the same folder, removed afterwards).

    The copy ends at the last whole page: SQLite would read a cut-off page as if its missing part
    were zeros, giving rows whose payload is half zeros.
    """
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(prefix=".salvage-", dir=folder) as tmp:
        copy = os.path.join(tmp, "spool.sqlite3")
        shutil.copyfile(path, copy)
        size = os.path.getsize(copy)
        page = _page_size(copy)
        if page and size % page:
            os.truncate(copy, size - size % page)
        if os.path.exists(path + "-wal"):  # torn WAL frames fail their checksum: SQLite skips them
            shutil.copyfile(path + "-wal", copy + "-wal")
        return _salvage(copy)


def _page_size(path: str) -> int:
    """The page size an SQLite file's header states, or 0 when the header is not SQLite's."""
    with open(path, "rb") as f:
        header = f.read(18)
    if len(header) < 18 or not header.startswith(b"SQLite format 3\x00"):
        return 0
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    return size if 512 <= size <= 65536 and size & (size - 1) == 0 else 0


def _salvage(path: str) -> Tuple[List[SpoolRow], int]:
    """:func:`salvage` on a copy it may change. ``writable_schema`` makes SQLite open a file shorter
    than its header says instead of refusing it; nothing is written. Rows are read from both ends
    of the table, then one by one in the gap between (a damaged page loses its own rows only)."""
    found: dict = {}
    dropped = 0
    try:
        db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    except sqlite3.Error:
        return [], 0
    try:
        try:
            db.execute("PRAGMA writable_schema=ON")
        except sqlite3.Error:
            return [], 0
        for order in ("ASC", "DESC"):
            _scan(db, f"SELECT {_ROW} FROM spool ORDER BY seq {order}", (), found)
        low, high = _readable_range(db, found)
        if 0 < high - low <= _MAX_GAP_LOOKUPS:
            for seq in range(low + 1, high):
                if seq not in found:
                    _scan(db, f"SELECT {_ROW} FROM spool WHERE seq = ?", (seq,), found)
        try:
            dropped = int(db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0])
        except (sqlite3.Error, TypeError, ValueError):
            dropped = 0
    finally:
        db.close()
    return [found[k] for k in sorted(found)], dropped


def _scan(db: sqlite3.Connection, sql: str, args: Iterable, found: dict) -> None:
    """Add the rows a query yields to ``found`` (seq -> row) until it hits damage."""
    try:
        for r in db.execute(sql, tuple(args)):
            try:
                found[int(r[0])] = _row(r)
            except (TypeError, ValueError):
                continue  # a row whose cells no longer hold what they should
    except sqlite3.Error:
        pass


def _readable_range(db: sqlite3.Connection, found: dict) -> Tuple[int, int]:
    """(lowest, highest) seq the damaged table may hold: the rows found, widened by the
    AUTOINCREMENT counter when it is readable (rows past the readable end)."""
    low = min(found) if found else 0
    high = max(found) if found else 0
    try:
        r = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
        if r is not None:
            high = max(high, int(r[0]) + 1)
    except (sqlite3.Error, TypeError, ValueError):
        pass
    return low, high
