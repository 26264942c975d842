"""Images inlined as base64 data: URIs: found in every escaped form, and written back alike."""

from __future__ import annotations

import base64

from hypothesis import example, given, settings
from hypothesis import strategies as st

import media_factory as mf
from moodgate.media.inline import find_inline_images, replace_inline_images


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_plain_html_and_css() -> None:
    image = mf.jpeg(mf.vivid_chaos(120, 80))
    html = b'<img src="data:image/jpeg;base64,' + b64(image) + b'" alt="x">'
    css = b".hero{background:url(data:image/jpeg;base64," + b64(image) + b")}"
    for text in (html, css):
        (found,) = find_inline_images(text)
        assert found.data == image and not found.escaped_slash and set(found.padding) == {b"="}
        assert text[found.start : found.end] == b64(image)


def test_escaped_javascript_and_json_strings_round_trip() -> None:
    image = mf.png(mf.vivid_chaos(64, 48))
    payload = b64(image)
    assert b"/" in payload or b"=" in payload
    for slash, pad in [(b"\\/", b"\\x3d"), (b"/", b"\\u003d"), (b"\\/", b"=")]:
        escaped = payload.replace(b"/", slash).replace(b"=", pad)
        text = b"var thumbs=['data:image/png;base64," + escaped + b"'];"
        (found,) = find_inline_images(text)
        assert found.data == image
        # Writing the same image back reproduces the text exactly.
        assert replace_inline_images(text, {found: image}) == text
        other = mf.png(mf.calm_landscape(64, 48))
        (again,) = find_inline_images(replace_inline_images(text, {found: other}))
        assert again.data == other and again.padding == found.padding


def test_small_broken_and_many() -> None:
    image = mf.jpeg(mf.vivid_chaos(120, 80))
    pixel = mf.tracking_pixel()
    text = b"".join(
        b'<img src="data:image/gif;base64,' + b64(pixel) + b'">'
        + b'<img src="data:image/jpeg;base64,' + b64(image) + b'">'
        for _ in range(5)
    ) + b'<img src="data:image/png;base64,' + b"A" * 4097 + b'">'  # not valid base64
    assert len(find_inline_images(text, min_bytes=2048)) == 5
    assert len(find_inline_images(text, min_bytes=0)) == 10  # the 4097 A's are skipped
    assert len(find_inline_images(text, min_bytes=2048, limit=3)) == 3
    assert find_inline_images(b"data:image/svg+xml;base64,PHN2Zz4=") == []  # SVG: not a raster


def test_replacing_some_keeps_everything_else() -> None:
    first, second = mf.jpeg(mf.vivid_chaos(120, 80)), mf.jpeg(mf.vivid_chaos(90, 60, seed=3))
    text = (b"<p>a</p><img src='data:image/jpeg;base64," + b64(first) + b"'><p>b</p>"
            b"<img src='data:image/jpeg;base64," + b64(second) + b"'><p>c</p>")
    found = find_inline_images(text)
    replaced = replace_inline_images(text, {found[1]: b"new"})
    assert replaced.startswith(text[: found[1].start]) and replaced.endswith(b"'><p>c</p>")
    assert [i.data for i in find_inline_images(replaced)] == [first, b"new"]


PIECES = [b"data:image/png;base64,", b"data:image/jpeg;base64,", b"iVBORw0KGgo", b"/9j/4AAQ",
          b"\\/", b"\\x3d", b"\\u003d", b"=", b"AAAA", b"'", b'"', b"<img src=", b"\x00"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.binary(max_size=64))
# Padding written two ways in one payload (found by this test): each '=' keeps its form.
@example([b"data:image/png;base64,", b"iVBORw0KGgo", b"iVBORw0KGgo", b"/9j/4AAQ", b"\\x3d",
          b"\\u003d"], b"")
@example([b"data:image/png;base64,", b"iVBORw0KGgo", b"/9j/4AAQ", b"\\/"], b"")
def test_any_text_is_read_without_error_and_written_back_unchanged(
    pieces: list[bytes], noise: bytes
) -> None:
    text = b"".join(pieces) + noise
    found = find_inline_images(text)
    assert replace_inline_images(text, {image: image.data for image in found}) == text


def test_padding_written_two_ways_keeps_each_form_for_a_new_picture() -> None:
    image, other = b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"  # 4 bytes: two '=' each
    payload = b64(image)
    assert payload.endswith(b"==")
    text = b"x='data:image/png;base64," + payload[:-2] + b"\\x3d\\u003d';"
    (found,) = find_inline_images(text)
    assert found.data == image and found.padding == (b"\\x3d", b"\\u003d")
    swapped = replace_inline_images(text, {found: other})
    assert swapped == b"x='data:image/png;base64," + b64(other)[:-2] + b"\\x3d\\u003d';"
    (again,) = find_inline_images(swapped)
    assert again.data == other
