"""The decision store: one SQLite row per media decision, written off the hot path.

Rows go into a bounded in-memory queue and a single writer thread commits them in batches
(WAL mode, so readers never block the writer and a crash loses no committed row). If the
database is locked, deleted or the disk is full, rows wait in memory, up to a bound, and are
written when the database works again; the proxy never waits for the disk.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

log = logging.getLogger(__name__)

TABLE = "decisions"


@dataclass
class DecisionRow:
    """What one decision leaves behind. Paths carry no query string unless configured to."""

    client: str
    child: str
    host: str
    path: str
    content_type: str
    kind: str
    bytes: int
    action: str
    rule: str
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    width: int | None = None
    height: int | None = None
    valence: float | None = None
    arousal: float | None = None
    explicit: float | None = None
    # scored | cached | skipped | host-list | error | timeout | streamed | too-large | unread
    outcome: str = "scored"
    error: str | None = None
    scorer: str | None = None
    model_width: float | None = None
    precision: str | None = None
    window: str | None = None
    calm_alpha: float | None = None
    calm_reached: bool | None = None
    after_valence: float | None = None
    after_arousal: float | None = None
    ms: float = 0.0
    uid: str | None = None  # links thumbnails and labels to the row before it has an id


_COLUMNS: dict[str, Any] = {
    "id": int, "time": str, "client": str, "child": str, "host": str, "path": str,
    "content_type": str, "kind": str, "bytes": int, "width": int, "height": int,
    "valence": float, "arousal": float, "explicit": float, "action": str, "rule": str,
    "outcome": str, "error": str, "scorer": str, "model_width": float, "precision": str,
    "window": str, "calm_alpha": float, "calm_reached": int, "after_valence": float,
    "after_arousal": float, "ms": float, "uid": str,
}  # fmt: skip

LABELS = "labels"
# A label keeps a copy of the scores it was given on, so it outlives the decision's retention.
_LABEL_COLUMNS: dict[str, Any] = {
    "id": int, "time": str, "child": str, "decision_id": int, "decision_uid": str,
    "decision_time": str, "label": str, "rating_valence": float, "rating_arousal": float,
    "valence": float, "arousal": float, "explicit": float, "action": str, "rule": str,
    "host": str, "window": str,
}  # fmt: skip


def open_database(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the decision database in WAL mode with its schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), timeout=2.0, check_same_thread=False)
    db = sqlite_utils.Database(connection)
    db.enable_wal()
    db.execute("PRAGMA synchronous=NORMAL")
    if TABLE not in db.table_names():
        db[TABLE].create(_COLUMNS, pk="id")
        db[TABLE].create_index(["time"])
        db[TABLE].create_index(["child", "time"])
    try:
        if "uid" not in db[TABLE].columns_dict:  # a database from before uids
            db[TABLE].add_column("uid", str)
        if LABELS not in db.table_names():
            db[LABELS].create(_LABEL_COLUMNS, pk="id", if_not_exists=True)
            db[LABELS].create_index(["child", "id"], if_not_exists=True)
    except sqlite3.OperationalError:  # another connection migrated it at the same moment
        pass
    return db


class DecisionStore:
    """Buffered, crash-safe writer plus the few queries the CLI and review page need."""

    def __init__(
        self,
        path: Path,
        buffer_limit: int = 10_000,
        batch_interval: float = 0.2,
    ) -> None:
        self.path = Path(path)
        self.buffer_limit = buffer_limit
        self.batch_interval = batch_interval
        self.dropped = 0
        self.last_error: str | None = None
        self._pending: deque[DecisionRow] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._db: sqlite_utils.Database | None = None
        self._thread: threading.Thread | None = None

    # -- writing -----------------------------------------------------------------------
    def start(self) -> None:
        self._connect()
        self._thread = threading.Thread(target=self._run, name="moodgate-record", daemon=True)
        self._thread.start()

    def record(self, row: DecisionRow) -> None:
        with self._lock:
            if len(self._pending) >= self.buffer_limit:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(row)
            self._idle.clear()
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every buffered row is committed; False if the database is failing."""
        self._wake.set()
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5.0)
        self._write_pending()
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def _connect(self) -> sqlite_utils.Database | None:
        if self._db is not None and self.path.exists():
            return self._db
        try:
            if self._db is not None:  # the file was deleted under us: start a fresh one
                self._db.conn.close()
            self._db = open_database(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._db = None
            self._note_error(exc)
        return self._db

    def _note_error(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != self.last_error:
            log.error("decision store unavailable (%s); %d rows buffered", message, self.backlog)
        self.last_error = message

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if not self._write_pending():
                time.sleep(self.batch_interval)  # the database is failing: retry later
            elif self.batch_interval:
                time.sleep(self.batch_interval)

    def _write_pending(self) -> bool:
        with self._lock:
            batch = list(self._pending)
        if not batch:
            self._idle.set()
            return True
        db = self._connect()
        if db is None:
            return False
        try:
            with db.conn:
                db[TABLE].insert_all((_as_record(row) for row in batch), batch_size=500)
        except (sqlite3.Error, OSError) as exc:
            self._note_error(exc)
            return False
        if self.last_error:
            log.warning("decision store recovered; wrote %d buffered rows", len(batch))
            self.last_error = None
        written = {id(row) for row in batch}
        with self._lock:
            # record() may have dropped the oldest rows while we wrote: remove exactly the
            # rows of this batch, never newer ones that were not written yet.
            while self._pending and id(self._pending[0]) in written:
                self._pending.popleft()
            if not self._pending:
                self._idle.set()
        return True

    # -- reading -----------------------------------------------------------------------
    def recent(
        self, child: str | None = None, since: timedelta | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return recent_decisions(self.path, child=child, since=since, limit=limit)

    def purge(self, older_than_days: float) -> int:
        return purge_older_than(self.path, older_than_days)


def _as_record(row: DecisionRow) -> dict[str, Any]:
    record = asdict(row)
    if record["calm_reached"] is not None:
        record["calm_reached"] = int(record["calm_reached"])
    return record


def recent_decisions(
    path: Path,
    child: str | None = None,
    since: timedelta | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Newest first."""
    if not path.exists():
        return []
    db = open_database(path)
    try:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if child:
            clauses.append("child = :child")
            params["child"] = child
        if since is not None:
            clauses.append("time >= :since")
            params["since"] = (datetime.now(UTC) - since).isoformat(timespec="milliseconds")
        rows = db[TABLE].rows_where(
            " and ".join(clauses) or None, params, order_by="id desc", limit=limit
        )
        return list(rows)
    finally:
        db.conn.close()


def decision_by_id(path: Path, decision_id: int) -> dict[str, Any] | None:
    if not path.exists():
        return None
    db = open_database(path)
    try:
        rows = list(db[TABLE].rows_where("id = ?", [decision_id]))
        return rows[0] if rows else None
    finally:
        db.conn.close()


def purge_older_than(path: Path, days: float) -> int:
    """Delete decisions older than `days`; returns how many went."""
    if not path.exists():
        return 0
    cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
    db = open_database(path)
    try:
        with db.conn:
            cursor = db.execute(f"DELETE FROM {TABLE} WHERE time < ?", [cutoff])
        return cursor.rowcount
    finally:
        db.conn.close()


def add_label(path: Path, label: dict[str, Any]) -> int:
    """Store a parent's label (see _LABEL_COLUMNS); returns its id."""
    db = open_database(path)
    try:
        with db.conn:
            record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **label}
            return int(db[LABELS].insert(record).last_pk or 0)
    finally:
        db.conn.close()


def read_labels(path: Path, child: str | None = None) -> list[dict[str, Any]]:
    """Oldest first."""
    if not path.exists():
        return []
    db = open_database(path)
    try:
        where, params = ("child = ?", [child]) if child else (None, [])
        return list(db[LABELS].rows_where(where, params, order_by="id"))
    finally:
        db.conn.close()


def count_rows(path: Path, where: str | None = None, params: Iterable[Any] = ()) -> int:
    db = open_database(path)
    try:
        return db[TABLE].count_where(where or "1", list(params))
    finally:
        db.conn.close()
