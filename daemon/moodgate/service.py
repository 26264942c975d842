"""Living under systemd: sd_notify over $NOTIFY_SOCKET, the watchdog, the pid file, and
one-line key=value log records for the journal.

Standard library only: a router image should not need libsystemd's Python bindings for four
datagrams. Everything here is a no-op outside systemd, so `moodgate serve` in a terminal and
under `Type=notify` run the same code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from moodgate.status import Health, StatusWriter, now_iso

log = logging.getLogger(__name__)

PID_FILE = "moodgate.pid"


class Notifier:
    """Sends sd_notify(3) datagrams to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace, spelled with a leading NUL on the wire.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(environ)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, **fields: str | int) -> bool:
        """notify(READY=1, STATUS="…"): True when the datagram was sent."""
        if not self.enabled:
            return False
        message = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), self.address)
        except OSError as exc:  # the manager went away; the proxy must keep serving
            log.debug("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status, MAINPID=os.getpid())

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify(STOPPING=1, STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd ≥ 253) match this to its request.
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(
            time.CLOCK_MONOTONIC) // 1000)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of WatchdogSec=), or None when no watchdog is armed."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog belongs to another process (e.g. a wrapper shell)
    return int(usec) / 2_000_000


def _one_line(value: str) -> str:
    return " ".join(value.split())


class Watchdog:
    """Pings WATCHDOG=1 from the event loop, so a wedged loop stops the pings.

    `healthy` is asked before each ping; when it says no, the ping is skipped and systemd's
    WatchdogSec= restarts the service.
    """

    def __init__(self, notifier: Notifier, healthy: Callable[[], bool] | None = None) -> None:
        self.notifier = notifier
        self.healthy = healthy or (lambda: True)
        self.pings = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(interval))

    async def _run(self, interval: float) -> None:
        while True:
            if self.healthy() and self.notifier.watchdog():
                self.pings += 1
            await asyncio.sleep(interval)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


class PidFile:
    """`<state dir>/moodgate.pid`, so `moodgate reload` can find the daemon without systemd."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PID_FILE

    def write(self) -> None:
        temporary = self.path.with_suffix(".pid.tmp")
        temporary.write_text(f"{os.getpid()}\n", encoding="ascii")
        temporary.replace(self.path)

    def remove(self) -> None:
        try:
            if self.read() == os.getpid():
                self.path.unlink()
        except OSError:
            pass

    def read(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


def kv_line(event: str, **fields: object) -> str:
    """`event key=value …`: one journal line that grep and `journalctl -o cat` read alike.

    None is left out; values with spaces or quotes are quoted, so every line splits cleanly.
    """
    parts = [event]
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, float):
            text = f"{value:.1f}" if key == "ms" else f"{value:.3f}"
        else:
            text = _one_line(str(value))
        if not text or any(c in text for c in ' "=\\'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class ServiceHooks:
    """A mitmproxy addon, added after Moodgate: READY=1 once the proxy listens and the engine
    (model included) is built, then the watchdog, the pid file and the status file.

    It only reads the Moodgate addon and the master; the filter works the same without it.
    """

    def __init__(self, moodgate: Any, master: Any, mode: str, state_dir: Path,
                 notifier: Notifier | None = None) -> None:
        self.moodgate = moodgate
        self.master = master
        self.mode = mode
        self.notifier = notifier or Notifier()
        self.watchdog = Watchdog(self.notifier, healthy=lambda: self.moodgate.engine is not None)
        self.pid_file = PidFile(state_dir)
        self.status = StatusWriter(state_dir, self.snapshot)
        self.started_at = now_iso()
        self.was_ready = False

    def listen_addresses(self) -> list[str]:
        server = self.master.addons.get("proxyserver")
        addresses = server.listen_addrs() if server is not None else []
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                for host, port, *_ in addresses]  # fmt: skip

    def running(self) -> None:
        engine = self.moodgate.engine
        if engine is None:  # Moodgate logged why and is shutting the proxy down
            self.notifier.status("moodgate could not start; see the log")
            return
        self.was_ready = True
        self.pid_file.write()
        self.status.start()
        self.watchdog.start()
        listen = ", ".join(self.listen_addresses())
        scorer = engine.scorer.name + (" (fallback: model unavailable)"
                                       if engine.scorer_fallback else "")
        log.info(kv_line("ready", listen=listen, mode=self.mode, scorer=scorer,
                         policy=str(engine.settings.policy or "<embedded default>")))
        self.notifier.ready(f"filtering on {listen} with the {scorer} scorer")

    def reload(self) -> None:
        """SIGHUP: re-read the policy now; the result shows in the log and `moodgate status`."""
        engine = self.moodgate.engine
        if engine is None:
            return
        self.notifier.reloading()
        applied = engine.policy.reload()
        result = "applied" if applied else "kept-last-good"
        if engine.settings.policy is None:
            result = "embedded-default"  # no file to re-read
        log.info(kv_line("reload", policy=str(engine.settings.policy or "<embedded default>"),
                         result=result))
        self.status.write()
        self.notifier.notify(READY=1, STATUS=f"policy reload: {result}")

    def done(self) -> None:
        self.notifier.stopping()
        self.watchdog.stop()
        self.status.stop()
        self.pid_file.remove()

    def snapshot(self) -> Health:
        engine = self.moodgate.engine
        listen = self.listen_addresses()
        if engine is None:
            return Health(
                pid=os.getpid(), started_at=self.started_at, updated_at=now_iso(),
                listen=listen, mode=self.mode, scorer="none", model_width=None, precision=None,
                scorer_requested="", scorer_fallback=False, scorer_error="engine not built",
                policy="", policy_ok=False, policy_error=None, policy_loaded_at=None,
                in_flight=0, db_backlog=0, db_dropped=0, db_error=None, decisions=0,
            )  # fmt: skip
        settings, scorer, store = engine.settings, engine.scorer, engine.store
        watcher = engine.policy
        error = watcher.last_error
        loaded = watcher.last_loaded_at
        return Health(
            pid=os.getpid(),
            started_at=self.started_at,
            updated_at=now_iso(),
            listen=listen,
            mode=self.mode,
            scorer=scorer.name,
            model_width=scorer.width if scorer.name != "heuristic" else None,
            precision=scorer.precision if scorer.name != "heuristic" else None,
            scorer_requested=settings.scorer,
            scorer_fallback=engine.scorer_fallback,
            scorer_error=(
                "the model could not be loaded (see the log); using the heuristic scorer"
                if engine.scorer_fallback else None
            ),
            policy=str(settings.policy or "<embedded default>"),
            policy_ok=error is None,
            policy_error=" ".join(str(error).split())[:500] if error is not None else None,
            policy_loaded_at=loaded.isoformat(timespec="seconds") if loaded else None,
            in_flight=engine.in_flight,
            db_backlog=store.backlog,
            db_dropped=store.dropped,
            db_error=store.last_error,
            decisions=engine.decided,
            # How the adaptive scorer is coping with the load right now, and what the judged
            # video copies hold.
            extra={
                **({"selector": engine.adaptive.state()} if engine.adaptive is not None else {}),
                "video_copies": engine.copies.state(),
                "pinned_apps": engine.pinned.state(),
                "explicit": engine.explicit.state(),
            },
        )
