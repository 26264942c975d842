"""Apps that pin their own certificate: learnt per device, then passed through, never
learnt from a device that does not trust moodgate's CA or refuses it everywhere."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from moodgate.pinning import PinnedHosts
from realnet import Origin, Proxy, Route


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_learnt_only_on_a_device_that_trusts_the_ca() -> None:
    pinned = PinnedHosts()
    assert pinned.refused("10.0.0.7", "api.bank.example") == "untrusted"  # no CA installed
    assert not pinned.passes("10.0.0.7", "api.bank.example")
    pinned.trusted("10.0.0.7")
    assert pinned.refused("10.0.0.7", "api.bank.example") == "learnt"
    assert pinned.refused("10.0.0.7", "api.bank.example") == "known"
    assert pinned.passes("10.0.0.7", "api.bank.example")
    assert not pinned.passes("10.0.0.8", "api.bank.example")  # per device
    assert pinned.state() == {"hosts": 1, "devices": 1, "refusing_devices": [],
                              "by_device": {"10.0.0.7": ["api.bank.example"]}}


def test_a_device_refusing_everywhere_learns_nothing_more() -> None:
    """The CA removed from a child's tablet must not turn into a way around the filter."""
    clock = Clock()
    pinned = PinnedHosts(max_refusals_per_hour=3, clock=clock)
    pinned.trusted("tab")
    outcomes = [pinned.refused("tab", f"site{i}.example") for i in range(5)]
    assert outcomes == ["learnt"] * 3 + ["refuses-everything"] * 2
    assert not pinned.passes("tab", "site0.example")  # what it had learnt is off too
    assert pinned.state()["refusing_devices"] == ["tab"]
    capped = PinnedHosts(max_hosts=2, max_refusals_per_hour=100)
    capped.trusted("phone")
    assert [capped.refused("phone", h) for h in "abc"] == ["learnt", "learnt", "full"]


def pinned_app(proxy: Proxy, origin_ca: Path) -> urllib.request.OpenerDirector:
    """A client that trusts only its server's own certificate, as a pinning app does."""
    context = ssl.create_default_context(cafile=str(origin_ca))
    proxies = {"https": f"http://127.0.0.1:{proxy.port}"}
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies),
                                       urllib.request.HTTPSHandler(context=context))


def abandon_handshake(port: int, target: str) -> None:
    """What a browser does with a spare connection: CONNECT, a ClientHello, then gone."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        assert b" 200 " in raw.recv(4096)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # never judges it
        tls = context.wrap_socket(
            raw, server_hostname=target.split(":")[0], do_handshake_on_connect=False)
        tls.setblocking(False)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()  # the ClientHello goes out; the answer is never read
        time.sleep(0.2)


def wait_for(proxy: Proxy, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proxy.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log:\n{proxy.log()[-3000:]}")
        time.sleep(0.1)


@pytest.mark.parametrize("pass_pinned", [True, False])
def test_a_pinning_app_works_from_its_second_connection(
    tmp_path: Path, media: dict[str, bytes], origin_tls: tuple[Path, Path], pass_pinned: bool
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  preset: none\n  rules:\n"
                      "    - {name: lively, when: 'arousal > 0.2', action: block}\n")  # fmt: skip
    extra = ["--scorer", "heuristic"]
    if not pass_pinned:
        extra += ["--config", str(tmp_path / "settings.yaml")]
        (tmp_path / "settings.yaml").write_text("pass_pinned_apps: no\n")
    routes = {"/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg")}
    with (
        Origin(routes, tls=origin_tls) as origin,
        Proxy(tmp_path / "state", policy, extra=extra, upstream_ca=origin_tls[0]) as proxy,
    ):
        url = f"https://localhost:{origin.port}/vivid.jpg"
        # A browser with the CA installed: inspected, the picture blocked.
        assert proxy.fetch(url).header("x-moodgate").startswith("block;")
        abandon_handshake(proxy.port, f"localhost:{origin.port}")
        time.sleep(0.5)
        assert "pinned-app" not in proxy.log()  # a dropped connection is not a refusal
        app = pinned_app(proxy, origin_tls[0])
        with pytest.raises(urllib.error.URLError):  # moodgate's certificate: refused
            app.open(url, timeout=15)
        if not pass_pinned:
            with pytest.raises(urllib.error.URLError):
                app.open(url, timeout=15)
            assert "pinned-app" not in proxy.log()
            return
        wait_for(proxy, "pinned-app device=127.0.0.1 host=localhost outcome=learnt")
        with app.open(url, timeout=15) as response:  # a plain tunnel to the real server
            assert response.read() == media["vivid.jpg"]  # uninspected, as the log says


def test_what_was_learnt_survives_a_restart_and_a_broken_file_does_not_stop_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pinned-apps.json"
    before = PinnedHosts(path=path, max_refusals_per_hour=1)
    before.trusted("phone")
    assert before.refused("phone", "api.bank.example") == "learnt"
    before.trusted("laptop")
    before.refused("laptop", "a.example")
    assert before.refused("laptop", "b.example") == "refuses-everything"
    saved = path.read_text()
    path.unlink()
    assert before.refused("laptop", "c.example") == "refuses-everything"
    assert not path.exists()  # written as the flag flipped, not on every later refusal
    path.write_text(saved)
    after = PinnedHosts(path=path)
    assert after.passes("phone", "api.bank.example")
    assert not after.passes("laptop", "a.example")  # still refusing everywhere
    assert after.refused("phone", "game.example") == "untrusted"  # trust is shown anew
    path.write_text("{not json")
    assert PinnedHosts(path=path).state()["hosts"] == 0
