"""The mitmproxy addon: hooks only. It picks out media responses, hands them to the Engine and
writes the verdict back into the flow.

Runs inside `moodgate serve`, or directly: `mitmdump -s daemon/moodgate/addon.py`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # loaded by `mitmdump -s` from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.addonmanager import Loader

from moodgate.config import Settings, load_settings
from moodgate.engine import Engine, MediaResponse
from moodgate.judged_copies import JudgedCopy
from moodgate.media import SNIFF_BYTES, MediaKind, claimed_kind, segments, sniff
from moodgate.media.content_encoding import BodyTooLarge, decoded_body
from moodgate.media.ranges import (
    RangeNotSatisfiable,
    content_range_total,
    moved_content_range,
    parse_range,
)
from moodgate.media.sniff import accept_decodable, media_type, undecodable_image
from moodgate.pipeline import Verdict
from moodgate.policy import Action, Client
from moodgate.service import kv_line

log = logging.getLogger("moodgate")

# mitmproxy option name → Settings field; every moodgate option is also a config-file key.
OPTIONS: dict[str, tuple[type, Any, str]] = {
    "moodgate_config": (str, "", "YAML file with moodgate settings"),
    "moodgate_policy": (str, "", "Policy file (YAML); empty: the embedded default policy"),
    "moodgate_state_dir": (str, "", "Directory for the decision database and caches"),
    "moodgate_model_dir": (str, "", "Directory with manifest.json and the ONNX slices"),
    "moodgate_scorer": (str, "", "Scorer: auto, nested or heuristic"),
    "moodgate_width": (str, "", "Model slice width (fraction of full MFLOPs); empty: widest"),
    "moodgate_precision": (str, "", "Model precision: fp32 or int8"),
    "moodgate_workers": (int, 0, "Scoring threads; 0: one per core"),
    "moodgate_deadline_ms": (int, 0, "Per-item decision deadline in ms; 0: the configured one"),
    "moodgate_latency_budget_ms": (
        int,
        0,
        "p95 added latency per image the slice choice aims for; 0: the configured one",
    ),
    "moodgate_shed_overload": (
        str,
        "",
        "on: answer images that even the narrowest slice cannot score within the budget, or "
        "that arrive while the event loop runs late with every worker busy, with the "
        "policy's on_timeout at once; off: queue them; empty: the configured one",
    ),
    "moodgate_explicit": (
        str,
        "",
        "on: rate how explicit each picture is for rules that test it; off: never (those "
        "rules never match); empty: the configured one",
    ),
    "moodgate_video_deadline_ms": (int, 0, "Per-video/segment deadline in ms; 0: configured"),
    "moodgate_debug_headers": (bool, False, "Add an X-Moodgate header to inspected responses"),
    "moodgate_neighbours": (str, "", "Neighbour table file for MAC matching (tests)"),
    "moodgate_review_listen": (str, "", "Review page HOST:PORT (LAN only); 'off' disables"),
}
_FIELD = {
    "moodgate_policy": "policy",
    "moodgate_state_dir": "state_dir",
    "moodgate_model_dir": "model_dir",
    "moodgate_scorer": "scorer",
    "moodgate_width": "model_width",
    "moodgate_precision": "precision",
    "moodgate_workers": "workers",
    "moodgate_deadline_ms": "deadline_ms",
    "moodgate_latency_budget_ms": "latency_budget_ms",
    "moodgate_shed_overload": "shed_overload",
    "moodgate_explicit": "explicit",
    "moodgate_video_deadline_ms": "video_deadline_ms",
    "moodgate_debug_headers": "debug_headers",
    "moodgate_neighbours": "neighbours",
    "moodgate_review_listen": "review_listen",
}


def settings_from_options(options: Any) -> Settings:
    """Config file first, then every moodgate_* option that differs from its default."""
    config = options.moodgate_config or None
    overrides = {
        field: getattr(options, name)
        for name, field in _FIELD.items()
        if getattr(options, name) != OPTIONS[name][1]
    }
    return load_settings(Path(config) if config else None, **overrides)


class Moodgate:
    """Scores every image a client downloads and passes, calms or blocks it."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._running = False

    def load(self, loader: Loader) -> None:
        for name, (kind, default, help_text) in OPTIONS.items():
            loader.add_option(name, kind, default, help_text)

    def configure(self, updated: set[str]) -> None:
        if self._running and updated & OPTIONS.keys():
            try:
                self._rebuild()
            except Exception as exc:  # keep the engine that works; refuse the change
                raise exceptions.OptionsError(f"moodgate: {exc}") from exc

    def running(self) -> None:
        self._running = True
        try:
            self._rebuild()
        except Exception:
            # A filter that silently passed everything would be worse than no proxy at all.
            log.exception("moodgate cannot start; shutting the proxy down")
            ctx.master.shutdown()

    def _rebuild(self) -> None:
        engine = Engine(settings_from_options(ctx.options))
        if self.engine is not None:
            self.engine.stop()
        self.engine = engine
        engine.start()

    def done(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Image formats no decoder here reads (JPEG XL, HEIC, JPEG 2000) are turned down in
        `Accept`, so servers that negotiate send one that can be judged. A ranged request for
        an image asks for the whole file instead: a 206 fragment cannot be judged, a server
        may always answer 200, and clients accept it."""
        engine, request = self.engine, flow.request
        if engine is None:
            return
        accept = request.headers.get("accept", "")
        decodable = accept_decodable(accept)
        ranged = "range" in request.headers and request.method == "GET"
        if decodable == accept and not ranged:
            return  # most requests: nothing to change, no profile to look up
        if not engine.profile(_client(flow)).inspect.images:
            return
        if decodable != accept:
            request.headers["accept"] = decodable
        if ranged and _asks_for_image(_path(flow, with_query=False).lower(), accept):
            _drop_range(request)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Video too large to buffer (or of unknown size) is streamed through and passed, or
        refused before its body is fetched where the policy blocks what it cannot judge."""
        engine, response = self.engine, flow.response
        if engine is None or response is None or flow.metadata.get(_FROM_COPY):
            return
        if response.status_code != 200 or flow.request.method == "HEAD":
            return
        claimed = claimed_kind(response.headers.get("content-type"))
        if claimed is None or not claimed.is_video:
            return
        inspect = engine.profile(_client(flow)).inspect
        length = response.headers.get("content-length", "")
        size = int(length) if length.isdigit() else None
        if inspect.video and size is not None and size <= inspect.max_video_bytes:
            return
        reason = "video-not-inspected" if not inspect.video else (
            "too-large" if size is not None else "unknown-size")  # fmt: skip
        verdict = engine.judge_unbuffered(self.media(flow, b"", claimed), reason)
        if verdict.action is Action.BLOCK:
            # Closing both connections now, rather than answering 403 after the upstream
            # body, spares the household's line a download of what will be thrown away.
            flow.kill()
            return
        response.stream = True
        if engine.settings.debug_headers:
            response.headers["x-moodgate"] = debug_header(verdict)

    async def response(self, flow: http.HTTPFlow) -> None:
        engine, response = self.engine, flow.response
        if engine is None or response is None or flow.request.method == "HEAD":
            return
        if flow.metadata.get(_FROM_COPY):
            return
        if response.status_code == 206:
            self._image_fragment(flow)  # video fragments: VideoRanges
            return
        if response.status_code != 200 or response.raw_content is None:
            return
        claimed = claimed_kind(response.headers.get("content-type"))
        body = self.body(flow)
        if body is None:
            self._too_large_once_decoded(flow, claimed)
            return
        kind = sniff(body[:SNIFF_BYTES])
        if not _is_media(kind) and not _is_media(claimed):
            unreadable = undecodable_image(body[:SNIFF_BYTES], response.headers.get("content-type"))
            if unreadable is not None:  # sent anyway: the policy's on_error decides
                _apply(flow, engine.judge_unreadable(
                    self.media(flow, body, None), f"{unreadable}: no decoder for this format",
                ), engine.settings.debug_headers)  # fmt: skip
                return
            await self._inline(flow, body)  # pages, scripts, SVG: only their inlined images
            return
        verdict = await engine.judge(self.media(flow, body, claimed))
        _apply(flow, verdict, engine.settings.debug_headers)
        flow.metadata[VERDICT] = verdict

    def body(self, flow: http.HTTPFlow) -> bytes | None:
        """The response body, content-decoded, up to the most moodgate reads (None past
        that: a compression bomb, or just too large); b"" where it does not decode. Decoded
        once per flow: VideoRanges reads it too."""
        if _BODY in flow.metadata:
            return flow.metadata[_BODY]
        engine, response = self.engine, flow.response
        assert engine is not None and response is not None
        limit = read_limit(engine, engine.profile(_client(flow)).inspect.max_video_bytes)
        body: bytes | None
        try:
            body = decoded_body(
                response.raw_content or b"", response.headers.get("content-encoding"), limit
            )
        except BodyTooLarge:
            body = None
        except ValueError:  # a Content-Encoding the origin got wrong
            body = b""
        flow.metadata[_BODY] = body
        return body

    def _too_large_once_decoded(self, flow: http.HTTPFlow, claimed: MediaKind | None) -> None:
        """Passed as it came, unread, or, for media, by the policy's on_too_large."""
        engine = self.engine
        assert engine is not None
        inspect = engine.profile(_client(flow)).inspect
        if claimed is None or not (inspect.video if claimed.is_video else inspect.images):
            return
        media = self.media(flow, b"", claimed)
        verdict = engine.judge_unbuffered(media, "too-large", passed="unread")
        _apply(flow, verdict, engine.settings.debug_headers)

    async def _inline(self, flow: http.HTTPFlow, body: bytes) -> None:
        engine, response = self.engine, flow.response
        assert engine is not None and response is not None
        content_type = media_type(response.headers.get("content-type"))
        if content_type not in _INLINE_TYPES or len(body) > _INLINE_MAX_BYTES:
            return
        if b"data:image/" not in body:
            return
        text = await engine.judge_inline(self.media(flow, body, None))
        if text is not None:
            response.content = text
            _mark_rewritten(response)

    def _image_fragment(self, flow: http.HTTPFlow) -> None:
        """A 206 fragment of an image cannot be scored: the policy's on_error."""
        engine, response = self.engine, flow.response
        assert engine is not None and response is not None
        claimed = claimed_kind(response.headers.get("content-type"))
        if claimed is None or not claimed.is_image:
            return
        reason = "partial content (206): a fragment of an image cannot be judged"
        media = self.media(flow, response.raw_content or b"", claimed)
        _apply(flow, engine.judge_unreadable(media, reason), engine.settings.debug_headers)

    def media(self, flow: http.HTTPFlow, body: bytes, claimed: MediaKind | None) -> MediaResponse:
        """What the engine needs of a response: who, where, what it claims, the body."""
        engine, response = self.engine, flow.response
        assert engine is not None and response is not None
        return MediaResponse(
            client=_client(flow), host=flow.request.pretty_host,
            path=_path(flow, engine.settings.log_query_strings),
            content_type=response.headers.get("content-type", ""), body=body,
            claimed_kind=claimed,
        )  # fmt: skip


class VideoRanges:
    """Players read progressive video in ranges (Safari only ever does; seeking does in every
    browser), and a 206 fragment cannot be judged. So:

    - a ranged request is answered from the judged copy of the file when there is one;
    - otherwise, when the file is known to be small enough to judge (or the player opens it
      with `bytes=0-`), the whole file is fetched, judged (by Moodgate) and kept, and the
      range is cut from the judged copy;
    - a fragmented MP4 read in ranges (DASH on-demand) is judged one fragment at a time, at
      the manifest's offsets;
    - other ranges (a file of unknown or too large size) pass as they are, except where the
      file is known to be too large to judge and the policy's on_too_large blocks that; a
      video 206 answer tells the file's size for next time, and that it is a video even
      without a video extension.
    """

    def __init__(self, core: Moodgate) -> None:
        self.core = core

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        engine, request = self.core.engine, flow.request
        if engine is None or "range" not in request.headers or request.method != "GET":
            return
        url, path = request.pretty_url, _path(flow, with_query=False).lower()
        size = engine.copies.size_of(url)  # known only for video, from an earlier answer
        if not (path.endswith(_PROGRESSIVE_VIDEO) or size):
            return  # not a video file by its name, nor known as one from an earlier answer
        client = _client(flow)
        profile = engine.profile(client)
        if not profile.inspect.video or engine.copies.is_fragmented(url):
            return  # DASH on-demand: each range is a fragment, judged as it comes
        asked = request.headers["range"]
        copy = engine.copies.get(client.viewer, url, profile)
        if copy is not None:
            flow.metadata[_FROM_COPY] = True
            flow.response = _ranged(copy, asked, engine.settings.debug_headers)
            return
        small = size is not None and size <= profile.inspect.max_video_bytes
        if asked.replace(" ", "") == "bytes=0-" or (small and engine.copies.fits(size)):
            flow.metadata[_ASKED_RANGE] = asked
            _drop_range(request)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """A 206 answer's full length decides how the next range of the file is met."""
        engine, response = self.core.engine, flow.response
        if engine is None or response is None or response.status_code != 206:
            return
        claimed = claimed_kind(response.headers.get("content-type"))
        total = content_range_total(response.headers.get("content-range"))
        if claimed is not None and claimed.is_video and total is not None:
            engine.copies.note_size(flow.request.pretty_url, total)
            if response.stream and self._refusal(flow, claimed, total) is not None:
                flow.kill()  # streaming already (over the body ceiling): refuse it now

    def _refusal(self, flow: http.HTTPFlow, claimed: MediaKind, total: int) -> Verdict | None:
        """A range of a plain video file too large to judge, where the policy blocks what it
        cannot judge (on_too_large): refused and recorded, as the whole file would be. A
        fragmented file read in ranges (DASH on-demand) is judged fragment by fragment."""
        engine = self.core.engine
        assert engine is not None
        profile = engine.profile(_client(flow))
        if (not profile.inspect.video or total <= profile.inspect.max_video_bytes
                or profile.too_large_action is not Action.BLOCK
                or engine.copies.is_fragmented(flow.request.pretty_url)):  # fmt: skip
            return None
        return engine.judge_unbuffered(self.core.media(flow, b"", claimed), "too-large")

    async def response(self, flow: http.HTTPFlow) -> None:
        engine, response = self.core.engine, flow.response
        if engine is None or response is None or flow.request.method == "HEAD":
            return
        if flow.metadata.get(_FROM_COPY):
            return
        if response.status_code == 206:
            await self._fragment(flow)
            return
        verdict = flow.metadata.get(VERDICT)
        if isinstance(verdict, Verdict):
            self._keep_copy(flow, verdict)

    def _keep_copy(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        """A judged progressive video file: kept for the player's ranged requests, and the
        range this request asked for (if any) cut from it."""
        engine, response = self.core.engine, flow.response
        assert engine is not None and response is not None
        kind = verdict.kind
        path = _path(flow, with_query=False).lower()
        if response.status_code != 200 or kind is None or not kind.is_video:
            return
        if verdict.outcome == "skipped":
            return  # an init segment is not the file
        if not (path.endswith(_PROGRESSIVE_VIDEO) or flow.metadata.get(_ASKED_RANGE)):
            return  # segments are fetched whole: no one asks for them in ranges
        body = verdict.body if verdict.body is not None else self.core.body(flow) or b""
        client = _client(flow)
        copy = JudgedCopy(
            body, response.headers.get("content-type", kind.mime), verdict.body is not None,
            response.headers.get("x-moodgate"), judged_under=engine.profile(client),
        )  # fmt: skip
        if not engine.copies.put(client.viewer, flow.request.pretty_url, copy):
            return
        response.headers["accept-ranges"] = "bytes"
        asked = flow.metadata.get(_ASKED_RANGE)
        if asked:
            flow.response = _ranged(copy, asked, engine.settings.debug_headers)

    async def _fragment(self, flow: http.HTTPFlow) -> None:
        """A 206 of a fragmented MP4 read in ranges (DASH on-demand: the init, then one
        `moof`+`mdat` per range): judged like a stream's segments. Other slices pass."""
        engine, response = self.core.engine, flow.response
        assert engine is not None and response is not None
        claimed = claimed_kind(response.headers.get("content-type"))
        if claimed is None or not claimed.is_video:
            return
        if not engine.profile(_client(flow)).inspect.video:
            return
        body = self.core.body(flow)
        if body is None:
            return  # unpacks to more than a fragment could be: passed as it came
        fragment = segments.is_media_segment(body) or (
            segments.is_init_segment(body) and segments.init_is_fragmented(body)
        )  # a plain MP4's first slice holds a moov too, but no mvex
        if sniff(body[:SNIFF_BYTES]) is not MediaKind.MP4 or not fragment:
            # A slice of a plain file: passed (its size is noted for the next range), unless
            # the whole is too large to judge and the policy blocks that.
            total = content_range_total(response.headers.get("content-range"))
            refusal = None if total is None else self._refusal(flow, claimed, total)
            if refusal is not None:
                _apply(flow, refusal, engine.settings.debug_headers)
            return
        engine.copies.note_fragmented(flow.request.pretty_url)
        verdict = await engine.judge(self.core.media(flow, body, claimed))
        sent = response.headers.get("content-range")
        _apply(flow, verdict, engine.settings.debug_headers)
        if verdict.body is not None and flow.response is response:
            # The next range is asked at the origin's offsets, so only this answer's own
            # length changes: the same start, the new body's end.
            response.headers["accept-ranges"] = "bytes"
            response.headers["content-range"] = moved_content_range(sent, len(verdict.body))


class LargeBodies:
    """What moodgate will not judge is streamed, not held in memory: one 2 GB download held
    whole would take the filter past its memory limit (the unit's MemoryMax) and cut every
    device off.

    - A body of known length over the most moodgate reads of its kind streams from its first
      byte. A picture over `max_image_bytes` cannot be judged, so the policy's on_too_large
      decides, as for video. Anything not typed as a picture or video is read up to 16 MB
      (pages with pictures inlined, a picture behind a wrong Content-Type); past that it is
      a download, and passes: held whole, a few of them at once would outgrow the unit.
    - A body of unknown length streams from its first byte unless it may be judged: typed as
      a picture, as a page that may inline pictures, or not typed at all. Those are held up
      to a ceiling (the most any of them is read) and then streamed on: mitmproxy's
      `stream_large_bodies`, set here unless it was set by hand.

    Video has its own rules (Moodgate.responseheaders, VideoRanges). Uploads are never read,
    so they always stream.
    """

    def __init__(self, core: Moodgate) -> None:
        self.core = core
        self._ceiling_set: str | None = None

    def running(self) -> None:
        self._apply_ceiling()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """moodgate never reads what devices send: uploads stream from their first byte."""
        headers = flow.request.headers
        sends_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if self.core.engine is not None and sends_body and flow.response is None:
            flow.request.stream = True

    def _apply_ceiling(self) -> None:
        engine = self.core.engine
        if engine is None:
            return
        ceiling = str(read_limit(engine, engine.policy.current.largest_video_bytes))
        current = ctx.options.stream_large_bodies
        if current == ceiling or (current is not None and current != self._ceiling_set):
            return  # already right, or chosen by whoever runs the proxy
        ctx.options.update(stream_large_bodies=ceiling)
        self._ceiling_set = ceiling

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        engine, response = self.core.engine, flow.response
        if engine is None or response is None or flow.metadata.get(_FROM_COPY):
            return
        self._apply_ceiling()  # a reloaded policy may read longer video
        if response.stream or flow.request.method == "HEAD":
            return
        length = response.headers.get("content-length", "")
        content_type = response.headers.get("content-type")
        claimed = claimed_kind(content_type)
        if claimed is not None and claimed.is_video:
            return  # Moodgate.responseheaders, VideoRanges
        if not length.isdigit():
            if not _may_be_judged_unsized(content_type):
                response.stream = True  # a download of unknown length: held, it could grow
            return  # to the ceiling, and mitmproxy's buffers cost ~4× that at the switch
        size = int(length)
        if size <= min(_INLINE_MAX_BYTES, engine.settings.max_image_bytes):
            return  # nearly every response: read whole, no profile to look up
        if claimed is not None and claimed.is_image:
            if size <= engine.settings.max_image_bytes:
                return
            if engine.profile(_client(flow)).inspect.images and response.status_code == 200:
                verdict = engine.judge_unbuffered(self.core.media(flow, b"", claimed), "too-large")
                if verdict.action is Action.BLOCK:
                    flow.kill()  # before the body, like video: nothing downloaded for naught
                    return
                if engine.settings.debug_headers:
                    response.headers["x-moodgate"] = debug_header(verdict)
        elif size <= _INLINE_MAX_BYTES:
            return  # a page with pictures inlined, a picture behind a wrong Content-Type
        response.stream = True


class PinnedApps:
    """Apps that pin their own certificate refuse moodgate's; once learnt per device, their
    hosts pass through as a plain tunnel (pinning.py)."""

    def __init__(self, core: Moodgate) -> None:
        self.core = core

    def tls_established_client(self, data: tls.TlsData) -> None:
        """The device took moodgate's certificate: its CA is installed."""
        peer = data.context.client.peername
        if self.core.engine is not None and peer:
            self.core.engine.pinned.trusted(peer[0])

    def tls_failed_client(self, data: tls.TlsData) -> None:
        """A device that trusts the CA refused the certificate for this host: an app that
        pins its own."""
        engine, peer, host = self.core.engine, data.context.client.peername, data.conn.sni
        if engine is None or not engine.settings.pass_pinned_apps or not peer or not host:
            return
        if not (data.conn.error or "").startswith("The client does not trust the proxy's"):
            return  # a handshake given up (a browser's spare connection): not a refusal
        outcome = engine.pinned.refused(peer[0], host)
        log.info(kv_line("pinned-app", device=peer[0], host=host, outcome=outcome))

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        engine, peer = self.core.engine, data.context.client.peername
        host = data.client_hello.sni
        if engine is None or not engine.settings.pass_pinned_apps or not peer or not host:
            return
        if engine.pinned.passes(peer[0], host):
            data.ignore_connection = True  # a plain tunnel: the app talks to its server


_PROGRESSIVE_VIDEO = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
# Text that inlines pictures as data: URIs: pages, scripts, JSON (search results), CSS, SVG.
_INLINE_TYPES = {
    "text/html", "application/xhtml+xml", "text/css", "text/javascript", "application/javascript",
    "application/x-javascript", "application/json", "text/plain", "image/svg+xml",
}  # fmt: skip
_INLINE_MAX_BYTES = 16 * 1024 * 1024
_BODY = "moodgate_body"  # flow.metadata: the decoded body (Moodgate.body)
_FROM_COPY = "moodgate_from_copy"  # flow.metadata: answered from a judged copy
_ASKED_RANGE = "moodgate_range"  # flow.metadata: the Range the client sent, removed upstream
VERDICT = "moodgate_verdict"  # flow.metadata: Moodgate's verdict, for the addons after it


def _drop_range(request: http.Request) -> None:
    request.headers.pop("range", None)
    request.headers.pop("if-range", None)


def _ranged(copy: JudgedCopy, asked: str, debug_headers: bool) -> http.Response:
    """The part of a judged copy that `Range: asked` wants: 206, 416, or 200 (whole)."""
    headers = {"content-type": copy.content_type, "accept-ranges": "bytes"}
    if copy.rewritten:
        headers["cache-control"] = "no-store"
    if debug_headers and copy.debug_header:
        headers["x-moodgate"] = copy.debug_header
    total = len(copy.body)
    try:
        wanted = parse_range(asked, total)
    except RangeNotSatisfiable:
        return http.Response.make(416, b"", {**headers, "content-range": f"bytes */{total}"})
    if wanted is None:
        return http.Response.make(200, copy.body, headers)
    part = http.Response.make(206, wanted.of(copy.body), headers)
    part.headers["content-range"] = wanted.content_range(total)
    return part


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".pjpeg", ".png", ".apng", ".gif", ".webp", ".avif")


def _asks_for_image(path: str, accept: str) -> bool:
    """By its file name, or by an Accept header that wants images first (browsers' <img>)."""
    return path.endswith(_IMAGE_SUFFIXES) or accept.lstrip().lower().startswith("image/")


def read_limit(engine: Engine, max_video_bytes: int) -> int:
    """The most of one body that moodgate reads: a picture, a video of up to
    `max_video_bytes`, a page with pictures inlined."""
    return max(engine.settings.max_image_bytes, max_video_bytes, _INLINE_MAX_BYTES)


def _may_be_judged_unsized(content_type: str | None) -> bool:
    """A body of unknown length that moodgate may read: a picture, a page or script that may
    inline pictures, or a body without a type (sniffed). Any other type
    (`application/octet-stream`, archives, fonts, …) is a download."""
    claimed = claimed_kind(content_type)
    if claimed is not None:
        return claimed.is_image
    kind = media_type(content_type)
    return not kind or kind in _INLINE_TYPES


def _is_media(kind: MediaKind | None) -> bool:
    return kind is not None and (kind.is_image or kind.is_video)


def _client(flow: http.HTTPFlow) -> Client:
    address = flow.client_conn.peername[0] if flow.client_conn.peername else "unknown"
    auth = flow.metadata.get("proxyauth")
    return Client(address=address, user=auth[0] if auth else None)


def _path(flow: http.HTTPFlow, with_query: bool) -> str:
    path = flow.request.path
    return path if with_query else path.split("?", 1)[0]


def _apply(flow: http.HTTPFlow, verdict: Verdict, debug_headers: bool) -> None:
    response = flow.response
    assert response is not None
    if verdict.body is not None:
        response.content = verdict.body
        kind: MediaKind | None = verdict.kind
        if kind is not None and kind.is_image:  # video keeps its type (video/iso.segment …)
            response.headers["content-type"] = kind.mime
        _mark_rewritten(response)
        if kind is not None and kind.is_video:
            # Ranges of the original would not fit the rewritten file.
            response.headers["accept-ranges"] = "none"
    elif verdict.action is Action.BLOCK:
        flow.response = http.Response.make(
            403, b"Blocked by moodgate\n", {"content-type": "text/plain; charset=utf-8",
                                            "cache-control": "no-store"}
        )
    if debug_headers and flow.response is not None:
        flow.response.headers["x-moodgate"] = debug_header(verdict)


def _mark_rewritten(response: http.Response) -> None:
    """The origin's validators no longer describe the body; and a calmed or blocked copy is
    for this child now: never let a cache replay it."""
    for header in ("etag", "last-modified", "content-md5", "digest"):
        response.headers.pop(header, None)
    response.headers["cache-control"] = "no-store"


def debug_header(verdict: Verdict) -> str:
    parts = [verdict.action.value]
    if verdict.emotion is not None:
        emotion = verdict.emotion
        parts += [f"valence={emotion.valence:.3f}", f"arousal={emotion.arousal:.3f}"]
        if emotion.explicit is not None:
            parts.append(f"explicit={emotion.explicit:.3f}")
    parts += [f"rule={verdict.rule}", f"outcome={verdict.outcome}"]
    return "; ".join(parts)


def build_addons() -> tuple[Moodgate, list[object]]:
    """The core addon (it owns the engine) and the whole set, the core first: the others
    read its engine and, in `response`, its verdict."""
    core = Moodgate()
    return core, [core, VideoRanges(core), LargeBodies(core), PinnedApps(core)]


addons = build_addons()[1]
