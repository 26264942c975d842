"""The decision store: WAL, buffered writes, survival of a broken database, retention."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

from moodgate.record.store import (
    DecisionRow,
    DecisionStore,
    count_rows,
    decision_by_id,
    purge_older_than,
    recent_decisions,
)


def row(**changes: object) -> DecisionRow:
    values: dict[str, object] = dict(
        client="192.168.1.23", child="mia", host="example.org", path="/a.jpg",
        content_type="image/jpeg", kind="jpeg", bytes=1234, action="pass", rule="mia/none",
    )  # fmt: skip
    values.update(changes)
    return DecisionRow(**values)  # type: ignore[arg-type]


def test_rows_are_written_in_wal_mode(tmp_path) -> None:
    store = DecisionStore(tmp_path / "d.sqlite", batch_interval=0.0)
    store.start()
    for index in range(25):
        store.record(row(path=f"/{index}.jpg", valence=0.1, arousal=-0.2, calm_reached=True))
    assert store.flush()
    store.close()
    with sqlite3.connect(tmp_path / "d.sqlite") as db:
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert db.execute("select count(*) from decisions").fetchone()[0] == 25
    newest = recent_decisions(tmp_path / "d.sqlite", child="mia", limit=1)[0]
    assert newest["path"] == "/24.jpg" and newest["calm_reached"] == 1
    assert decision_by_id(tmp_path / "d.sqlite", newest["id"])["path"] == "/24.jpg"
    assert recent_decisions(tmp_path / "d.sqlite", child="leo") == []


def test_locked_database_buffers_then_writes(tmp_path) -> None:
    path = tmp_path / "d.sqlite"
    store = DecisionStore(path, batch_interval=0.05)
    store.start()
    store.record(row())
    assert store.flush()
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("begin exclusive")
    for index in range(10):
        store.record(row(path=f"/locked-{index}.jpg"))
    assert not store.flush(timeout=3.5)  # sqlite's busy timeout is 2 s: it must give up
    assert store.last_error and store.backlog == 10
    blocker.rollback()
    blocker.close()
    assert store.flush(timeout=10)
    store.close()
    assert count_rows(path) == 11


def test_deleted_database_is_recreated(tmp_path) -> None:
    path = tmp_path / "d.sqlite"
    store = DecisionStore(path, batch_interval=0.0)
    store.start()
    store.record(row())
    assert store.flush()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")
    store.record(row(path="/after.jpg"))
    assert store.flush()
    store.close()
    assert [r["path"] for r in recent_decisions(path)] == ["/after.jpg"]


def test_buffer_is_bounded(tmp_path) -> None:
    store = DecisionStore(tmp_path / "missing-dir" / "x" / "d.sqlite", buffer_limit=5)
    for index in range(8):  # not started: nothing drains the buffer
        store.record(row(path=f"/{index}.jpg"))
    assert store.backlog == 5 and store.dropped == 3


def test_retention_purge(tmp_path) -> None:
    path = tmp_path / "d.sqlite"
    store = DecisionStore(path, batch_interval=0.0)
    store.start()
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    store.record(row(time=old))
    store.record(row())
    assert store.flush()
    store.close()
    assert purge_older_than(path, 30) == 1
    assert count_rows(path) == 1


def test_kill_minus_nine_loses_no_committed_row(tmp_path) -> None:
    path = tmp_path / "d.sqlite"
    writer = textwrap.dedent(f"""
        import sys, time
        from moodgate.record.store import DecisionRow, DecisionStore
        store = DecisionStore({str(path)!r}, batch_interval=0.0)
        store.start()
        n = 0
        while True:
            store.record(DecisionRow(client="c", child="k", host="h", path=f"/{{n}}",
                                     content_type="image/jpeg", kind="jpeg", bytes=1,
                                     action="pass", rule="r"))
            n += 1
            if n % 50 == 0:
                store.flush()
                print(n, flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    committed = 0
    for line in process.stdout:
        committed = int(line)
        if committed >= 500:
            break
    process.kill()
    process.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert db.execute("select count(*) from decisions").fetchone()[0] >= committed
