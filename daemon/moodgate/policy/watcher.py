"""Hot reload: poll the policy file and swap in each valid version; keep the last good one.

Polling (not inotify) because editors replace files in many ways (rename, truncate+write,
bind mounts on routers) and a 0.5 s poll of one small file costs nothing. A change is
applied only once the same content is seen on two polls in a row, so a half-written file
is never applied; that still lands well inside the 2 s promise.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from moodgate.policy.errors import PolicyError, PolicyProblem
from moodgate.policy.loader import default_policy, parse_policy
from moodgate.policy.model import Policy

log = logging.getLogger(__name__)

_Signature = tuple[int, int, str]  # mtime_ns, size, sha256


class PolicyWatcher:
    """Holds the policy in force. ``current`` is always a valid Policy.

    The file is loaded in the constructor, and ``on_change`` / ``on_error`` fire for that first
    load too. If the file is invalid at start-up there is no last good version of it, so the
    embedded default policy is in force and ``last_error`` says why (callers that would
    rather refuse to start check ``last_error``).
    """

    def __init__(
        self,
        path: Path | None,
        on_change: Callable[[Policy], None] | None = None,
        on_error: Callable[[PolicyError], None] | None = None,
        interval: float = 0.5,
        neighbours: Path | None = None,
    ) -> None:
        self._path = Path(path) if path is not None else None
        self._on_change = on_change
        self._on_error = on_error
        self._interval = interval
        self._neighbours = neighbours
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._applied: _Signature | None = None  # what is in force (or was rejected)
        self._pending: _Signature | None = None  # seen once, waiting to be seen again
        self.last_error: PolicyError | None = None
        self.last_loaded_at: datetime | None = None
        self._current = default_policy(neighbours)
        if self._path is not None:
            self.reload()

    @property
    def current(self) -> Policy:
        return self._current

    @property
    def path(self) -> Path | None:
        return self._path

    def _signature(self) -> tuple[_Signature, str] | None:
        assert self._path is not None
        try:
            stat = self._path.stat()
            data = self._path.read_bytes()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, hashlib.sha256(data).hexdigest()), data.decode(
            "utf-8", errors="replace"
        )

    def reload(self) -> bool:
        """Load the file now (start-up, SIGHUP); True when a valid policy was applied."""
        if self._path is None:
            return False
        with self._lock:
            seen = self._signature()
            if seen is None:
                self._reject(
                    PolicyError(
                        [
                            PolicyProblem(
                                str(self._path),
                                0,
                                0,
                                "",
                                "the policy file is missing or unreadable; "
                                "keeping the last good policy",
                            )
                        ]
                    ),
                    None,
                )
                return False
            signature, text = seen
            return self._apply(signature, text)

    def _apply(self, signature: _Signature, text: str) -> bool:
        assert self._path is not None
        self._applied, self._pending = signature, None
        try:
            policy = parse_policy(text, str(self._path), self._neighbours, path=self._path)
        except PolicyError as error:
            self._reject(error, signature)
            return False
        self._current = policy  # one reference swap: readers never see half a policy
        self.last_error = None
        self.last_loaded_at = datetime.now(UTC)
        log.info("policy %s applied (%d children)", self._path, len(policy.children()))
        if self._on_change is not None:
            self._on_change(policy)
        return True

    def _reject(self, error: PolicyError, signature: _Signature | None) -> None:
        self._applied = signature
        self.last_error = error
        log.error("policy %s rejected, the last good policy stays in force:\n%s", self._path, error)
        if self._on_error is not None:
            self._on_error(error)

    def poll(self) -> None:
        """One poll step (the thread calls this; tests may too)."""
        if self._path is None:
            return
        with self._lock:
            seen = self._signature()
            if seen is None:
                return  # mid-rename, or deleted: keep what we have, look again next time
            signature, text = seen
            if signature == self._applied:
                self._pending = None
                return
            if signature != self._pending:
                self._pending = signature
                return
            self._apply(signature, text)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception:  # a watcher that dies silently would freeze the policy forever
                log.exception("policy watcher poll failed")

    def start(self) -> None:
        if self._thread is not None or self._path is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="policy-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
