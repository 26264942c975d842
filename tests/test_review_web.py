"""The review app's guards (login, XSRF, LAN only, stored secrets) and thumbnails, through
tornado's HTTP test client against a real decision database."""

from __future__ import annotations

import io
import re
import stat
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tornado.testing
from PIL import Image

import media_factory
from moodgate.pinning import PINNED_APPS_FILE, PinnedHosts
from moodgate.policy import parse_policy
from moodgate.record.store import DecisionRow, DecisionStore, read_labels
from moodgate.review.app import ReviewServer, make_app, review_context
from moodgate.review.auth import PasswordFile, cookie_secret, is_lan_address
from moodgate.review.thumbs import ThumbnailStore, make_thumbnail, thumbs_dir

PASSWORD = "a long enough secret"
POLICY = """\
version: 1
children:
  mia:
    users: [mia]
    preset: 8-12
default:
  preset: none
"""
UID = "ab" * 16


def _seed(state: Path) -> None:
    store = DecisionStore(state / "decisions.sqlite", batch_interval=0.0)
    store.start()
    store.record(DecisionRow(
        client="192.168.1.23", child="mia", host="pics.example", path="/a.jpg",
        content_type="image/jpeg", kind="jpeg", bytes=5000, action="block",
        rule="mia/scary", valence=-0.8, arousal=0.7, uid=UID,
    ))  # fmt: skip
    assert store.flush()
    store.close()
    image = media_factory.jpeg(media_factory.vivid_chaos())
    assert ThumbnailStore(thumbs_dir(state)).save(UID, image) == 1
    PasswordFile(state).set(PASSWORD)


class ReviewAppTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self):  # type: ignore[no-untyped-def]
        import tempfile

        self.state = Path(tempfile.mkdtemp(prefix="moodgate-review-"))
        _seed(self.state)
        policy = parse_policy(POLICY)
        context = review_context(self.state, self.state / "decisions.sqlite",
                                 lambda: policy, lambda: policy)  # fmt: skip
        return make_app(context)

    # -- helpers ---------------------------------------------------------------------
    def _cookies(self, response) -> dict[str, str]:  # type: ignore[no-untyped-def]
        found = {}
        for header in response.headers.get_list("Set-Cookie"):
            name, _, rest = header.partition("=")
            found[name] = rest.split(";", 1)[0]
        return found

    def _xsrf(self) -> str:
        response = self.fetch("/login")
        return self._cookies(response)["_xsrf"]

    def _login(self, password: str = PASSWORD) -> tuple[int, dict[str, str]]:
        xsrf = self._xsrf()
        body = urllib.parse.urlencode({"password": password, "_xsrf": xsrf, "next": "/"})
        response = self.fetch("/login", method="POST", body=body, follow_redirects=False,
                              headers={"Cookie": f"_xsrf={xsrf}"}, raise_error=False)  # fmt: skip
        return response.code, {"_xsrf": xsrf, **self._cookies(response)}

    @staticmethod
    def _cookie_header(cookies: dict[str, str]) -> str:
        return "; ".join(f"{k}={v}" for k, v in cookies.items())

    # -- tests -----------------------------------------------------------------------
    def test_every_page_without_login_redirects_to_login(self) -> None:
        for path in ("/", "/child/mia", f"/thumb/{UID}/before"):
            response = self.fetch(path, follow_redirects=False, raise_error=False)
            assert response.code == 302, path
            assert response.headers["Location"].startswith("/login?next=")

    def test_label_post_without_login_is_refused(self) -> None:
        xsrf = self._xsrf()
        body = urllib.parse.urlencode({"decision": 1, "label": "fine", "_xsrf": xsrf})
        headers = {"Cookie": f"_xsrf={xsrf}"}
        response = self.fetch("/label", method="POST", body=body, raise_error=False,
                              headers=headers, follow_redirects=False)  # fmt: skip
        assert response.code == 403
        assert read_labels(self.state / "decisions.sqlite") == []

    def test_wrong_password_is_refused_slowly(self) -> None:
        start = time.monotonic()
        code, cookies = self._login("not the password")
        assert code == 403 and "moodgate_review" not in cookies
        assert time.monotonic() - start >= 0.9

    def test_login_then_label_with_and_without_the_xsrf_token(self) -> None:
        code, cookies = self._login()
        assert code == 302 and "moodgate_review" in cookies
        session = self._cookie_header(cookies)
        page = self.fetch("/child/mia", headers={"Cookie": session})
        html = page.body.decode()
        assert page.code == 200 and "pics.example" in html and "mia/scary" in html
        assert f'src="/thumb/{UID}/before"' in html and 'class="reveal"' in html
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert page.headers["X-Frame-Options"] == "DENY"

        # No token: refused, nothing stored.
        body = urllib.parse.urlencode({"decision": 1, "label": "fine"})
        refused = self.fetch("/label", method="POST", body=body, raise_error=False,
                             headers={"Cookie": session}, follow_redirects=False)  # fmt: skip
        assert refused.code == 403
        # A token that does not match the cookie: refused too.
        forged = urllib.parse.urlencode({"decision": 1, "label": "fine", "_xsrf": "2|00|00|00"})
        refused = self.fetch("/label", method="POST", body=forged, raise_error=False,
                             headers={"Cookie": session}, follow_redirects=False)  # fmt: skip
        assert refused.code == 403
        assert read_labels(self.state / "decisions.sqlite") == []

        token = re.search(r'name="_xsrf" value="([^"]+)"', html)
        assert token is not None
        body = urllib.parse.urlencode({"decision": 1, "label": "fine", "_xsrf": token.group(1),
                                       "next": "/child/mia"})  # fmt: skip
        stored = self.fetch("/label", method="POST", body=body, headers={"Cookie": session},
                            follow_redirects=False, raise_error=False)  # fmt: skip
        assert stored.code == 302 and stored.headers["Location"] == "/child/mia#d1"
        labels = read_labels(self.state / "decisions.sqlite", "mia")
        assert [(r["decision_id"], r["label"], r["decision_uid"]) for r in labels] == [
            (1, "fine", UID)
        ]
        bad = urllib.parse.urlencode({"decision": 1, "label": "nonsense",
                                      "_xsrf": token.group(1)})  # fmt: skip
        assert self.fetch("/label", method="POST", body=bad, headers={"Cookie": session},
                          raise_error=False, follow_redirects=False).code == 400  # fmt: skip

        thumb = self.fetch(f"/thumb/{UID}/before", headers={"Cookie": session})
        assert thumb.headers["Content-Type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.body)).size) <= 128

    def test_the_home_page_says_what_passes_uninspected(self) -> None:
        session = self._cookie_header(self._login()[1])
        assert "Not inspected" not in self.fetch("/", headers={"Cookie": session}).body.decode()
        pinned = PinnedHosts(path=self.state / PINNED_APPS_FILE, max_refusals_per_hour=1)
        pinned.trusted("192.168.1.23")
        pinned.refused("192.168.1.23", "api.bank.example")
        pinned.trusted("192.168.1.40")
        pinned.refused("192.168.1.40", "a.example")
        pinned.refused("192.168.1.40", "b.example")  # one too many: refusing everywhere
        html = self.fetch("/", headers={"Cookie": session}).body.decode()
        assert "Not inspected" in html
        assert "<strong>192.168.1.23</strong>: api.bank.example" in html
        assert "Refusing moodgate's certificate everywhere" in html and "192.168.1.40" in html

    def test_a_new_password_logs_every_session_out(self) -> None:
        _, cookies = self._login()
        session = self._cookie_header(cookies)
        assert self.fetch("/", headers={"Cookie": session}, follow_redirects=False).code == 200
        PasswordFile(self.state).set("another long secret")
        response = self.fetch("/", headers={"Cookie": session}, follow_redirects=False,
                              raise_error=False)  # fmt: skip
        assert response.code == 302

    def test_open_redirects_are_not_followed(self) -> None:
        xsrf = self._xsrf()
        body = urllib.parse.urlencode({"password": PASSWORD, "_xsrf": xsrf,
                                       "next": "//evil.example/"})  # fmt: skip
        response = self.fetch("/login", method="POST", body=body, follow_redirects=False,
                              headers={"Cookie": f"_xsrf={xsrf}"}, raise_error=False)  # fmt: skip
        assert response.headers["Location"] == "/"


def test_secrets_are_hashed_and_private(tmp_path: Path) -> None:
    passwords = PasswordFile(tmp_path)
    assert not passwords.verify("anything")  # no password set: nobody gets in
    with pytest.raises(ValueError):
        passwords.set("short")
    passwords.set(PASSWORD)
    text = passwords.path.read_text()
    assert PASSWORD not in text and '"scheme": "scrypt"' in text
    assert stat.S_IMODE(passwords.path.stat().st_mode) == 0o600
    assert passwords.verify(PASSWORD) and not passwords.verify(PASSWORD + "x")
    secret = cookie_secret(tmp_path)
    assert cookie_secret(tmp_path) == secret  # generated once, then kept
    assert stat.S_IMODE((tmp_path / "review" / "cookie-secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "review").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("host", "lan"),
    [("127.0.0.1", True), ("192.168.1.2", True), ("10.0.0.5", True), ("fd00::1", True),
     ("::1", True), ("localhost", True), ("8.8.8.8", False), ("0.0.0.0", False),
     ("100.64.0.1", False), ("2001:db8::1", False), ("example.org", False)],
)  # fmt: skip
def test_lan_addresses(host: str, lan: bool) -> None:
    assert is_lan_address(host) is lan


def test_review_server_refuses_public_addresses(tmp_path: Path) -> None:
    policy = parse_policy(POLICY)
    app = make_app(review_context(tmp_path, tmp_path / "d.sqlite", lambda: policy,
                                  lambda: policy))  # fmt: skip
    for listen in ("8.8.8.8:8081", "0.0.0.0:8081", "[2001:db8::1]:8081"):
        with pytest.raises(ValueError, match="loopback or LAN"):
            ReviewServer(app, listen)


def test_thumbnails_are_small_and_keyed_safely(tmp_path: Path, media: dict[str, bytes]) -> None:
    for name in ("vivid.jpg", "alpha.png", "anim.gif", "vivid.webp"):
        thumb = make_thumbnail(media[name])
        assert thumb is not None, name
        image = Image.open(io.BytesIO(thumb))
        assert image.format == "JPEG" and max(image.size) <= 128
    assert make_thumbnail(media["truncated.jpg"][:200]) is None
    store = ThumbnailStore(tmp_path)
    assert store.path("../../etc/passwd", "before") is None
    assert store.path(UID, "sideways") is None
    assert store.save(UID, media["vivid.jpg"], media["calm.jpg"]) == 2
    assert store.purge(older_than_days=1) == 0
    assert store.purge(older_than_days=-1) == 2


def test_counts_and_timeline_by_local_day(tmp_path: Path) -> None:
    from moodgate.review.data import ReviewData

    _seed(tmp_path)
    data = ReviewData(tmp_path / "decisions.sqlite")
    counts = data.counts("mia", UTC)
    assert counts.today == {"pass": 0, "calm": 0, "block": 1}
    assert counts.week["block"] == 1
    days = data.timeline("mia", UTC)
    assert len(days) == 14 and days[-1][0] == datetime.now(UTC).date()
    assert days[-1][1]["block"] == 1


def test_export_ratings_is_a_training_manifest(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from moodgate.cli import main
    from moodgate.emotion.datasets import load_dataset
    from moodgate.review.data import ReviewData

    _seed(tmp_path)
    data = ReviewData(tmp_path / "decisions.sqlite")
    decision = data.decision(1)
    assert decision is not None
    data.add_label(decision, None, (-0.6, 0.5))
    data.add_label(decision, None, (-0.7, 0.6))  # the newest rating of an item counts
    out = tmp_path / "export"
    result = CliRunner().invoke(
        main, ["review", "export-ratings", "--out", str(out), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    samples = load_dataset(out / "ratings.csv")
    assert len(samples) == 1
    assert samples[0].valence == pytest.approx(-0.7) and samples[0].arousal == pytest.approx(0.6)
    assert samples[0].path.exists() and samples[0].category == "mia"
    assert max(Image.open(samples[0].path).size) <= 128


def test_a_database_from_before_uids_and_labels_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from moodgate.record.store import open_database

    database = tmp_path / "decisions.sqlite"
    with sqlite3.connect(database) as db:
        db.execute("create table decisions (id integer primary key, time text, child text)")
        db.execute("insert into decisions (time, child) values ('2026-01-01T00:00:00', 'mia')")
    migrated = open_database(database)
    try:
        assert "uid" in migrated["decisions"].columns_dict
        assert "labels" in migrated.table_names()
        assert migrated["decisions"].count == 1
    finally:
        migrated.conn.close()
