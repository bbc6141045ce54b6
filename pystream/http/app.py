"""The FastAPI application: JSON API, the web page, media, auth (see pystream/http/__init__.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import urllib.parse
from pathlib import Path
from typing import Callable, List, Optional

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from ..archive import (Archive, ArchiveNotFoundError, ClipNotFoundError, ModelMismatchError,
                       NoEncoderError)
from ..metrics import CONTENT_TYPE, Metrics
from ..model.loader import ModelLoadError
from . import auth, media

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css",
                "favicon.svg": "image/svg+xml"}
MAX_QUERY_STRING = 4096  # bytes of a URL's query string (414 past it)
MAX_URL_PATH = 2048
MAX_TEXT_QUERY = 500  # characters of a text query
MAX_K = 1000
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # an image query
MAX_IMAGE_PIXELS = 40_000_000
PRE_ROLL_S = 5.0  # a played span starts this long before the hit (when remuxed)
POST_ROLL_S = 30.0  # ... and ends this long after it
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
            "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
LOGIN_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'")


def _archive_errors(e: Exception) -> HTTPException:
    if isinstance(e, ArchiveNotFoundError):
        return HTTPException(503, str(e))
    if isinstance(e, NoEncoderError):
        return HTTPException(501, str(e))
    if isinstance(e, (ModelLoadError, ModelMismatchError)):  # the server's model, not the request
        return HTTPException(503, str(e))
    if isinstance(e, ClipNotFoundError):
        return HTTPException(404, str(e))
    if isinstance(e, (ValueError, TypeError)):
        return HTTPException(400, str(e))
    raise e


def collapse_hits(hits: list[dict]) -> list[dict]:
    """Overlapping hits of one source and file / stream as one span each, best span first.
    A span keeps its best hit (id, thumbnail, score) and every member's id."""
    groups: dict = {}
    for h in hits:
        groups.setdefault((h["source"], h.get("uri")), []).append(h)
    spans = []
    for members in groups.values():
        members.sort(key=lambda h: h["start"])
        cur = None
        for h in members:
            if cur is not None and h["start"] <= cur["end"]:
                cur["end"] = max(cur["end"], h["end"])
                cur["ids"].append(h["id"])
                if h["score"] > cur["score"]:
                    cur.update(score=h["score"], best=h)
                continue
            cur = {"source": h["source"], "uri": h.get("uri"), "start": h["start"],
                   "end": h["end"], "score": h["score"], "best": h, "ids": [h["id"]]}
            spans.append(cur)
    out = []
    for s in spans:
        best = s.pop("best")
        s.update(id=best["id"], level=best.get("level"), hits=len(s["ids"]),
                 thumbnail_url=best.get("thumbnail_url"), best_start=best["start"],
                 best_end=best["end"], file=best.get("file"),
                 offset=(None if best.get("offset") is None   # of the span's start in its file
                         else round(best["offset"] - (best["start"] - s["start"]), 3)))
        out.append(s)
    out.sort(key=lambda s: -s["score"])
    return out


def create_app(archive: Archive, get_status: Callable[[], Optional[dict]],
               metrics: Metrics | None = None, *, config=None, token: str | None = None,
               host: str | None = None) -> FastAPI:
    """The HTTP app. ``config`` (pystream.config.Config) names the sources whose video may be
    played; ``token`` protects every route but /healthz (required when ``host`` is not a
    loopback address: ValueError otherwise)."""
    if host is not None:
        auth.check_exposure(host, token)
    app = FastAPI(title="pystream", version="0.1.0",
                  description="Search live video by text or image; watch the matched moment.")
    metrics = metrics or Metrics(get_status)
    roots = media.MediaRoots.from_config(config)
    spans = media.SpanCache()
    app.state.spans = spans  # its folder goes when the app does (or at exit)

    # ------------------------------------------------------------------ guard
    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if len(request.scope.get("query_string") or b"") > MAX_QUERY_STRING:
            return JSONResponse({"detail": f"query string longer than {MAX_QUERY_STRING} bytes"},
                                status_code=414)
        if len(request.scope.get("raw_path") or path.encode()) > MAX_URL_PATH:
            return JSONResponse({"detail": f"path longer than {MAX_URL_PATH} bytes"},
                                status_code=414)
        if token is not None and path not in auth.PUBLIC_PATHS and \
                not auth.authorized(request.headers, request.cookies, token):
            await asyncio.sleep(0.05)  # a little friction for guessing
            wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
            if wants_page:
                nxt = path + (f"?{request.url.query}" if request.url.query else "")
                return HTMLResponse(auth.login_page(nxt), status_code=401,
                                    headers={"Content-Security-Policy": LOGIN_CSP,
                                             "Cache-Control": "no-store"})
            return JSONResponse({"detail": "missing or wrong token (Authorization: Bearer TOKEN)"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    # ------------------------------------------------------------------ search
    def hit_dicts(hits, thumbnails: bool) -> list[dict]:
        out = []
        probed: dict = {}
        for h in hits:
            d = h.to_dict(thumbnail=False)
            d.update(score=round(h.score, 6), thumbnail_url=f"/thumb/{urllib.parse.quote(h.id)}",
                     file=None, offset=None)
            if thumbnails and h.thumbnail:
                d["thumbnail_b64"] = base64.b64encode(h.thumbnail).decode()
            r = roots.roots.get(h.source)
            if r is not None and r.kind in ("folder", "file") and h.uri:
                d["file"] = os.path.basename(h.uri)
                if h.uri not in probed and len(probed) < 64:  # bounded work per request
                    try:
                        probed[h.uri] = media.file_start_time(r, media.resolve_uri(r, h.uri))
                    except Exception:  # noqa: BLE001 - a file gone since: no offset
                        probed[h.uri] = None
                t0 = probed.get(h.uri)
                d["offset"] = None if t0 is None else round(h.start - t0, 3)
            out.append(d)
        return out

    def run_search(query, k, source, since, until, level, thumbnails, collapse, label):
        try:
            hits = archive.search(query, k=k, sources=source, since=since, until=until, level=level)
        except Exception as e:  # noqa: BLE001
            raise _archive_errors(e) from None
        out = hit_dicts(hits, thumbnails)
        body = {"query": label, "k": k, "hits": out}
        if collapse:
            body["spans"] = collapse_hits([dict(h) for h in out])
        return body

    @app.get("/search", summary="Text search")
    def search(q: str = Query(..., min_length=1, max_length=MAX_TEXT_QUERY, description="text query"),
               k: int = Query(10, ge=1, le=MAX_K),
               source: Optional[List[str]] = Query(None, max_length=128),
               since: Optional[str] = Query(None, max_length=40,
                                            description="epoch seconds or ISO 8601 (local time)"),
               until: Optional[str] = Query(None, max_length=40),
               level: Optional[int] = Query(0, ge=-1, le=16,
                                            description="0 windows, 1+ coarse, -1 all levels"),
               thumbnails: bool = False,
               collapse: bool = Query(False, description="also return overlapping hits of one "
                                                         "source as spans")):
        return run_search(q, k, source, since or None, until or None,
                          None if level == -1 else level, thumbnails, collapse, q)

    @app.post("/search/image", summary="Search by example image (the request body)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/webp": {"schema": {"type": "string", "format": "binary"}},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def search_image(request: Request, k: int = Query(10, ge=1, le=MAX_K),
                           source: Optional[List[str]] = Query(None, max_length=128),
                           since: Optional[str] = Query(None, max_length=40),
                           until: Optional[str] = Query(None, max_length=40),
                           level: Optional[int] = Query(0, ge=-1, le=16),
                           collapse: bool = False):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_UPLOAD_BYTES):
            raise HTTPException(413, f"image larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD_BYTES:
                raise HTTPException(413, f"image larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        if not body:
            raise HTTPException(400, "send the image as the request body")
        rgb = _decode_image(bytes(body))
        from starlette.concurrency import run_in_threadpool

        def work():
            try:
                vector = archive.encode_image(rgb)
            except Exception as e:  # noqa: BLE001
                raise _archive_errors(e) from None
            return run_search(vector, k, source, since or None, until or None,
                              None if level == -1 else level, False, collapse, "image")
        return await run_in_threadpool(work)

    @app.get("/thumb/{clip_id:path}", summary="JPEG thumbnail of a clip",
             response_class=Response)
    def thumb(clip_id: str):
        if len(clip_id) > 1024:
            raise HTTPException(400, "clip id too long")
        try:
            jpeg = archive.thumbnail(clip_id)
        except Exception as e:  # noqa: BLE001
            raise _archive_errors(e) from None
        if not jpeg:
            raise HTTPException(404, f"clip {clip_id!r} has no thumbnail")
        return Response(jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})

    # ------------------------------------------------------------------ playback
    @app.get("/play/{clip_id:path}", summary="How to play a clip: a video URL and where to seek")
    def play(clip_id: str):
        if len(clip_id) > 1024:
            raise HTTPException(400, "clip id too long")
        try:
            hit = archive.get(clip_id)
        except Exception as e:  # noqa: BLE001
            raise _archive_errors(e) from None
        base = {"id": hit.id, "source": hit.source, "uri": hit.uri, "start": hit.start,
                "end": hit.end, "url": None, "offset": None, "mode": None, "reason": None,
                "file": None, "file_offset": None}
        try:
            return dict(base, **_play(hit))
        except media.MediaError as e:
            return dict(base, reason=str(e))

    def _play(hit) -> dict:
        if hit.source in roots.streams and roots.streams[hit.source] is None:
            return {"reason": f"the stream {hit.source!r} was not recorded (no record: setting)"}
        r = roots.roots.get(hit.source)
        if r is None:
            return {"reason": f"{hit.source!r} is not a folder, file or recorded stream source "
                              "of this server's configuration: its video is not served"}
        if r.kind == "recording":
            segs = [s for s in _segments(r) if s.size > 0]
            parts = [media.Part(s.path, s.start) for s in segs if s.start <= hit.end]
            if not parts or segs[-1].start + 3600 * 6 < hit.start:
                return {"reason": "no recording covers this moment (not recorded then, or "
                                  "deleted by retention)"}
            want = hit.start - PRE_ROLL_S
            origin = media.keyframe_before(parts, want)
            if origin > hit.start + 1.0:
                return {"reason": "no recording covers this moment (not recorded then, or "
                                  "deleted by retention)"}
            end = hit.end + POST_ROLL_S
            q = urllib.parse.urlencode({"start": f"{origin:.3f}", "end": f"{end:.3f}"})
            return {"url": f"/recordings/{urllib.parse.quote(hit.source)}/video?{q}",
                    "offset": round(hit.start - origin, 3), "mode": "recording"}
        path = media.resolve_uri(r, hit.uri)
        rel = media.relative(r, path)
        url = f"/media/{urllib.parse.quote(hit.source)}/{urllib.parse.quote(rel)}"
        offset = hit.start - media.file_start_time(r, path)
        if media.playable_directly(path):
            return {"url": url, "offset": round(offset, 3), "mode": "direct", "file": rel,
                    "file_offset": round(offset, 3)}
        transcode = media.probe_cached(path).get("codec") not in media.BROWSER_CODECS
        origin = media.keyframe_before([media.Part(path, 0.0)], max(0.0, offset - PRE_ROLL_S))
        end = offset + (hit.end - hit.start) + POST_ROLL_S
        q = urllib.parse.urlencode({"start": f"{origin:.3f}", "end": f"{end:.3f}"})
        return {"url": f"{url}?{q}", "offset": round(offset - origin, 3),
                "mode": "transcode" if transcode else "remux", "file": rel,
                "file_offset": round(offset, 3)}

    def _segments(r):
        from ..sources.recorder import list_segments

        return list_segments(r.record.dir, r.source)

    def _span_response(parts, start, end, transcode, live):
        limit = media.MAX_TRANSCODE_S if transcode else media.MAX_REMUX_S
        if not (end > start):
            raise HTTPException(400, "end must be after start")
        if end - start > limit:
            raise HTTPException(400, f"spans longer than {limit:g} s are not served "
                                     f"({'re-encoded' if transcode else 'remuxed'} on request)")
        try:
            path = spans.get(parts, start, end, transcode, live=live)
        except media.MediaError as e:
            raise HTTPException(e.status, str(e)) from None
        except (av_errors() + (OSError,)) as e:
            raise HTTPException(422, f"cannot cut this span: {e}") from None
        return FileResponse(path, media_type="video/mp4",
                            headers={"Cache-Control": "private, max-age=60"})

    @app.get("/media/{source}/{path:path}", response_class=Response,
             summary="A source's video file (range requests), or a span of it as MP4")
    def media_file(request: Request, source: str, path: str,
                   start: Optional[float] = Query(None, ge=0, le=1e7,
                                                  description="seconds into the file"),
                   end: Optional[float] = Query(None, ge=0, le=1e7)):
        try:
            r = roots.get(source)
            real = media.resolve(r, path, request.scope.get("raw_path"))
        except media.MediaError as e:
            raise HTTPException(e.status, str(e)) from None
        if start is None and end is None:
            mt = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm",
                  ".mkv": "video/x-matroska", ".ts": "video/mp2t"}.get(
                      Path(real).suffix.lower(), "application/octet-stream")
            return FileResponse(real, media_type=mt)
        start = start or 0.0
        if end is None:
            end = start + 60.0
        try:
            transcode = media.probe_cached(real).get("codec") not in media.BROWSER_CODECS
        except Exception as e:  # noqa: BLE001
            raise HTTPException(422, f"not a playable video: {e}") from None
        return _span_response([media.Part(real, 0.0)], start, end, transcode, live=False)

    @app.get("/recordings/{source}/video", response_class=Response,
             summary="A span of a live stream's recording as MP4 (start/end: epoch seconds)")
    def recording_video(source: str, start: float = Query(..., ge=0, le=1e11),
                        end: float = Query(..., ge=0, le=1e11)):
        try:
            r = roots.get(source)
        except media.MediaError as e:
            raise HTTPException(e.status, str(e)) from None
        if r.kind != "recording":
            raise HTTPException(404, f"{source!r} is not a recorded stream")
        segs = [s for s in _segments(r) if s.size > 0]
        parts = [media.Part(s.path, s.start) for s in segs if s.start <= end]
        # Only the segments the span touches (and the one it starts in).
        firsts = [p for p in parts if p.t0 <= start]
        parts = ([firsts[-1]] if firsts else []) + [p for p in parts if p.t0 > start]
        if not parts:
            raise HTTPException(404, "nothing recorded in this span")
        try:
            transcode = media.probe_cached(parts[0].path).get("codec") not in media.BROWSER_CODECS
        except Exception as e:  # noqa: BLE001
            raise HTTPException(422, f"cannot read the recording: {e}") from None
        return _span_response(parts, start, end, transcode, live=True)

    @app.get("/recordings", summary="Per configured source: can its video be played, and its "
                                    "recording on disk")
    def recordings():
        out = {}
        for name, rec in roots.streams.items():
            d = {"type": "stream", "recorded": rec is not None, "playable": rec is not None}
            if rec is not None:
                segs = _segments(roots.roots[name])
                d.update(segments=len(segs), bytes=sum(s.size for s in segs),
                         oldest=segs[0].start if segs else None,
                         newest=segs[-1].start if segs else None,
                         segment_s=rec.segment_s, max_age_h=rec.max_age_h,
                         max_size_mb=rec.max_size_mb)
            out[name] = d
        for name, r in roots.roots.items():
            if r.kind in ("folder", "file"):
                out[name] = {"type": r.kind, "recorded": None, "playable": True}
        return {"sources": dict(sorted(out.items()))}

    # ------------------------------------------------------------------ status
    @app.get("/status", summary="The indexer's status (as `pystream status --json`)")
    def status():
        s = get_status()
        if s is None:
            raise HTTPException(503, "no status yet: the indexer has not run with this state_dir")
        return s

    @app.get("/metrics", response_class=Response, summary="Prometheus exposition")
    def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz", summary="200 when indexing; 503 when stopped or degraded (writer "
             "stalled); no token needed")
    def healthz():
        from ..status import health

        state, problems, warnings = health(get_status())
        if state == "down":
            raise HTTPException(503, "indexer not running")
        body = {"ok": state == "ok", "status": state, "problems": problems, "warnings": warnings}
        return JSONResponse(body, status_code=200 if state == "ok" else 503)

    # ------------------------------------------------------------------ the page
    def page(view: str) -> HTMLResponse:
        html = (WEB_DIR / "index.html").read_text()
        html = html.replace("{{view}}", view).replace("{{auth}}", "1" if token else "0")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP,
                                           "Cache-Control": "no-cache"})

    @app.get("/", response_class=HTMLResponse, summary="The web page: search")
    def index_page():
        return page("search")

    @app.get("/sources", response_class=HTMLResponse,
             summary="The web page: every source's state (refreshes on its own)")
    def sources_page():
        return page("sources")

    @app.get("/static/{name}", response_class=Response, summary="The page's scripts and styles")
    def static(name: str):
        if name not in STATIC_FILES:  # a fixed list: no paths at all
            raise HTTPException(404, "no such file")
        return FileResponse(WEB_DIR / name, media_type=STATIC_FILES[name],
                            headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ login
    @app.get("/login", response_class=HTMLResponse, summary="Login form (when a token is set)")
    def login_form(next: str = Query("/", max_length=2000)):  # noqa: A002
        if token is None:
            return RedirectResponse(auth.safe_next(next), status_code=303)
        return HTMLResponse(auth.login_page(next), headers={"Content-Security-Policy": LOGIN_CSP,
                                                            "Cache-Control": "no-store"})

    @app.post("/login", response_class=HTMLResponse,
              summary="Check the token (form field `token`) and set the session cookie",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/x-www-form-urlencoded": {"schema": {
                      "type": "object", "properties": {"token": {"type": "string"},
                                                       "next": {"type": "string"}},
                      "required": ["token"]}}}}})
    async def login(request: Request):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > 8192:
                raise HTTPException(413, "login form too large")
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        given = (form.get("token") or [""])[0]
        nxt = auth.safe_next((form.get("next") or ["/"])[0])
        if token is None:
            return RedirectResponse(nxt, status_code=303)
        import hmac

        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            await asyncio.sleep(0.5)
            return HTMLResponse(auth.login_page(nxt, "Wrong token."), status_code=401,
                                headers={"Content-Security-Policy": LOGIN_CSP})
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(auth.COOKIE, auth.session_value(token), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=30 * 86400, path="/")
        return resp

    @app.post("/logout", summary="Forget the session cookie")
    def logout():
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(auth.COOKIE, path="/")
        return resp

    return app


def av_errors() -> tuple:
    import av

    return (av.error.FFmpegError,)


def _decode_image(data: bytes):
    import numpy as np
    from PIL import Image

    import warnings

    try:
        with warnings.catch_warnings():  # our own, lower limit applies below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise HTTPException(413, f"image has {w}x{h} pixels; at most "
                                         f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            im.draft("RGB", (1024, 1024))  # JPEG: decode at a reduced size
            return np.asarray(im.convert("RGB"))
    except HTTPException:
        raise
    except Image.DecompressionBombError as e:
        raise HTTPException(413, str(e)) from None
    except Exception as e:  # noqa: BLE001 - anything PIL cannot read
        raise HTTPException(400, f"not an image PIL can read: {type(e).__name__}") from None


def serve_in_thread(app: FastAPI, host: str, port: int):
    """Start uvicorn in a daemon thread; returns the uvicorn.Server (set .should_exit to stop)."""
    import threading

    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            log_config=None, h11_max_incomplete_event_size=16 * 1024)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # the daemon owns SIGTERM/SIGINT
    thread = threading.Thread(target=server.run, daemon=True, name="pystream-http")
    thread.start()
    return server
