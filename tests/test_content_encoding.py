"""Bounded content decoding: every coding mitmproxy speaks, and bombs stop at the limit."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from moodgate.media.content_encoding import BodyTooLarge, decoded_body

TEXT = b"<html>" + b"moodgate reads pictures inlined in pages. " * 2000
MB = 1 << 20


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_each_coding_round_trips(coding: str) -> None:
    assert decoded_body(ENCODERS[coding](TEXT), coding.upper(), len(TEXT)) == TEXT


def test_raw_deflate_multi_member_gzip_and_a_list_of_codings() -> None:
    assert decoded_body(_deflate_raw(TEXT), "deflate", MB) == TEXT
    assert decoded_body(gzip.compress(TEXT[:100]) + gzip.compress(TEXT[100:]), "gzip", MB) == TEXT
    twice = brotli.compress(gzip.compress(TEXT))  # gzip first, then br: undone br first
    assert decoded_body(twice, "gzip, br", MB) == TEXT
    assert decoded_body(TEXT, None, MB) == decoded_body(TEXT, "identity", MB) == TEXT


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_a_bomb_stops_at_the_limit(coding: str) -> None:
    bomb = ENCODERS[coding](bytes(64 * MB))
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge):
        decoded_body(bomb, coding, 4 * MB)
    assert len(decoded_body(bomb, coding, 64 * MB)) == 64 * MB  # exactly at the limit: fine


def test_identity_over_the_limit_and_broken_bodies() -> None:
    with pytest.raises(BodyTooLarge):
        decoded_body(TEXT, None, 10)
    for coding in ("gzip", "deflate", "br", "zstd"):
        with pytest.raises(ValueError) as err:
            decoded_body(b"not compressed at all", coding, MB)
        assert not isinstance(err.value, BodyTooLarge)
    with pytest.raises(ValueError, match="unknown content-encoding"):
        decoded_body(TEXT, "compress", MB)
