"""`moodgate serve` runs only the mitmproxy addons a filter needs (moodgate/mitm_addons.py).
What a household relies on must still be there; what was left out must say so, not vanish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mitmproxy.addons import default_addons

from moodgate.mitm_addons import filter_addons
from realnet import REPO, Origin, Proxy, Route, free_port


def test_the_ca_page_blocks_by_url_and_the_open_proxy_guard_are_there(tmp_path: Path) -> None:
    routes = {"/ok": Route(b"fine", "text/plain"), "/ads/banner": Route(b"ad", "text/plain")}
    extra = ["--set", "block_list=|~u /ads/|403"]
    with Origin(routes) as origin, Proxy(tmp_path / "state", extra=extra) as proxy:
        assert proxy.fetch(origin.url("/ok")).body == b"fine"
        assert proxy.fetch(origin.url("/ads/banner")).status == 403
        # http://mitm.it is how a parent puts the CA on a child's device.
        page = proxy.fetch("http://mitm.it/")
        assert page.status == 200 and b"mitmproxy-ca-cert" in page.body
        pem = proxy.fetch("http://mitm.it/cert/pem")
        assert pem.status == 200 and pem.body == proxy.ca_path.read_bytes()
        names = {type(addon).__name__ for addon in filter_addons()}
        assert {"Block", "ProxyAuth", "TlsConfig", "ErrorCheck"} <= names


def test_an_option_of_a_left_out_addon_is_refused_by_name(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "moodgate.cli", "serve", "--listen", f"127.0.0.1:{free_port()}",
            "--state-dir", str(tmp_path), "--set", "moodgate_review_listen=off",
            "--set", f"save_stream_file={tmp_path / 'flows'}"]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "unknown option(s): save_stream_file" in done.stderr
    assert not (tmp_path / "flows").exists()


def test_every_addon_left_out_has_no_place_on_the_filter_path() -> None:
    """A new mitmproxy release that adds an addon makes this fail, so someone decides."""
    left_out = {type(addon).__name__ for addon in default_addons()} - {
        type(addon).__name__ for addon in filter_addons()
    }
    assert left_out == {
        "Browser", "AntiCache", "AntiComp", "ClientPlayback", "ServerPlayback",
        "CommandHistory", "Comment", "Cut", "Export", "ScriptLoader", "MapRemote", "MapLocal",
        "ModifyBody", "ModifyHeaders", "StickyAuth", "StickyCookie", "Save", "SaveHar",
    }  # fmt: skip
