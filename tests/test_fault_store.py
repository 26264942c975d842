"""The decision database under faults: locked, deleted, on a full disk, and a writer killed
with SIGKILL mid-write. The proxy keeps serving, reports the error, buffers decisions in
memory up to a bound, and writes them when the database works again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moodgate.record.store import DecisionRow, DecisionStore
from realnet import Origin, Proxy, Route


def row(i: int, path_bytes: int = 20) -> DecisionRow:
    return DecisionRow(client="10.0.0.9", child="mia", host="example.com",
                       path=f"/{i}/" + "p" * path_bytes, content_type="image/jpeg",
                       kind="jpeg", bytes=1000, action="pass", rule="mia/ok")  # fmt: skip


def count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("select count(*) from decisions").fetchone()[0])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DecisionStore]:
    store = DecisionStore(tmp_path / "decisions.sqlite", batch_interval=0.05)
    store.start()
    yield store
    store.close()


def test_locked_database_buffers_then_writes(store: DecisionStore) -> None:
    store.record(row(0))
    assert store.flush(5)
    locker = sqlite3.connect(store.path, timeout=0, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(1, 51):
            store.record(row(i))
        assert not store.flush(3)  # cannot commit while locked...
        assert store.last_error is not None and "locked" in store.last_error
        assert store.backlog == 50  # ...and nothing was lost
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.flush(15)
    assert store.last_error is None and count(store.path) == 51


def test_deleted_database_is_recreated(store: DecisionStore, tmp_path: Path) -> None:
    for i in range(10):
        store.record(row(i))
    assert store.flush(5)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)
    for i in range(10, 25):
        store.record(row(i))
    assert store.flush(10)
    assert count(store.path) == 15  # every row decided after the deletion is in the new file


def test_deleted_state_directory_is_recreated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = DecisionStore(state / "decisions.sqlite", batch_interval=0.05)
    store.start()
    try:
        store.record(row(0))
        assert store.flush(5)
        for path in state.iterdir():
            path.unlink()
        state.rmdir()
        store.record(row(1))
        assert store.flush(10)
        assert count(store.path) == 1
    finally:
        store.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that really fills up. Needs root (mount)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                             str(mountpoint)], capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write zeros until the disk is full (unbuffered, so closing cannot fail)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_buffers_up_to_a_bound_then_recovers(tiny_disk: Path) -> None:
    store = DecisionStore(tiny_disk / "decisions.sqlite", buffer_limit=300, batch_interval=0.05)
    store.start()
    try:
        store.record(row(0))
        assert store.flush(5)
        filler = fill(tiny_disk)
        # Rows of ~2 KB each: the database must grow, and cannot.
        for i in range(1, 401):
            store.record(row(i, path_bytes=2000))
        assert not store.flush(3)
        assert store.last_error is not None and "full" in store.last_error, store.last_error
        assert store.backlog == 300 and store.dropped == 100  # bounded: the oldest go first
        filler.unlink()  # the disk recovers
        assert store.flush(20), store.last_error
        assert store.last_error is None
        assert count(store.path) == 1 + 300
    finally:
        store.close()


KILL_WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_fault_store import row
from moodgate.record.store import DecisionStore
store = DecisionStore(Path(sys.argv[1]), batch_interval=0)
store.start()
i = 0
while True:
    for _ in range(25):
        store.record(row(i, path_bytes=200))
        i += 1
    if store.flush(10):
        print(i, flush=True)  # every row up to i is committed
"""


def test_kill_9_mid_write_loses_no_committed_row(tmp_path: Path) -> None:
    database = tmp_path / "decisions.sqlite"
    script = KILL_WRITER.format(tests=str(Path(__file__).parent))
    writer = subprocess.Popen([sys.executable, "-c", script, str(database)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    committed = 0
    assert writer.stdout is not None
    try:
        deadline = time.monotonic() + 60
        while committed < 2000 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            committed = int(line)
    finally:
        writer.send_signal(signal.SIGKILL)  # mid-write: it never stops writing
        writer.wait()
    assert committed >= 2000, "the writer did not get going"
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        rows = db.execute("select count(*) from decisions").fetchone()[0]
    assert rows >= committed


def test_proxy_keeps_serving_with_a_locked_database(
    tmp_path: Path, media: dict[str, bytes]
) -> None:
    routes = {"/calm.jpg": Route(media["calm.jpg"], "image/jpeg"),
              "/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg")}  # fmt: skip
    with Origin(routes) as origin, Proxy(tmp_path, extra=["--scorer", "heuristic"]) as proxy:
        assert proxy.fetch(origin.url("/calm.jpg")).status == 200
        deadline = time.monotonic() + 10
        while not proxy.database.exists() or count(proxy.database) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        locker = sqlite3.connect(proxy.database, timeout=0, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for _ in range(5):
                got = proxy.fetch(origin.url("/vivid.jpg"), timeout=10)
                assert got.status == 200 and got.header("x-moodgate").startswith("calm;")
            status: dict[str, object] = {}
            deadline = time.monotonic() + 20
            while not status.get("db_error") and time.monotonic() < deadline:
                time.sleep(0.5)
                with contextlib.suppress(OSError, ValueError):
                    status = json.loads((tmp_path / "status.json").read_text())
            assert "locked" in str(status.get("db_error")), status
            assert "decision store unavailable" in proxy.log()
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        deadline = time.monotonic() + 20
        while count(proxy.database) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(proxy.database) == 6
        assert os.stat(proxy.database).st_mode & 0o077 == 0  # created owner-only
