"""HTTP API (FastAPI): live search over the archive, status, Prometheus metrics, health.

    GET /search?q=a+red+circle&k=10&source=recordings&since=1700000000&level=0
    GET /thumb/{id}            JPEG thumbnail of a clip (an id from /search)
    GET /status                the indexer's status (JSON, as `pystream status --json`)
    GET /metrics               Prometheus exposition
    GET /healthz               200 when indexing; 503 when stopped or "degraded" (writer stalled)

The daemon serves it with uvicorn next to the indexer; `pystream serve` serves it alone, reading
the status file the daemon writes.
"""

from __future__ import annotations

import base64
from typing import Callable, List, Optional

from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import JSONResponse

from .archive import Archive, ArchiveNotFoundError, ClipNotFoundError, ModelMismatchError, NoEncoderError
from .metrics import CONTENT_TYPE, Metrics
from .model.loader import ModelLoadError


def create_app(archive: Archive, get_status: Callable[[], Optional[dict]],
               metrics: Metrics | None = None) -> FastAPI:
    app = FastAPI(title="pystream", version="0.1.0")
    metrics = metrics or Metrics(get_status)

    @app.get("/search")
    def search(q: str = Query(..., min_length=1, description="text query"),
               k: int = Query(10, ge=1, le=1000),
               source: Optional[List[str]] = Query(None),
               since: Optional[float] = None, until: Optional[float] = None,
               level: Optional[int] = 0, thumbnails: bool = False):
        try:
            hits = archive.search(q, k=k, sources=source, since=since, until=until, level=level)
        except ArchiveNotFoundError as e:
            raise HTTPException(503, str(e))
        except NoEncoderError as e:
            raise HTTPException(501, str(e))
        except (ModelLoadError, ModelMismatchError) as e:  # the server's model, not the request
            raise HTTPException(503, str(e))
        except (ValueError, TypeError) as e:
            raise HTTPException(400, str(e))
        out = []
        for h in hits:
            d = h.to_dict(thumbnail=False)
            d.update(score=round(h.score, 6), thumbnail_url=f"/thumb/{h.id}")
            if thumbnails and h.thumbnail:
                d["thumbnail_b64"] = base64.b64encode(h.thumbnail).decode()
            out.append(d)
        return {"query": q, "k": k, "hits": out}

    @app.get("/thumb/{clip_id:path}")
    def thumb(clip_id: str):
        try:
            jpeg = archive.thumbnail(clip_id)
        except ArchiveNotFoundError as e:
            raise HTTPException(503, str(e))
        except ClipNotFoundError as e:
            raise HTTPException(404, str(e))
        if not jpeg:
            raise HTTPException(404, f"clip {clip_id!r} has no thumbnail")
        return Response(jpeg, media_type="image/jpeg")

    @app.get("/status")
    def status():
        s = get_status()
        if s is None:
            raise HTTPException(503, "no status yet: the indexer has not run with this state_dir")
        return s

    @app.get("/metrics")
    def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz")
    def healthz():
        from .status import health

        state, problems, warnings = health(get_status())
        if state == "down":
            raise HTTPException(503, "indexer not running")
        body = {"ok": state == "ok", "status": state, "problems": problems, "warnings": warnings}
        return JSONResponse(body, status_code=200 if state == "ok" else 503)

    return app


def serve_in_thread(app: FastAPI, host: str, port: int):
    """Start uvicorn in a daemon thread; returns the uvicorn.Server (set .should_exit to stop)."""
    import threading

    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            log_config=None)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # the daemon owns SIGTERM/SIGINT
    thread = threading.Thread(target=server.run, daemon=True, name="pystream-http")
    thread.start()
    return server
