"""Real processes for end-to-end tests: a local origin server (HTTP and HTTPS) and a running
`moodgate serve`, plus a client that trusts the proxy's CA. Loopback only."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import http.server
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None  # gzip | br | zstd
    chunked: bool = False  # no Content-Length: Transfer-Encoding: chunked, 1 MiB chunks


def encode(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "br":
        return brotli.compress(body)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    return body


def decode(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "br":
        return brotli.decompress(body)
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moodgate-test-origin")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "origin.pem", directory / "origin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Origin:
    """A threaded HTTP(S) server that serves a dict of routes."""

    def __init__(self, routes: dict[str, Route], tls: tuple[Path, Path] | None = None) -> None:
        self.routes = routes
        self.headers_seen: list[dict[str, str]] = []  # each request's headers, lower-cased
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                origin.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                route = origin.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                if route.delay:
                    time.sleep(route.delay)
                body = encode(route.body, route.encoding)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if route.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(body)))
                if route.encoding:
                    self.send_header("Content-Encoding", route.encoding)
                for key, value in route.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if not route.chunked:
                    self.wfile.write(body)
                    return
                for start in range(0, len(body), 1 << 20):
                    chunk = body[start : start + (1 << 20)]
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")

            def do_POST(self) -> None:
                """An upload: answered with the SHA-256 of what arrived."""
                digest, left = hashlib.sha256(), int(self.headers.get("Content-Length", "0"))
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    digest.update(chunk)
                    left -= len(chunk)
                answer = digest.hexdigest().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Origin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class RangeOrigin:
    """An origin that honours Range (206), as real media servers do; `seen` lists the Range
    header of every request (None: the whole file was asked for)."""

    def __init__(self, body: bytes, content_type: str = "video/mp4") -> None:
        self.seen: list[str | None] = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                origin.seen.append(wanted)
                start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
                end = len(body)
                if wanted and wanted.split("-", 1)[1].strip():
                    end = min(len(body), int(wanted.split("-", 1)[1]) + 1)
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                if wanted:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
                self.end_headers()
                self.wfile.write(body[start:end])

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proxy:
    """A real `moodgate serve` process on a free loopback port."""

    def __init__(
        self,
        state_dir: Path,
        policy: Path | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        upstream_ca: Path | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.log_path = state_dir / "proxy.log"
        args = [
            sys.executable, "-m", "moodgate.cli", "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--state-dir", str(state_dir),
            "--debug-headers",
        ]  # fmt: skip
        if not any("moodgate_review_listen" in arg for arg in extra or []):
            # Many test proxies run at once: none takes the review page's fixed port.
            args += ["--set", "moodgate_review_listen=off"]
        if policy is not None:
            args += ["--policy", str(policy)]
        if upstream_ca is not None:
            args += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
        self.args = args + (extra or [])
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "mitmproxy" / "mitmproxy-ca-cert.pem"

    @property
    def database(self) -> Path:
        return self.state_dir / "decisions.sqlite"

    def start(self, timeout: float = 60.0) -> Proxy:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    if self.ca_path.exists():
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"proxy did not start listening:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def opener(self) -> urllib.request.OpenerDirector:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        proxy = f"http://127.0.0.1:{self.port}"
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
            urllib.request.HTTPSHandler(context=context),
        )

    def fetch(self, url: str, timeout: float = 30.0) -> Fetched:
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        try:
            with self.opener().open(request, timeout=timeout) as response:
                return Fetched(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:
            return Fetched(error.code, dict(error.headers.items()), error.read())


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None
