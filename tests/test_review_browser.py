"""The review page in a real browser (Debian's chromium, headless, driven by Playwright) against
a real `moodgate serve` that filtered real (synthetic) images: log in, see the decisions,
label one, rate one, and find both in the database. Screenshots go to test-artifacts/."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from realnet import REPO, Origin, Proxy, Route, free_port
from test_proxy_e2e import POLICY, fetch_as

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "correct horse battery"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def query(database: Path, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute(sql))


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, media: dict[str, bytes]
) -> Iterator[tuple[Proxy, int]]:
    state = tmp_path_factory.mktemp("review-state")
    policy = state / "policy.yaml"
    policy.write_text(POLICY)
    subprocess.run(
        [sys.executable, "-m", "moodgate.cli", "review", "set-password", "--state-dir",
         str(state), "--stdin"],
        input=PASSWORD + "\n", text=True, check=True, cwd=REPO,
    )  # fmt: skip
    review_port = free_port()
    routes = {
        "/calm.jpg": Route(media["calm.jpg"], "image/jpeg"),
        "/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg"),
    }
    extra = ["--scorer", "heuristic", "--set", "proxyauth=any",
             "--set", f"moodgate_review_listen=127.0.0.1:{review_port}"]  # fmt: skip
    with Origin(routes) as origin, Proxy(state, policy, extra=extra) as proxy:
        assert fetch_as(proxy, "calmkid", origin.url("/vivid.jpg")).header("x-moodgate")
        assert fetch_as(proxy, "calmkid", origin.url("/calm.jpg")).status == 200
        assert fetch_as(proxy, "strictkid", origin.url("/vivid.jpg")).status == 200
        wait_for(lambda: proxy.database.exists() and len(
            query(proxy.database, "select id from decisions")) >= 3)  # fmt: skip
        wait_for(lambda: len(list((state / "thumbs").glob("*.jpg"))) >= 3)
        yield proxy, review_port


def test_review_page_in_a_real_browser(served: tuple[Proxy, int]) -> None:
    proxy, port = served
    base = f"http://127.0.0.1:{port}"
    calmed = query(proxy.database, "select * from decisions where action = 'calm'")[0]
    blocked = query(proxy.database, "select * from decisions where action = 'block'")[0]
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(10_000)
            page.goto(f"{base}/child/calmkid")
            assert "/login" in page.url  # no session: the login page, never the data
            page.fill("input[name=password]", "wrong password")
            page.click("button[type=submit]")
            assert page.locator(".error").inner_text().startswith("That password")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/child/calmkid")

            # The calm decision the proxy made, with its before/after thumbnails and scores.
            item = page.locator(f"#d{calmed['id']}")
            assert "calm" in item.locator(".action").inner_text()
            assert "calmkid/lively" in item.inner_text()
            assert "matches rule 'lively'" in item.locator(".why").inner_text()
            for side in ("before", "after"):
                img = item.locator(f"img[src='/thumb/{calmed['uid']}/{side}']")
                width = img.evaluate("i => i.complete ? i.naturalWidth : -1")
                assert 0 < width <= 128
            assert page.locator("svg.circumplex circle.dot.calm").count() >= 1
            assert page.locator("svg.circumplex text.region").count() >= 1
            assert page.locator("#counts").inner_text().count("1") >= 1

            # Label it, and find the label in the database.
            with page.expect_navigation():
                item.locator("button[value=block]").click()
            assert page.url.endswith(f"/child/calmkid#d{calmed['id']}")
            item = page.locator(f"#d{calmed['id']}")
            assert "should have been blocked" in item.locator(".labelled").inner_text()
            labels = query(proxy.database, "select * from labels")
            assert [(r["decision_id"], r["label"]) for r in labels] == [(calmed["id"], "block")]
            assert labels[0]["decision_uid"] == calmed["uid"]

            # A free valence–arousal rating: click a point on the small circumplex.
            item.locator("details.rating summary").click()
            svg = item.locator("svg.rate")
            box = svg.bounding_box()
            assert box is not None
            # Upper-left quadrant: unpleasant and exciting (click scrolls it into view).
            svg.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
            with page.expect_navigation():
                item.locator("form.rate-form button[type=submit]").click()
            rating = query(proxy.database,
                           "select * from labels where rating_valence is not null")  # fmt: skip
            assert len(rating) == 1
            assert -0.8 < rating[0]["rating_valence"] < -0.2
            assert 0.2 < rating[0]["rating_arousal"] < 0.8
            page.screenshot(path=str(ARTIFACTS / "review-dashboard.png"), full_page=True)

            # A blocked item's thumbnail stays blurred until the parent clicks it.
            page.goto(f"{base}/child/strictkid")
            blurred = page.locator(f"#d{blocked['id']} .reveal img")
            assert "blur" in blurred.evaluate("i => getComputedStyle(i).filter")
            blurred.click()
            assert blurred.evaluate("i => getComputedStyle(i).filter") == "none"

            # A phone-sized screen: no sideways scrolling.
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.context.add_cookies(page.context.cookies())
            phone.goto(f"{base}/child/calmkid")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 392
            phone.screenshot(path=str(ARTIFACTS / "review-phone.png"), full_page=True)
        finally:
            browser.close()
