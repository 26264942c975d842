"""Soak over loopback: many requests, mixed good and bad media, 32 concurrent clients,
through a real `moodgate serve` to a real origin.

It must end with zero responses moodgate broke (every request gets the origin's response or
the policy's replacement), RSS growth under 50 MB after warm-up, and one database row per
media request. The full run (20,000 requests) is @slow (MOODGATE_SLOW=1, `make soak`); CI
runs MOODGATE_SOAK_REQUESTS (default 1,500) of the same mix.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

import media_factory as mf
from realnet import Origin, Proxy, Route

CLIENTS = 32
RSS_GROWTH_LIMIT_MB = 50.0
REPORT = os.environ.get("MOODGATE_SOAK_REPORT")

POLICY = """\
version: 1
children:
  mia:
    users: [mia]
    preset: none
    on_error: block
    rules:
      - {name: lively, when: "arousal > 0.2", action: calm, target: "arousal <= -0.2",
         if_unreached: block}
default:
  preset: 8-12
"""


def routes() -> dict[str, Route]:
    """Small images so the soak measures moodgate, not Pillow on a 2-core box."""
    calm, vivid = mf.calm_landscape(160, 107), mf.vivid_chaos(160, 107)
    good = {
        "/calm.jpg": Route(mf.jpeg(calm), "image/jpeg"),
        "/vivid.jpg": Route(mf.jpeg(vivid), "image/jpeg"),
        "/vivid.webp": Route(mf.webp(vivid), "image/webp"),
        "/alpha.png": Route(mf.alpha_png(120, 90), "image/png"),
        "/anim.gif": Route(mf.animated_gif(80, 60, frames=3), "image/gif"),
        "/gzipped.jpg": Route(mf.jpeg(vivid), "image/jpeg", encoding="gzip"),
    }
    bad = {
        "/truncated.jpg": Route(mf.jpeg(vivid)[:1500], "image/jpeg"),
        "/badcrc.png": Route(mf.png_with_bad_crc(), "image/png"),
        "/bomb.png": Route(mf.decompression_bomb(20000), "image/png"),
        "/html-as.jpg": Route(b"<!doctype html><title>x</title>" * 40, "image/jpeg"),
        "/empty.jpg": Route(b"", "image/jpeg"),
    }
    other = {"/page.html": Route(b"<!doctype html><p>hello</p>" * 20, "text/html")}
    return {**good, **bad, **other}


MEDIA = [p for p in routes() if p != "/page.html"]


@dataclass
class Tally:
    requests: int = 0
    media: int = 0
    broken: list[str] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def judge_response(path: str, origin: Route, status: int, headers: http.client.HTTPMessage,
                   body: bytes) -> str | None:  # fmt: skip
    """None if the client got the origin's response or the policy's replacement."""
    verdict = headers.get("x-moodgate") or ""
    if verdict.startswith("block") and status == 403:
        return None  # blocked with nothing decodable to stand in: the policy's answer
    if status != origin.status:
        return f"{path}: status {status} ({verdict})"
    if headers.get("content-encoding") == "gzip":
        import gzip

        body = gzip.decompress(body)
    if not verdict or verdict.startswith("pass"):
        return None if body == origin.body else f"{path}: passed but body differs"
    # calm / block: a decodable image of the same size (bad input: any decodable image).
    try:
        replacement = Image.open(io.BytesIO(body))
        replacement.load()
    except Exception as exc:
        return f"{path}: {verdict} replacement does not decode: {exc}"
    try:
        original = Image.open(io.BytesIO(origin.body))
    except Exception:
        return None
    if replacement.size != original.size:
        return f"{path}: {verdict} replacement is {replacement.size}, not {original.size}"
    return None


def client(proxy_port: int, origin_port: int, table: dict[str, Route], plan: list[tuple[str, str]],
           tally: Tally) -> None:  # fmt: skip
    """One client: a keep-alive connection through the proxy, reconnecting if it drops."""
    conn: http.client.HTTPConnection | None = None
    for path, user in plan:
        for attempt in range(2):
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=60)
            try:
                headers = {"Accept-Encoding": "gzip"}
                if user:
                    import base64

                    token = base64.b64encode(f"{user}:pw".encode()).decode()
                    headers["Proxy-Authorization"] = f"Basic {token}"
                conn.request("GET", f"http://127.0.0.1:{origin_port}{path}", headers=headers)
                response = conn.getresponse()
                body = response.read()
                problem = judge_response(path, table[path], response.status, response.headers,
                                         body)  # fmt: skip
                verdict = (response.headers.get("x-moodgate") or "none").split(";")[0]
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                if attempt == 1:
                    problem, verdict = f"{path}: {type(exc).__name__}: {exc}", "broken"
        with tally.lock:
            tally.requests += 1
            tally.media += path in MEDIA
            tally.actions[verdict] += 1
            if problem:
                tally.broken.append(problem)
    if conn is not None:
        conn.close()


def vm_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def settled_rss(pid: int) -> float:
    """RSS once background work (thumbnails, the writer) is done: the least of a few
    samples, so one transient big allocation does not count as growth."""
    time.sleep(3.0)
    samples = []
    for _ in range(5):
        samples.append(vm_mb(pid))
        time.sleep(0.3)
    return min(samples)


def count_rows(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("select count(*) from decisions").fetchone()[0])


def soak(tmp_path: Path, total: int) -> dict[str, object]:
    table = routes()
    paths = sorted(table)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    warmup = max(CLIENTS * 10, total // 10)
    with (
        Origin(table) as origin,
        Proxy(tmp_path / "state", policy,
              extra=["--scorer", "heuristic", "--set", "proxyauth=any", "-q"]) as proxy,
    ):  # fmt: skip
        assert proxy.process is not None
        pid = proxy.process.pid

        def run(count: int, offset: int) -> Tally:
            tally = Tally()
            plans: list[list[tuple[str, str]]] = [[] for _ in range(CLIENTS)]
            for i in range(count):
                n = offset + i
                path = paths[n % len(paths)]
                # The bomb goes to the guest (on_error: pass) only: blocked, it would get a
                # full-size review thumbnail (a known bug, test_fault_memory.py) and the RSS
                # would measure that bug instead of a leak.
                user = "guest" if path == "/bomb.png" else ["mia", "guest"][n // 7 % 2]
                plans[i % CLIENTS].append((path, user))
            with ThreadPoolExecutor(CLIENTS) as pool:
                for plan in plans:
                    pool.submit(client, proxy.port, origin.port, table, plan, tally)
            return tally

        started = time.monotonic()
        warm = run(warmup, 0)
        rss_after_warmup = settled_rss(pid)
        main = run(total - warmup, warmup)
        seconds = time.monotonic() - started
        rss_end = settled_rss(pid)
        peak = vm_mb(pid, "VmHWM")
        media = warm.media + main.media
        deadline = time.monotonic() + 60
        while count_rows(proxy.database) < media and time.monotonic() < deadline:
            time.sleep(0.5)
        rows = count_rows(proxy.database)
        status = json.loads((tmp_path / "state" / "status.json").read_text())
    result: dict[str, object] = {
        "requests": warm.requests + main.requests,
        "media_requests": media,
        "db_rows": rows,
        "broken": len(warm.broken) + len(main.broken),
        "broken_examples": (warm.broken + main.broken)[:10],
        "actions": dict(warm.actions + main.actions),
        "seconds": round(seconds, 1),
        "requests_per_second": round((warm.requests + main.requests) / seconds, 1),
        "rss_after_warmup_mb": round(rss_after_warmup, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_after_warmup, 1),
        "rss_peak_mb": round(peak, 1),
        "db_dropped": status["db_dropped"],
    }
    print(json.dumps(result))
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            out.write(json.dumps(result) + "\n")
    return result


def check(result: dict[str, object], total: int) -> None:
    assert result["requests"] == total
    assert result["broken"] == 0, result["broken_examples"]
    assert result["db_rows"] == result["media_requests"], result
    assert result["db_dropped"] == 0
    assert float(result["rss_growth_mb"]) < RSS_GROWTH_LIMIT_MB, result  # type: ignore[arg-type]


def test_soak_reduced(tmp_path: Path) -> None:
    total = int(os.environ.get("MOODGATE_SOAK_REQUESTS", "1500"))
    check(soak(tmp_path, total), total)


@pytest.mark.slow
def test_soak_full(tmp_path: Path) -> None:
    check(soak(tmp_path, 20_000), 20_000)
