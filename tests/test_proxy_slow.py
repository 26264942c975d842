"""A deliberately slow scorer in a real proxy: other requests don't wait for it, and a decision
over the deadline falls back to the policy's on_timeout action, recorded as a timeout."""

from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from realnet import Origin, Proxy, Route

TESTS = Path(__file__).resolve().parent


def test_slow_scorer_does_not_stall_other_requests_and_times_out(tmp_path, media) -> None:
    routes = {
        "/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg"),
        "/page.html": Route(b"<!doctype html><p>quick</p>", "text/html"),
    }
    env = {
        "SLOW_SCORER_SECONDS": "3",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    extra = ["--scorer", "slow_scorer:SlowScorer", "--set", "moodgate_deadline_ms=1000"]
    with Origin(routes) as origin, Proxy(tmp_path, extra=extra, env=env) as proxy:
        with ThreadPoolExecutor(max_workers=2) as pool:
            started = time.monotonic()
            image = pool.submit(proxy.fetch, origin.url("/vivid.jpg"))
            time.sleep(0.3)  # the image is now in the slow scorer
            page = proxy.fetch(origin.url("/page.html"))
            page_seconds = time.monotonic() - started
            fetched = image.result()
            image_seconds = time.monotonic() - started
        assert page.status == 200 and page.body == b"<!doctype html><p>quick</p>"
        assert page_seconds < 2.5, f"a page waited {page_seconds:.1f} s behind a slow image"
        # The deadline (1 s) expired: on_timeout (default pass) gave the original bytes.
        assert fetched.status == 200 and fetched.body == media["vivid.jpg"]
        assert image_seconds < 2.9, f"the image waited {image_seconds:.1f} s, past the deadline"
        assert "timeout" in fetched.header("x-moodgate")
        deadline = time.monotonic() + 10
        row = None
        while time.monotonic() < deadline and row is None:
            if proxy.database.exists():
                with sqlite3.connect(proxy.database) as db:
                    row = db.execute(
                        "select action, outcome, rule from decisions where path='/vivid.jpg'"
                    ).fetchone()
            time.sleep(0.1)
        assert row == ("pass", "timeout", "default/on_timeout")
