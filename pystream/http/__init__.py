"""HTTP: the web page, live search, playback of the matched moment, status, metrics, health.

    GET /                      the web page: search by text or image, watch a hit
    GET /sources               the web page: every source's state, refreshing on its own
    GET /search?q=a+red+circle&k=10&source=recordings&level=0&collapse=true
    GET /thumb/{id}            JPEG thumbnail of a clip (an id from /search)
    GET /play/{id}             how to play a clip: a video URL and the second to seek to
    GET /recordings            per configured source: playable? recorded? segments on disk
    GET /status                the indexer's status (JSON, as `pystream status --json`)
    GET /metrics               Prometheus exposition
    GET /healthz               200 when the indexer is running (or the status file is fresh)

Also: ``POST /search/image`` (an example image as the request body, same filters as /search),
``GET /media/{source}/{path}`` (a folder or file source's video, with range requests;
``?start=&end=`` cuts that span into an MP4, remuxed, or re-encoded when a browser cannot play
the codec), ``GET /recordings/{source}/video?start=&end=`` (a span of a recorded live stream, epoch
seconds), ``GET /login`` + ``POST /login`` / ``POST /logout`` (the token form), ``GET
/static/{name}`` (the page's files, from pystream/web), and FastAPI's ``/docs`` and
``/openapi.json``, which list every route.

The daemon serves it with uvicorn next to the indexer; `pystream serve` serves it alone, reading
the status file the daemon writes. Bound to 127.0.0.1 (the default) it needs no token; bound to
any other address it refuses to start without one, and then every route but /healthz needs it
(pystream/http/auth.py). Media routes serve only files under the configured sources' roots
(pystream/http/media.py).
"""

from .app import collapse_hits, create_app, serve_in_thread  # noqa: F401
from .auth import TokenError, check_exposure, resolve_token  # noqa: F401
