"""A misbehaving origin: slow, resetting connections, wrong Content-Length. Whatever the
client sees through moodgate must be what it sees through plain mitmproxy without the addon
(and, where the origin is well-formed, what a direct fetch sees)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from realnet import Proxy, free_port

Behaviour = Callable[[socket.socket, bytes], None]


def _headers(body: bytes, length: int | None = None, content_type: str = "image/jpeg") -> bytes:
    length = len(body) if length is None else length
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n").encode()  # fmt: skip


def _reset(conn: socket.socket) -> None:
    """Close with RST instead of FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class RawOrigin:
    """A loopback origin that misbehaves at the socket level, one behaviour per path."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ", 2)[1].decode()
            if path.startswith("http://"):
                path = "/" + path.split("/", 3)[3]
            self.behaviours[path](conn, request)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> RawOrigin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.server.close()


def behaviours(image: bytes) -> dict[str, Behaviour]:
    def slow(conn: socket.socket, _: bytes) -> None:
        time.sleep(1.0)
        conn.sendall(_headers(image))
        step = len(image) // 4 + 1
        for start in range(0, len(image), step):
            conn.sendall(image[start : start + step])
            time.sleep(0.3)

    def reset_before_response(conn: socket.socket, _: bytes) -> None:
        _reset(conn)

    def reset_mid_body(conn: socket.socket, _: bytes) -> None:
        conn.sendall(_headers(image) + image[: len(image) // 3])
        time.sleep(0.2)
        _reset(conn)

    def length_too_long(conn: socket.socket, _: bytes) -> None:
        conn.sendall(_headers(image, len(image) + 5000) + image)
        conn.shutdown(socket.SHUT_WR)

    def length_too_short(conn: socket.socket, _: bytes) -> None:
        conn.sendall(_headers(image, len(image) // 2) + image)
        conn.shutdown(socket.SHUT_WR)

    def garbage_status_line(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"HTTP/1.1 banana\r\n\r\n" + image[:100])

    return {
        "/slow.jpg": slow,
        "/reset-before.jpg": reset_before_response,
        "/reset-mid.jpg": reset_mid_body,
        "/long.jpg": length_too_long,
        "/short.jpg": length_too_short,
        "/garbage.jpg": garbage_status_line,
    }


def fetch(url: str, proxy_port: int | None) -> tuple[object, ...]:
    """('ok', status, body) or ('error', kind): what a client can observe."""
    # Through a proxy the request line carries the absolute URL; directly, just the path.
    port = proxy_port or int(url.split(":")[2].split("/")[0])
    path = url if proxy_port else "/" + url.split("/", 3)[3]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "identity"})
        response = conn.getresponse()
        body = response.read()
        return ("ok", response.status, body)
    except (http.client.IncompleteRead, http.client.RemoteDisconnected,
            ConnectionResetError, http.client.BadStatusLine):  # fmt: skip
        return ("error", "broken")  # the client sees a broken response either way
    finally:
        conn.close()


class PlainMitmdump:
    """mitmdump with no addon: the baseline moodgate must not differ from."""

    def __init__(self, state: Path) -> None:
        self.port = free_port()
        state.mkdir(parents=True, exist_ok=True)
        self.log = (state / "mitmdump.log").open("wb")
        mitmdump = Path(sys.executable).with_name("mitmdump")
        self.process = subprocess.Popen(
            [str(mitmdump), "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
             "--set", f"confdir={state}", "-q"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def __enter__(self) -> PlainMitmdump:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mitmdump did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def three_ways(
    tmp_path_factory: pytest.TempPathFactory, media: dict[str, bytes]
) -> Iterator[tuple[RawOrigin, Proxy, PlainMitmdump]]:
    state = tmp_path_factory.mktemp("origin-faults")
    with (
        RawOrigin(behaviours(media["calm.jpg"])) as origin,
        Proxy(state / "moodgate", extra=["--scorer", "heuristic"]) as proxy,
        PlainMitmdump(state / "plain") as plain,
    ):
        yield origin, proxy, plain


@pytest.mark.parametrize("path", ["/slow.jpg", "/reset-before.jpg", "/reset-mid.jpg",
                                  "/long.jpg", "/short.jpg", "/garbage.jpg"])
def test_client_sees_what_plain_mitmproxy_shows(three_ways, path: str) -> None:
    origin, proxy, plain = three_ways
    through_moodgate = fetch(origin.url(path), proxy.port)
    through_plain = fetch(origin.url(path), plain.port)
    print(path, "moodgate:", through_moodgate[:2], "plain mitmproxy:", through_plain[:2])
    assert through_moodgate == through_plain, (through_moodgate[:2], through_plain[:2])
    # ...and the proxy is still serving.
    assert fetch(origin.url("/slow.jpg"), proxy.port)[:2] == ("ok", 200)


def test_slow_origin_matches_a_direct_fetch(three_ways, media: dict[str, bytes]) -> None:
    origin, proxy, _ = three_ways
    direct = fetch(origin.url("/slow.jpg"), None)
    assert direct == ("ok", 200, media["calm.jpg"])
    assert fetch(origin.url("/slow.jpg"), proxy.port) == direct
