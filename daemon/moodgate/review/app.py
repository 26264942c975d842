"""The review page: a small tornado app, served on the proxy's own asyncio loop or standalone.

LAN only (the listen address and every client address), one password (scrypt, see auth.py),
signed session cookies, tornado's XSRF tokens on every POST, and strict security headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tornado.httpserver
import tornado.web

from moodgate.emotion.base import Emotion
from moodgate.pinning import PINNED_APPS_FILE, PinnedHosts
from moodgate.policy import Policy, Profile, explain
from moodgate.review.auth import PasswordFile, cookie_secret, is_lan_address
from moodgate.review.charts import circumplex, rating_widget, timeline
from moodgate.review.data import LABELS, ReviewData
from moodgate.review.thumbs import ThumbnailStore, thumbs_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "moodgate_review"
SESSION_DAYS = 7
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class ReviewContext:
    """What the handlers need; policy() returns the policy with learnt adjustments applied,
    base_policy() the policy file's own rules."""

    state_dir: Path
    data: ReviewData
    thumbs: ThumbnailStore
    passwords: PasswordFile
    policy: Callable[[], Any]
    base_policy: Callable[[], Policy]


class BaseHandler(tornado.web.RequestHandler):
    context: ReviewContext

    def initialize(self, context: ReviewContext) -> None:
        self.context = context

    def set_default_headers(self) -> None:
        for name, value in _HEADERS.items():
            self.set_header(name, value)

    def prepare(self) -> None:
        # A LAN listen address can still be port-forwarded: refuse outside clients too.
        if not is_lan_address(self.request.remote_ip or ""):
            raise tornado.web.HTTPError(403, "the review page is for the home network only")

    def get_current_user(self) -> str | None:
        value = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        fingerprint = self.context.passwords.fingerprint()
        if value is None or not fingerprint or value.decode() != fingerprint:
            return None
        return "parent"

    async def blocking(self, func: Callable[..., Any], *args: Any) -> Any:
        """SQLite and scrypt off the event loop the proxy shares."""
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def _safe_next(target: str | None) -> str:
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class LoginHandler(BaseHandler):
    def get(self) -> None:
        self.render("login.html", error=None, next=_safe_next(self.get_argument("next", "/")),
                    password_set=self.context.passwords.is_set())  # fmt: skip

    async def post(self) -> None:
        password = self.get_body_argument("password", "")
        target = _safe_next(self.get_body_argument("next", "/"))
        ok = self.context.passwords.is_set() and await self.blocking(
            self.context.passwords.verify, password
        )
        if not ok:
            await asyncio.sleep(1.0)  # makes online guessing slow
            self.set_status(403)
            self.render("login.html", error="That password is not right.", next=target,
                        password_set=self.context.passwords.is_set())  # fmt: skip
            return
        self.set_signed_cookie(
            SESSION_COOKIE, self.context.passwords.fingerprint(), expires_days=SESSION_DAYS,
            httponly=True, samesite="Strict",
        )  # fmt: skip
        self.redirect(target)


class LogoutHandler(BaseHandler):
    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/login")


def _children(policy: Any, seen: list[str]) -> list[str]:
    named = [*policy.children(), "default"]
    return named + [c for c in seen if c not in named and c != "parents"]


class HomeHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        policy = self.context.policy()
        children = _children(policy, await self.blocking(self.context.data.children_seen))
        counts = {
            child: await self.blocking(self.context.data.counts, child, policy.timezone)
            for child in children
        }
        # What passes uninspected: apps that pin their certificate, learnt per device.
        pinned = await self.blocking(_pinned_apps, self.context.state_dir)
        self.render("home.html", children=children, counts=counts, pinned=pinned)


def _pinned_apps(state_dir: Path) -> dict[str, Any]:
    return PinnedHosts(path=state_dir / PINNED_APPS_FILE).state()


def _profile(policy: Any, child: str) -> Profile | None:
    try:
        return policy.profile_named(child, datetime.now(UTC))
    except KeyError:
        return None


def _explain(policy: Any, row: dict[str, Any]) -> str:
    if row.get("valence") is None or row.get("arousal") is None:
        detail = f" ({row['outcome']}: {row['error']})" if row.get("error") else ""
        return f"Not scored{detail}; decided by {row['rule']}."
    emotion = Emotion(float(row["valence"]), float(row["arousal"]), row.get("explicit"))
    try:
        at = datetime.fromisoformat(str(row["time"]))
        return explain(policy, str(row["child"]), at, emotion, str(row["host"]))
    except (KeyError, ValueError):
        return f"Decided by {row['rule']} (that child is no longer in the policy)."


def _local(iso: str, zone: Any) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(zone).strftime("%a %d %b %H:%M")
    except ValueError:
        return iso


class ChildHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self, child: str) -> None:
        context = self.context
        policy, base = context.policy(), context.base_policy()
        everything = self.get_argument("all", "") == "1"
        data = context.data
        counts = await self.blocking(data.counts, child, policy.timezone)
        days = await self.blocking(data.timeline, child, policy.timezone)
        points = await self.blocking(data.points, child)
        feed = await self.blocking(data.feed, child, everything)
        labels = await self.blocking(data.latest_labels, child)
        profile = _profile(policy, child)
        items = [
            {
                "row": row,
                "explain": _explain(policy, row),
                "when": _local(str(row["time"]), policy.timezone),
                "label": labels.get(int(row["id"]), {}),
                "rating": rating_widget(
                    int(row["id"]), *labels.get(int(row["id"]), {}).get("rating", (None, None))
                ),
                "before": bool(row.get("uid")) and context.thumbs.has(str(row["uid"]), "before"),
                "after": bool(row.get("uid")) and context.thumbs.has(str(row["uid"]), "after"),
            }
            for row in feed
        ]  # fmt: skip
        learnt = getattr(policy, "adjustments", {}).get(child)
        self.render(
            "child.html", child=child, counts=counts, everything=everything, items=items,
            circumplex=circumplex(profile, points, _profile(base, child)),
            timeline=timeline(days), labels=LABELS, learnt=learnt, profile=profile,
            next_url=self.request.uri,
        )  # fmt: skip


class ThumbHandler(BaseHandler):
    @tornado.web.authenticated
    def get(self, uid: str, side: str) -> None:
        data = self.context.thumbs.read(uid, side)
        if data is None:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "image/jpeg")
        self.set_header("Cache-Control", "private, max-age=3600")
        self.write(data)


def _float(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise ValueError(f"{value} is outside −1…+1")
    return value


class LabelHandler(BaseHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            decision_id = int(self.get_body_argument("decision"))
            label = self.get_body_argument("label", "") or None
            valence = _float(self.get_body_argument("valence", None))
            arousal = _float(self.get_body_argument("arousal", None))
        except (ValueError, tornado.web.MissingArgumentError) as exc:
            raise tornado.web.HTTPError(400, str(exc)) from exc
        decision = await self.blocking(self.context.data.decision, decision_id)
        if decision is None:
            raise tornado.web.HTTPError(404, "no such decision (retention may have removed it)")
        rating = (valence, arousal) if valence is not None and arousal is not None else None
        try:
            await self.blocking(self.context.data.add_label, decision, label, rating)
        except ValueError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from exc
        back = _safe_next(self.get_body_argument("next", None)
                          or f"/child/{quote(str(decision['child']))}")  # fmt: skip
        self.redirect(f"{back.split('#', 1)[0]}#d{decision_id}")


def make_app(context: ReviewContext, debug: bool = False) -> tornado.web.Application:
    handlers: list[Any] = [
        (r"/", HomeHandler, {"context": context}),
        (r"/login", LoginHandler, {"context": context}),
        (r"/logout", LogoutHandler, {"context": context}),
        (r"/child/([A-Za-z0-9_.@-]{1,64})", ChildHandler, {"context": context}),
        (r"/thumb/([0-9a-f]{32})/(before|after)", ThumbHandler, {"context": context}),
        (r"/label", LabelHandler, {"context": context}),
    ]
    return tornado.web.Application(
        handlers,
        cookie_secret=cookie_secret(context.state_dir),
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"},
        login_url="/login",
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        autoescape="xhtml_escape",
        debug=debug,
    )


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not host:
        raise ValueError(f"review listen address {value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class ReviewServer:
    """Binds the app on the running asyncio loop; refuses addresses outside the LAN."""

    def __init__(self, app: tornado.web.Application, listen: str) -> None:
        self.app = app
        self.host, self.port = parse_listen(listen)
        if not is_lan_address(self.host):
            raise ValueError(
                f"the review page only listens on loopback or LAN addresses, not {self.host}"
            )
        self._server: tornado.httpserver.HTTPServer | None = None

    def start(self) -> None:
        server = tornado.httpserver.HTTPServer(self.app)
        server.listen(self.port, self.host)
        self._server = server
        log.info("review page on http://%s:%d/", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def review_context(
    state_dir: Path,
    database: Path,
    policy: Callable[[], Any],
    base_policy: Callable[[], Policy],
) -> ReviewContext:
    return ReviewContext(
        state_dir=state_dir,
        data=ReviewData(database),
        thumbs=ThumbnailStore(thumbs_dir(state_dir)),
        passwords=PasswordFile(state_dir),
        policy=policy,
        base_policy=base_policy,
    )
