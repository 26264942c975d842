from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import media_factory
from realnet import make_certificate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """@pytest.mark.slow tests (the full soak, long fuzzing) run only with MOODGATE_SLOW=1."""
    if os.environ.get("MOODGATE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set MOODGATE_SLOW=1 (or make soak / make fuzz)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def origin_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("origin-tls"))


@pytest.fixture(scope="session")
def media() -> dict[str, bytes]:
    """Real encoded media, made once per run."""
    return {
        "calm.jpg": media_factory.jpeg(media_factory.calm_landscape()),
        "vivid.jpg": media_factory.jpeg(media_factory.vivid_chaos()),
        "vivid.webp": media_factory.webp(media_factory.vivid_chaos()),
        "vivid.avif": media_factory.avif(media_factory.vivid_chaos()),
        "anim.avif": media_factory.animated_avif(),
        "alpha.png": media_factory.alpha_png(),
        "anim.gif": media_factory.animated_gif(),
        "pixel.gif": media_factory.tracking_pixel(),
        "truncated.jpg": media_factory.truncated_jpeg(),
        "badcrc.png": media_factory.png_with_bad_crc(),
        "bomb.png": media_factory.decompression_bomb(),
    }
