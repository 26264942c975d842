"""End to end through a real `moodgate serve`: a real origin (HTTP and HTTPS), real encoded
images, a real client trusting the proxy's CA, and the rows in the real SQLite file."""

from __future__ import annotations

import base64
import io
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moodgate.media.inline import find_inline_images
from realnet import Fetched, Origin, Proxy, RangeOrigin, Route, decode

POLICY = """\
version: 1
children:
  calmkid:
    users: [calmkid]
    preset: none
    rules:
      - name: lively
        when: "arousal > 0.2"
        action: calm
        target: "arousal <= -0.2"
        if_unreached: keep
  strictkid:
    users: [strictkid]
    preset: none
    rules:
      - name: lively
        when: "arousal > 0.2"
        action: block
    on_error: block
  blindkid:
    users: [blindkid]
    preset: none
    inspect: {images: false}
    always_block: [blocked.example]
    rules:
      - name: lively
        when: "arousal > 0.2"
        action: block
default:
  preset: none
"""

CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
                 ".webp": "image/webp", ".avif": "image/avif"}


ENCODINGS = ["gzip", "br", "zstd"]


def routes_for(media: dict[str, bytes]) -> dict[str, Route]:
    routes = {
        f"/{name}": Route(body, CONTENT_TYPES[Path(name).suffix]) for name, body in media.items()
    }
    for encoding in ENCODINGS:
        routes[f"/{encoding}.jpg"] = Route(media["vivid.jpg"], "image/jpeg", encoding=encoding)
    routes["/html-as.jpg"] = Route(b"<!doctype html><title>not an image</title>" * 100,
                                   "image/jpeg")
    routes["/empty.jpg"] = Route(b"", "image/jpeg")
    routes["/page.html"] = Route(b"<!doctype html><p>hello</p>", "text/html")
    routes["/octet-stream"] = Route(media["vivid.jpg"], "application/octet-stream")
    jxl = b"\xff\x0a" + bytes(range(256)) * 40  # a JPEG XL codestream's signature, then noise
    routes["/photo.jxl"] = Route(jxl, "image/jxl")
    routes["/photo-untyped"] = Route(jxl, "application/octet-stream")
    for name, (content_type, text) in inline_pages(media).items():
        routes[name] = Route(text, content_type, encoding="gzip" if name.endswith(".js") else None)
    return routes


def inline_pages(media: dict[str, bytes]) -> dict[str, tuple[str, bytes]]:
    """Pages that carry pictures inside them, as image search results and SVG wrappers do."""
    vivid, calm = base64.b64encode(media["vivid.jpg"]), base64.b64encode(media["calm.jpg"])
    escaped = vivid.replace(b"/", b"\\/").replace(b"=", b"\\x3d")
    svg_png = base64.b64encode(media["alpha.png"])
    return {
        "/results.html": ("text/html; charset=utf-8",
                          b'<p>results</p><img src="data:image/jpeg;base64,' + vivid
                          + b'"><img src="data:image/jpeg;base64,' + calm + b'"><p>end</p>'),
        "/calm-only.html": ("text/html", b'<img src="data:image/jpeg;base64,' + calm + b'">'),
        "/thumbs.js": ("text/javascript", b"var t=['data:image/jpeg;base64," + escaped + b"'];"),
        "/wrapper.svg": ("image/svg+xml",
                         b'<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240">'
                         b'<image href="data:image/png;base64,' + svg_png + b'"/></svg>'),
    }  # fmt: skip


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    media: dict[str, bytes],
    origin_tls: tuple[Path, Path],
) -> Iterator[tuple[Proxy, Origin, Origin]]:
    state = tmp_path_factory.mktemp("proxy-state")
    policy = state / "policy.yaml"
    policy.write_text(POLICY)
    routes = routes_for(media)
    with (
        Origin(routes, tls=origin_tls) as https_origin,
        Origin(routes) as http_origin,
        Proxy(
            state, policy,
            extra=["--scorer", "heuristic", "--set", "proxyauth=any"],
            upstream_ca=origin_tls[0],
        ) as proxy,
    ):  # fmt: skip
        yield proxy, https_origin, http_origin
        print(proxy.log())


def fetch_as(
    proxy: Proxy, user: str, url: str, headers: dict[str, str] | None = None
) -> Fetched:
    """Through the proxy, authenticated as `user` (which picks the child)."""
    credentials = f"{user}:secret@127.0.0.1:{proxy.port}"
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://{credentials}",
                                     "https": f"http://{credentials}"}),
        *[h for h in proxy.opener().handlers if isinstance(h, urllib.request.HTTPSHandler)],
    )
    wanted = {"Accept-Encoding": "identity", **(headers or {})}
    request = urllib.request.Request(url, headers=wanted)
    try:
        with opener.open(request, timeout=30) as response:
            return Fetched(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Fetched(error.code, dict(error.headers.items()), error.read())


def rows(proxy: Proxy, count: int, timeout: float = 10.0) -> list[dict[str, object]]:
    """The newest `count` decision rows, waiting for the writer thread to commit them."""
    deadline = time.monotonic() + timeout
    while True:
        if proxy.database.exists():
            with sqlite3.connect(proxy.database) as db:
                db.row_factory = sqlite3.Row
                found = [dict(r) for r in db.execute("select * from decisions order by id")]
            if len(found) >= count or time.monotonic() > deadline:
                return found
        elif time.monotonic() > deadline:
            return []
        time.sleep(0.1)


def last_row_for(proxy: Proxy, path: str, child: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        matches = [r for r in rows(proxy, 0) if r["path"] == path and r["child"] == child]
        if matches:
            return matches[-1]
        time.sleep(0.1)
    raise AssertionError(f"no decision row for {child} {path}")


def image(data: bytes) -> Image.Image:
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    return decoded


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_calm_image_passes_byte_identical(stack, media, scheme) -> None:
    proxy, https_origin, http_origin = stack
    origin = https_origin if scheme == "https" else http_origin
    got = fetch_as(proxy, "calmkid", origin.url("/calm.jpg"))
    assert got.status == 200
    assert got.body == media["calm.jpg"]
    assert got.header("x-moodgate").startswith("pass;")
    row = last_row_for(proxy, "/calm.jpg", "calmkid")
    assert row["action"] == "pass" and row["outcome"] in {"scored", "cached"}
    assert row["valence"] is not None and row["arousal"] < 0.2
    assert row["host"] == "127.0.0.1" and row["scorer"] == "heuristic"


@pytest.mark.parametrize("name", ["vivid.jpg", "alpha.png", "anim.gif", "vivid.webp",
                                  "vivid.avif", "anim.avif"])
def test_arousing_image_is_calmed_in_same_format_and_size(stack, media, name) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "calmkid", origin.url(f"/{name}"))
    original, calmed = image(media[name]), image(got.body)
    assert got.status == 200
    assert got.header("x-moodgate").startswith("calm;"), got.header("x-moodgate")
    assert calmed.format == original.format
    assert calmed.size == original.size
    assert got.body != media[name]
    assert getattr(calmed, "n_frames", 1) == getattr(original, "n_frames", 1)
    if name == "alpha.png":
        assert calmed.mode == "RGBA"
        np.testing.assert_array_equal(
            np.asarray(calmed)[..., 3], np.asarray(original.convert("RGBA"))[..., 3]
        )
    before = np.asarray(original.convert("RGB"), dtype=np.float32)
    after = np.asarray(calmed.convert("RGB"), dtype=np.float32)
    assert np.abs(before - after).mean() > 2.0  # really re-coloured, not just re-encoded
    assert got.header("cache-control") == "no-store"
    row = last_row_for(proxy, f"/{name}", "calmkid")
    assert row["action"] == "calm" and row["rule"] == "calmkid/lively"
    assert row["after_arousal"] < row["arousal"]


def test_arousing_image_is_blocked_with_same_size_placeholder(stack, media) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "strictkid", origin.url("/vivid.jpg"))
    placeholder = image(got.body)
    assert got.status == 200
    assert placeholder.format == "JPEG" and placeholder.size == image(media["vivid.jpg"]).size
    pixels = np.asarray(placeholder.convert("RGB"), dtype=np.float32)
    assert pixels.std(axis=(0, 1)).max() < 3.0  # flat, nothing of the original left
    row = last_row_for(proxy, "/vivid.jpg", "strictkid")
    assert row["action"] == "block" and row["rule"] == "strictkid/lively"


def test_avif_is_judged_as_an_image_not_as_video(stack, media) -> None:
    """AVIF is ISO BMFF like MP4; browsers ask for it first, so it must not slip through."""
    proxy, origin, _ = stack
    got = fetch_as(proxy, "strictkid", origin.url("/vivid.avif"))
    placeholder = image(got.body)
    assert got.status == 200 and got.header("content-type") == "image/avif"
    assert placeholder.format == "AVIF" and placeholder.size == image(media["vivid.avif"]).size
    assert got.header("x-moodgate").startswith("block;")
    row = last_row_for(proxy, "/vivid.avif", "strictkid")
    assert (row["kind"], row["rule"]) == ("avif", "strictkid/lively")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_content_encodings(stack, media, encoding) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "strictkid", origin.url(f"/{encoding}.jpg"))
    # The placeholder goes back with the origin's Content-Encoding (urllib does not decode it).
    assert got.header("content-encoding") == encoding
    assert got.header("x-moodgate").startswith("block;")
    placeholder = image(decode(got.body, encoding))
    assert placeholder.format == "JPEG" and placeholder.size == (640, 427)


def test_sniffing_beats_content_type(stack, media) -> None:
    proxy, origin, _ = stack
    sniffed = fetch_as(proxy, "strictkid", origin.url("/octet-stream"))
    assert sniffed.header("x-moodgate").startswith("block;")
    assert image(sniffed.body).size == image(media["vivid.jpg"]).size


def test_tracking_pixel_and_html_are_untouched(stack, media) -> None:
    proxy, origin, _ = stack
    pixel = fetch_as(proxy, "strictkid", origin.url("/pixel.gif"))
    assert pixel.body == media["pixel.gif"]
    assert last_row_for(proxy, "/pixel.gif", "strictkid")["outcome"] == "skipped"
    page = fetch_as(proxy, "strictkid", origin.url("/page.html"))
    assert page.body == b"<!doctype html><p>hello</p>"
    assert page.header("x-moodgate") is None


BAD = ["truncated.jpg", "badcrc.png", "bomb.png", "html-as.jpg", "empty.jpg"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_passes_under_default_on_error(stack, media, name) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "guest", origin.url(f"/{name}"))
    assert got.status == 200
    expected = routes_for(media)[f"/{name}"].body
    assert got.body == expected
    row = last_row_for(proxy, f"/{name}", "default")
    assert row["outcome"] == "error" and row["action"] == "pass" and row["error"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_blocked_when_policy_says_so(stack, media, name) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "strictkid", origin.url(f"/{name}"))
    row = last_row_for(proxy, f"/{name}", "strictkid")
    assert row["outcome"] == "error" and row["action"] == "block"
    assert row["rule"] == "strictkid/on_error"
    if got.status == 200:
        assert got.body != routes_for(media)[f"/{name}"].body
        image(got.body)  # a decodable placeholder
    else:
        assert got.status == 403
    # ...and the proxy keeps serving.
    assert fetch_as(proxy, "strictkid", origin.url("/page.html")).status == 200


def test_fifty_parallel_fetches(stack, media) -> None:
    proxy, origin, _ = stack
    names = ["calm.jpg", "vivid.jpg", "alpha.png", "anim.gif", "page.html"] * 10

    def one(name: str) -> int:
        return fetch_as(proxy, "calmkid", origin.url(f"/{name}")).status

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(one, names))
    assert statuses == [200] * 50


@pytest.fixture()
def ranged_image(media: dict[str, bytes]) -> Iterator[RangeOrigin]:
    origin = RangeOrigin(media["vivid.jpg"], content_type="image/jpeg")
    yield origin
    origin.close()


def test_a_ranged_image_request_gets_the_whole_judged_file(stack, media, ranged_image) -> None:
    """Asking for a slice of an image must not get it past the filter in pieces."""
    proxy, _, _ = stack
    for url, accept in [(ranged_image.url("/photo.jpg"), "*/*"),
                        (ranged_image.url("/img?id=7"), "image/avif,image/webp,*/*")]:  # fmt: skip
        got = fetch_as(proxy, "strictkid", url, {"Range": "bytes=0-999", "Accept": accept})
        assert ranged_image.seen[-1] is None  # the proxy asked for the whole file
        assert got.status == 200 and got.header("x-moodgate").startswith("block;")
        assert image(got.body).size == (640, 427)  # the placeholder, whole


def test_an_image_fragment_gets_on_error(stack, media, ranged_image) -> None:
    """Nothing in the request says image, so the origin answers 206: a fragment cannot be
    scored, so the policy's on_error decides (strict: block, as 403; default: pass)."""
    proxy, _, _ = stack
    url = ranged_image.url("/blob?id=7")
    blocked = fetch_as(proxy, "strictkid", url, {"Range": "bytes=0-999"})
    assert ranged_image.seen[-1] == "bytes=0-999"
    assert blocked.status == 403 and blocked.header("x-moodgate").startswith("block;")
    row = last_row_for(proxy, "/blob", "strictkid")
    assert (row["action"], row["rule"], row["outcome"]) == ("block", "strictkid/on_error", "error")
    assert "partial" in row["error"] and row["kind"] == "jpeg"
    passed = fetch_as(proxy, "calmkid", url, {"Range": "bytes=0-999"})
    assert passed.status == 206 and passed.body == media["vivid.jpg"][:1000]
    assert last_row_for(proxy, "/blob", "calmkid")["outcome"] == "error"


def test_images_false_passes_unscored_but_host_lists_still_apply(stack, media) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "blindkid", origin.url("/vivid.jpg"))
    assert got.status == 200 and got.body == media["vivid.jpg"]
    row = last_row_for(proxy, "/vivid.jpg", "blindkid")
    assert (row["action"], row["rule"], row["outcome"]) == (
        "pass", "blindkid/images-not-inspected", "skipped")  # fmt: skip
    assert row["valence"] is None  # never scored


def test_images_inlined_in_pages_scripts_and_svg_are_judged(stack, media) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "strictkid", origin.url("/results.html"))
    (blocked, kept) = find_inline_images(got.body)
    assert kept.data == media["calm.jpg"]  # the calm one is left as it was
    placeholder = image(blocked.data)
    assert placeholder.format == "JPEG" and placeholder.size == (640, 427)
    assert np.asarray(placeholder.convert("RGB"), dtype=np.float32).std(axis=(0, 1)).max() < 3
    assert got.body.startswith(b"<p>results</p>") and got.body.endswith(b"<p>end</p>")
    assert got.header("cache-control") == "no-store"
    row = last_row_for(proxy, "/results.html#inline-1", "strictkid")
    assert (row["action"], row["rule"], row["kind"]) == ("block", "strictkid/lively", "jpeg")
    assert last_row_for(proxy, "/results.html#inline-2", "strictkid")["action"] == "pass"

    calmed = fetch_as(proxy, "calmkid", origin.url("/thumbs.js"))  # gzip, escaped payload
    text = decode(calmed.body, "gzip")
    (inline,) = find_inline_images(text)
    payload = text[inline.start : inline.end]  # escaped as the script had it
    assert b"\\/" in payload and b"/" not in payload.replace(b"\\/", b"") and b"=" not in payload
    assert image(inline.data).size == (640, 427) and inline.data != media["vivid.jpg"]
    assert last_row_for(proxy, "/thumbs.js#inline-1", "calmkid")["action"] == "calm"

    svg = fetch_as(proxy, "calmkid", origin.url("/wrapper.svg"))
    (embedded,) = find_inline_images(svg.body)
    assert image(embedded.data).mode == "RGBA" and embedded.data != media["alpha.png"]
    assert svg.body.startswith(b"<svg") and svg.header("content-type") == "image/svg+xml"


def test_a_page_whose_inlined_images_pass_is_byte_identical(stack, media) -> None:
    proxy, origin, _ = stack
    got = fetch_as(proxy, "strictkid", origin.url("/calm-only.html"))
    assert got.body == inline_pages(media)["/calm-only.html"][1]
    assert got.header("cache-control") is None


def test_formats_without_a_decoder_are_turned_down_and_get_on_error(stack, media) -> None:
    """Safari offers JPEG XL and HEIC; servers that negotiate get told no, and one that sends
    such an image anyway gets the policy's on_error, like a corrupt one."""
    proxy, _, origin = stack
    safari = ("image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,"
              "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5")  # fmt: skip
    fetch_as(proxy, "calmkid", origin.url("/calm.jpg"), {"Accept": safari})
    sent = origin.headers_seen[-1]["accept"]
    assert "image/jxl;q=0" in sent and "image/heic;q=0" in sent and "image/heic," not in sent
    assert sent.startswith("image/webp,image/avif,video/*;q=0.8,image/png")
    for path in ("/photo.jxl", "/photo-untyped"):
        blocked = fetch_as(proxy, "strictkid", origin.url(path))
        assert blocked.status == 403 and blocked.header("x-moodgate").startswith("block;")
        row = last_row_for(proxy, path, "strictkid")
        assert (row["outcome"], row["rule"]) == ("error", "strictkid/on_error")
        assert row["error"].startswith("jpeg-xl")
        passed = fetch_as(proxy, "calmkid", origin.url(path))
        assert passed.status == 200 and passed.body.startswith(b"\xff\x0a")
