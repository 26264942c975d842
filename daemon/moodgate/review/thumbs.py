"""Small JPEG thumbnails of calmed and blocked items, for the review feed.

Only calm and block verdicts get one (before, and after for a calm), at most 128 px on the
long side, written by one background thread so the proxy's hot path only queues bytes.
Files live in ``state_dir/thumbs/<uid>.<before|after>.jpg`` keyed by the decision's uid and
go when the retention period is over.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from moodgate.media import MediaError
from moodgate.media.image import frames_for_scoring

log = logging.getLogger(__name__)

THUMB_SIZE = 128
SIDES = ("before", "after")
_UID = re.compile(r"^[0-9a-f]{32}$")


def thumbs_dir(state_dir: Path) -> Path:
    return state_dir / "thumbs"


def make_thumbnail(data: bytes, size: int = THUMB_SIZE) -> bytes | None:
    """A ≤ size px JPEG of the first frame, or None when the bytes do not decode.

    Decoded through the media room's safe path (draft mode, pixel and frame limits), so a
    blocked decompression bomb costs nothing here either.
    """
    try:
        _, frames = frames_for_scoring(data, size=size, max_frames=1)
    except MediaError:
        return None
    image = Image.fromarray(frames[0])
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=75)
    return out.getvalue()


class ThumbnailStore:
    """Thumbnail files by decision uid."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, uid: str, side: str) -> Path | None:
        if not _UID.match(uid) or side not in SIDES:
            return None  # never build a path from untrusted text
        return self.directory / f"{uid}.{side}.jpg"

    def read(self, uid: str, side: str) -> bytes | None:
        path = self.path(uid, side)
        try:
            return path.read_bytes() if path else None
        except OSError:
            return None

    def has(self, uid: str, side: str) -> bool:
        path = self.path(uid, side)
        return bool(path and path.exists())

    def save(self, uid: str, before: bytes | None, after: bytes | None = None) -> int:
        """Thumbnail and write; returns how many files were written."""
        written = 0
        for side, data in (("before", before), ("after", after)):
            path = self.path(uid, side)
            thumb = make_thumbnail(data) if data and path else None
            if thumb is None or path is None:
                continue
            # What the children were shown: private to the daemon's user, like the database.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(thumb)
            tmp.replace(path)
            written += 1
        return written

    def purge(self, older_than_days: float) -> int:
        if not self.directory.exists():
            return 0
        cutoff = time.time() - older_than_days * 86400.0
        removed = 0
        for path in self.directory.glob("*.jpg"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed


class ThumbnailWriter:
    """Queues thumbnail jobs for one background thread; drops work rather than lag behind."""

    def __init__(self, store: ThumbnailStore, max_pending: int = 64) -> None:
        self.store = store
        self.max_pending = max_pending
        self.dropped = 0
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="moodgate-thumbs")

    def submit(self, uid: str, before: bytes | None, after: bytes | None = None) -> bool:
        with self._lock:
            if self._pending >= self.max_pending:
                self.dropped += 1
                return False
            self._pending += 1
        self._executor.submit(self._save, uid, before, after)
        return True

    def _save(self, uid: str, before: bytes | None, after: bytes | None) -> None:
        try:
            self.store.save(uid, before, after)
        except OSError as exc:  # a full disk must not take the filter down
            log.warning("thumbnail for %s not stored: %s", uid, exc)
        finally:
            with self._lock:
                self._pending -= 1

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending == 0:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
