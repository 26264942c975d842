"""Shared parts of the benchmarks: a web-like corpus, a local origin, the two proxies, clients,
CPU accounting from /proc, percentiles, tables and Pillow plots. Loopback only, bounded.

The corpus is made at bench time in a temporary directory, never in the repository: benign
OASIS photographs (Scenery and Object categories with neutral-to-positive ratings; the 256 px
originals) upscaled with Lanczos to common web sizes, given a light film grain so they compress
like camera photos rather than like smooth upscales, and re-encoded as JPEG at the quality that
lands each file near its target size (30–400 KB). Plus an HTML page, a stylesheet and a script.

Run as `python bench/common.py origin DIR` it is the origin server (a separate process, so the
clients' interpreter lock does not slow the origin down); it prints its port on stdout.
"""

from __future__ import annotations

import http.client
import http.server
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from moodgate.emotion.base import Scorer
from moodgate.emotion.explicit import ExplicitScorer

REPO = Path(__file__).resolve().parents[1]
OASIS = REPO.parent / "shared" / "data" / "oasis"
PYTHON = sys.executable
BIN = Path(sys.executable).parent

# (width, height, target KB): a thumbnail strip up to a hero image.
WEB_SIZES = [(480, 320, 30), (640, 427, 60), (960, 640, 120), (1280, 853, 220), (1920, 1280, 400)]
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".js": "application/javascript",
}


# ---------------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Item:
    name: str  # URL path without the leading slash
    size: int
    is_image: bool


@dataclass
class Corpus:
    root: Path
    items: list[Item]

    @property
    def images(self) -> list[Item]:
        return [item for item in self.items if item.is_image]

    @property
    def others(self) -> list[Item]:
        return [item for item in self.items if not item.is_image]

    def read(self, item: Item) -> bytes:
        return (self.root / item.name).read_bytes()


def benign_photos(oasis: Path = OASIS, limit: int = 40) -> list[Path]:
    """Neutral-to-pleasant, calm Scenery and Object photographs, in a fixed order."""
    from moodgate.emotion.datasets import load_oasis

    samples = [
        s
        for s in load_oasis(oasis)
        if s.category in ("Scenery", "Object") and s.valence >= 0.1 and s.arousal <= 0.0
    ]
    samples.sort(key=lambda s: s.path.name)
    random.Random(6).shuffle(samples)
    return [s.path for s in samples[:limit]]


def web_jpeg(source: Path, width: int, height: int, target_kb: int, seed: int) -> bytes:
    image = Image.open(source).convert("RGB")
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    grain = np.random.default_rng(seed).normal(0.0, 3.0, size=(height, width, 1))
    image = Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
    low, high, best = 30, 95, b""
    for _ in range(6):  # bisect the quality towards the target size
        quality = (low + high) // 2
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        best = buffer.getvalue()
        if len(best) > target_kb * 1024:
            high = quality - 1
        else:
            low = quality + 1
    return best


def make_corpus(root: Path, images: int = 30, oasis: Path = OASIS, scale: float = 1.0) -> Corpus:
    """`images` photos cycling through WEB_SIZES (scaled by `scale` for quick runs), plus text."""
    root.mkdir(parents=True, exist_ok=True)
    photos = benign_photos(oasis, images)
    if not photos:
        raise SystemExit(f"no OASIS photographs under {oasis}")
    items: list[Item] = []
    for index in range(images):
        width, height, target = WEB_SIZES[index % len(WEB_SIZES)]
        width, height = max(64, int(width * scale)), max(64, int(height * scale))
        data = web_jpeg(photos[index % len(photos)], width, height, int(target * scale), index)
        name = f"img/{index:03d}-{width}x{height}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        items.append(Item(name, len(data), True))
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "while",
        "the",
        "router",
        "filters",
        "pictures",
    ]
    rng = random.Random(1)
    text = {
        "index.html": "<!doctype html><html><head><link rel=stylesheet href=site.css></head><body>"
        + "".join(f"<p>{' '.join(rng.choices(words, k=40))}</p>" for _ in range(120))
        + "".join(f'<img src="/{item.name}">' for item in items)
        + "<script src=app.js></script></body></html>",
        "site.css": "".join(
            f".c{i} {{ margin: {i % 7}px; color: #{i * 2654435761 % 0xFFFFFF:06x}; }}\n"
            for i in range(600)
        ),
        "app.js": "".join(
            f"function f{i}(a, b) {{ return (a * {i} + b) % 97; }}\n" for i in range(1800)
        ),
    }
    for name, body in text.items():
        (root / name).write_text(body)
        items.append(Item(name, len(body.encode()), False))
    return Corpus(root, items)


@contextmanager
def temporary_corpus(images: int = 30, scale: float = 1.0) -> Iterator[Corpus]:
    directory = Path(tempfile.mkdtemp(prefix="moodgate-bench-"))
    try:
        yield make_corpus(directory / "www", images, scale=scale)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------- slices


def model_dir_or_default(model_dir: Path | None) -> Path:
    from moodgate.emotion.registry import default_model_dir

    return model_dir or default_model_dir()


def load_bench_slices(
    model_dir: Path | None, threads: int = 1
) -> tuple[dict[tuple[float, str], Scorer], dict[tuple[float, str], dict[str, object]]]:
    """Every slice in the manifest, loaded as the daemon loads them; the heuristic scorer alone
    (as slice w1/n/a) when there is no model yet. Returns (scorers, manifest entries)."""
    from moodgate.emotion.heuristic import HeuristicScorer
    from moodgate.emotion.nested import SessionPool
    from moodgate.runtime.build import load_nested_slice, read_manifest
    from moodgate.runtime.calibration import manifest_entries, ordered_keys

    directory = model_dir_or_default(model_dir)
    if not (directory / "manifest.json").exists():
        return {(1.0, "n/a"): HeuristicScorer()}, {}
    entries = manifest_entries(read_manifest(directory))
    pool = SessionPool()
    scorers = {
        key: load_nested_slice(directory, key[0], key[1], threads, pool)
        for key in ordered_keys(list(entries))
    }
    return scorers, {k: dict(v) for k, v in entries.items()}


def load_bench_explicit(model_dir: Path | None, wanted: bool = True) -> ExplicitScorer | None:
    """The explicit classifier, rated beside every slice as under the default policy (every
    age preset tests `explicit`); None when not wanted or not shipped (an older models/)."""
    from moodgate.emotion.explicit import load_explicit

    if not wanted:
        return None
    try:
        return load_explicit(model_dir_or_default(model_dir))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"explicit classifier not used: {exc}", file=sys.stderr)
        return None


def has_model(model_dir: Path | None) -> bool:
    return (model_dir_or_default(model_dir) / "manifest.json").exists()


# ------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


class Process:
    """A child process on a loopback port, with CPU accounting from /proc/<pid>/stat."""

    name = "process"

    def __init__(self, args: list[str], port: int, log: Path, env: dict[str, str] | None = None):
        self.args = args
        self.port = port
        self.log_path = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.process is not None
        try:
            wait_listening(self.port, self.process, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.name}: {exc}\n{self.log()[-3000:]}") from exc

    def start(self, timeout: float = 90.0) -> Process:
        self.launch()
        self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(*processes: Process) -> Iterator[tuple[Process, ...]]:
    """Start all at once (their start-ups overlap), stop all at the end."""
    try:
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:  # signal all first: their shutdowns overlap too
            process.terminate()
        for process in reversed(processes):
            process.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14 and 15 of proc(5)


class OriginServer(Process):
    name = "origin"

    def __init__(self, root: Path, log: Path) -> None:
        port = free_port()
        super().__init__([PYTHON, str(Path(__file__)), "origin", str(root), str(port)], port, log)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


class MitmDump(Process):
    """Plain mitmproxy: the baseline every number is compared against."""

    name = "mitmdump"

    def __init__(self, state: Path, extra: Sequence[str] = ()) -> None:
        state.mkdir(parents=True, exist_ok=True)
        port = free_port()
        args = [str(BIN / "mitmdump"), "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "-q", "--set", f"confdir={state / 'mitmproxy'}", *extra]  # fmt: skip
        super().__init__(args, port, state / "mitmdump.log")


class Moodgate(Process):
    """`moodgate serve` with the default policy and the given settings file."""

    name = "moodgate"

    def __init__(self, state: Path, settings: dict[str, object], extra: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        state.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = state / "moodgate.yaml"
        # The parents' review page is no part of the proxy path, and its fixed default port
        # would stop a second instance (the benchmarks run several).
        settings = {"review_listen": "off", **settings}
        config.write_text(json.dumps(settings))  # JSON is YAML
        args = [PYTHON, "-m", "moodgate.cli", "serve", "--listen", f"127.0.0.1:{port}",
                "--state-dir", str(state), "--config", str(config), "--debug-headers", "-q",
                *extra]  # fmt: skip
        super().__init__(args, port, state / "moodgate.log", env)
        self.state = state

    @property
    def database(self) -> Path:
        return self.state / "decisions.sqlite"


# --------------------------------------------------------------------------------------- clients


@dataclass
class Result:
    path: str
    is_image: bool
    started: float  # perf_counter at send
    seconds: float
    status: int
    size: int
    header: str = ""  # X-Moodgate, when the proxy sets it

    @property
    def ok(self) -> bool:
        return self.status == 200


class Client:
    """One keep-alive connection, to the origin directly or through a proxy."""

    def __init__(self, origin: OriginServer, proxy_port: int | None, timeout: float = 30.0):
        self.origin = origin
        self.proxy_port = proxy_port
        self.timeout = timeout
        self.connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        port = self.proxy_port or self.origin.port
        return http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)

    def get(self, item: Item) -> Result:
        target = self.origin.url(item.name) if self.proxy_port else "/" + item.name
        for attempt in range(2):  # a keep-alive connection the server closed: reconnect once
            if self.connection is None:
                self.connection = self._connect()
            started = time.perf_counter()
            try:
                self.connection.request("GET", target, headers={"Accept-Encoding": "identity"})
                response = self.connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    return Result(item.name, item.is_image, started,
                                  time.perf_counter() - started, 0, 0)  # fmt: skip
                continue
            seconds = time.perf_counter() - started
            header = response.getheader("x-moodgate") or ""
            if response.getheader("connection", "").lower() == "close":
                self.close()
            return Result(item.name, item.is_image, started, seconds, response.status,
                          len(body), header)  # fmt: skip
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def closed_loop(
    origin: OriginServer,
    proxy_port: int | None,
    sequence: Sequence[Item],
    clients: int,
    seconds: float,
    max_requests: int,
) -> tuple[list[Result], float]:
    """`clients` connections each fetching the sequence (offset per client) back to back, until
    `seconds` pass or `max_requests` are done in all. Returns the results and the wall time."""
    results: list[Result] = []
    lock = threading.Lock()
    counter = iter(range(max_requests))
    stop_at = time.perf_counter() + seconds

    def run(offset: int) -> None:
        client = Client(origin, proxy_port)
        position = offset
        try:
            while time.perf_counter() < stop_at:
                with lock:
                    if next(counter, None) is None:
                        return
                result = client.get(sequence[position % len(sequence)])
                position += 1
                with lock:
                    results.append(result)
        finally:
            client.close()

    started = time.perf_counter()
    offsets = [i * max(1, len(sequence) // clients) for i in range(clients)]
    threads = [threading.Thread(target=run, args=(o,), daemon=True) for o in offsets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return results, time.perf_counter() - started


def page_sequence(corpus: Corpus, repeat: int = 1) -> list[Item]:
    """A browsing pattern: the page, its stylesheet and script, then its images."""
    html = [i for i in corpus.others if i.name.endswith(".html")]
    rest = [i for i in corpus.others if not i.name.endswith(".html")]
    return (html + rest + corpus.images) * repeat


# ----------------------------------------------------------------------------------------- stats


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float) and value != value:  # NaN: nothing measured
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


@dataclass
class Budget:
    """A wall-clock limit for a whole benchmark, so none can run away."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


# ----------------------------------------------------------------------------------------- plots


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    colour: tuple[int, int, int]
    names: list[str] = field(default_factory=list)  # a label per point
    line: bool = True


def plot(
    path: Path,
    series: Sequence[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (900, 560),
    hline: tuple[float, str] | None = None,
) -> None:
    """A small line/scatter chart with Pillow (matplotlib is not a dependency)."""
    width, height = size
    left, right, top, bottom = 80, 30, 50, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points] + ([hline[0]] if hline else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    padx, pady = (x1 - x0) * 0.08 or 1.0, (y1 - y0) * 0.1 or 1.0
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))  # fmt: skip

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(6):
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        px, _ = at(xv, y0)
        _, py = at(x0, yv)
        draw.line([px, height - bottom, px, height - bottom + 5], fill="black")
        draw.text((px - 15, height - bottom + 8), f"{xv:.3g}", fill="black")
        draw.line([left - 5, py, left, py], fill="black")
        draw.text((8, py - 6), f"{yv:.3g}", fill="black")
        draw.line([left, py, width - right, py], fill=(230, 230, 230))
    if hline:
        _, py = at(x0, hline[0])
        draw.line([left, py, width - right, py], fill=(200, 0, 0), width=1)
        draw.text((width - right - 160, py - 14), hline[1], fill=(200, 0, 0))
    draw.text((left, 15), title, fill="black")
    draw.text((width // 2 - 60, height - 25), xlabel, fill="black")
    draw.text((8, top - 25), ylabel, fill="black")
    for index, s in enumerate(series):
        points = [at(x, y) for x, y in s.points]
        if s.line and len(points) > 1:
            draw.line(points, fill=s.colour, width=2)
        for n, (px, py) in enumerate(points):
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=s.colour)
            if n < len(s.names):
                draw.text((px + 6, py - 12), s.names[n], fill=s.colour)
        draw.text((width - right - 200, top + 10 + 16 * index), f"-- {s.label}", fill=s.colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def stack(paths: Sequence[Path], out: Path) -> None:
    """Panels drawn by `plot`, one above the other, in one PNG."""
    images = [Image.open(p).convert("RGB") for p in paths]
    sheet = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    y = 0
    for image in images:
        sheet.paste(image, (0, y))
        y += image.height
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


# ---------------------------------------------------------------------------------- origin main


def serve_directory(root: Path, port: int, ready: Callable[[int], None] = print) -> None:
    files = {
        "/" + p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the second waits for the
        # client's delayed ACK (40 ms) and every "direct" latency would be that timer.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            body = files.get(path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPES.get(Path(path).suffix, "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    ready(port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "origin":
        serve_directory(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        raise SystemExit("usage: common.py origin DIR PORT")
