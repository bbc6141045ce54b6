"""HTTP API: search, thumbnails, status, Prometheus metrics, health (FastAPI TestClient)."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

import pystream
from pystream.http import create_app
from pystream.store import ClipRow, make_thumbnail
from pystream.writer import ClipWriter
from pystream.metrics import Metrics

DIM = 8


def _unit(i):
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1
    return v


@pytest.fixture()
def client(tmp_path):
    thumb = make_thumbnail(np.full((32, 32, 3), 200, np.uint8))
    with ClipWriter(str(tmp_path / "arc"), dim=DIM, model_id="m") as w:
        w.write([ClipRow("gate", "rtsp://gate", 0, 1000.0 + 4 * i, 1012.0 + 4 * i, _unit(i), thumb)
                 for i in range(6)])
        w.write([ClipRow("dock", "/rec/d.mp4", 0, 50.0, 62.0, _unit(3), None)])
    words = {"van": _unit(3), "gate": _unit(1)}
    arc = pystream.open(tmp_path / "arc", text_encoder=lambda q: np.stack([words[t] for t in q]))
    status = {"pid": 1, "updated": 0, "running": True, "stale": False,
              "writer": {"pending": 2}, "encoder": {"queued_chunks": 1},
              "sources": {"gate": {"state": "running", "frames": 10, "rows": 6, "errors": 1,
                                   "files_done": 0, "lag_s": 1.5, "fps": 1.0}}}
    state = {"s": status}
    metrics = Metrics(lambda: state["s"])
    metrics.observe_batch(0.05, 4)
    return TestClient(create_app(arc, lambda: state["s"], metrics)), state


def test_search_filters_and_thumbnails(client):
    c, _ = client
    r = c.get("/search", params={"q": "van", "k": 3})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert len(hits) == 3 and hits[0]["score"] == pytest.approx(1.0)
    assert {h["source"] for h in hits if h["score"] > 0.99} == {"gate", "dock"}
    r = c.get("/search", params={"q": "van", "source": "dock"})
    assert [h["source"] for h in r.json()["hits"]] == ["dock"]
    r = c.get("/search", params={"q": "gate", "since": 1010, "until": 1015, "k": 10})
    hits = r.json()["hits"]
    # Exactly the clips overlapping [1010, 1015]: gate 1000-1012 ... 1012-1024 (not dock).
    assert sorted((h["source"], h["start"]) for h in hits) == \
        [("gate", 1000.0), ("gate", 1004.0), ("gate", 1008.0), ("gate", 1012.0)]
    assert all(h["end"] >= 1010 and h["start"] <= 1015 for h in hits)
    r = c.get("/search", params={"q": "gate", "k": 1, "thumbnails": "true"})
    hit = r.json()["hits"][0]
    assert hit["thumbnail_b64"]
    t = c.get(hit["thumbnail_url"])
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    assert t.content[:2] == b"\xff\xd8"
    assert c.get("/thumb/nope|0|1").status_code == 404
    assert c.get("/search", params={"q": ""}).status_code == 422


def test_status_metrics_health(client):
    c, state = client
    assert c.get("/status").json()["sources"]["gate"]["rows"] == 6
    m = c.get("/metrics").text
    assert 'pystream_rows_total{source="gate"} 6.0' in m
    assert 'pystream_lag_seconds{source="gate"} 1.5' in m
    assert "pystream_writer_pending_rows 2.0" in m
    assert "pystream_encoder_batch_seconds_count 1.0" in m
    assert c.get("/healthz").status_code == 200
    state["s"] = dict(state["s"], stale=True)
    assert c.get("/healthz").status_code == 503
    state["s"] = None
    assert c.get("/status").status_code == 503


def test_missing_archive_is_503(tmp_path):
    arc = pystream.open(tmp_path / "none", text_encoder=lambda q: np.ones((1, DIM)))
    c = TestClient(create_app(arc, lambda: None))
    r = c.get("/search", params={"q": "x"})
    assert r.status_code == 503 and "no pystream archive" in r.json()["detail"]


# ----------------------------------------------------------------------------- the page, media, safety

import io  # noqa: E402
import os  # noqa: E402
import urllib.parse  # noqa: E402

import av  # noqa: E402

from pystream.config import parse_config  # noqa: E402
from pystream.http import collapse_hits  # noqa: E402
from pystream.http.auth import TokenError, check_exposure, resolve_token  # noqa: E402
from test_pipeline_fixtures import write_video  # noqa: E402

TOKEN = "t0ken-for-the-http-tests-0123"


@pytest.fixture(scope="module")
def media_site(tmp_path_factory):
    """A folder source with an MP4 and an MPEG-TS recording, a secret outside it, symlinks."""
    root = tmp_path_factory.mktemp("media")
    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    write_video(videos / "a.mp4", 48, fps=4.0, seed=1)
    write_video(videos / "sub" / "b.ts", 48, fps=4.0, seed=2)
    (root / "secret.mp4").write_bytes(b"not for you")
    (videos / "notes.txt").write_text("not a video")
    os.symlink(root / "secret.mp4", videos / "escape.mp4")  # leads outside the root
    os.symlink(videos / "a.mp4", videos / "alias.mp4")  # stays inside
    rows = [ClipRow("cams", str(videos / "a.mp4"), 0, 4.0 * i, 4.0 * i + 12, _unit(i), None,
                    recording=True) for i in range(3)]
    rows += [ClipRow("cams", str(videos / "sub" / "b.ts"), 0, 4.0, 16.0, _unit(5), None, recording=True),
             ClipRow("gate", "udp://127.0.0.1:9", 0, 1e9, 1e9 + 12, _unit(6), None),
             ClipRow("other", str(root / "secret.mp4"), 0, 0.0, 12.0, _unit(7), None, recording=True)]
    with ClipWriter(str(root / "arc"), dim=DIM, model_id="m") as w:
        w.write(rows)
    cfg = parse_config({"archive": str(root / "arc"), "sources": [
        {"type": "folder", "name": "cams", "path": str(videos)},
        {"type": "stream", "name": "gate", "url": "udp://127.0.0.1:9"}]})
    arc = pystream.open(root / "arc", text_encoder=lambda q: np.stack([_unit(int(t)) for t in q]),
                        image_encoder=lambda ims: np.stack([_unit(1) for _ in ims]))
    return {"root": root, "videos": videos, "cfg": cfg, "arc": arc}


@pytest.fixture()
def mc(media_site):
    app = create_app(media_site["arc"], lambda: {"sources": {}}, config=media_site["cfg"])
    return TestClient(app)


def test_page_static_and_openapi_list_every_route(mc):
    page = mc.get("/")
    assert page.status_code == 200 and 'id="view-search"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert mc.get("/sources").status_code == 200
    for name, ctype in (("app.js", "javascript"), ("style.css", "text/css")):
        r = mc.get(f"/static/{name}")
        assert r.status_code == 200 and ctype in r.headers["content-type"]
    assert mc.get("/static/index.html").status_code == 404  # a fixed list, no paths
    assert mc.get("/static/..%2Fhttp%2Fapp.py").status_code == 404
    schema = mc.get("/openapi.json").json()
    documented = {(p, m.upper()) for p, ops in schema["paths"].items() for m in ops}
    routes = {(r.path.replace(":path", ""), m) for r in mc.app.routes
              if getattr(r, "include_in_schema", False) for m in r.methods if m != "HEAD"}
    assert routes <= documented, routes - documented
    for path in ("/", "/sources", "/search", "/search/image", "/play/{clip_id}", "/media/{source}/{path}",
                 "/recordings", "/recordings/{source}/video", "/login", "/logout", "/thumb/{clip_id}",
                 "/status", "/metrics", "/healthz", "/static/{name}"):
        assert path in schema["paths"], path


def test_search_collapses_spans_and_gives_file_offsets(mc):
    body = mc.get("/search", params={"q": "0", "k": 6, "collapse": "true"}).json()
    by_file = {h["id"]: h for h in body["hits"]}
    a = [h for h in by_file.values() if h["file"] == "a.mp4"]
    assert a and all(h["offset"] == h["start"] for h in a)  # undated file: start = offset
    spans = body["spans"]
    span_a = next(s for s in spans if s["file"] == "a.mp4")
    assert (span_a["start"], span_a["end"], span_a["hits"]) == (0.0, 20.0, 3)  # 0-12, 4-16, 8-20
    gate = next(s for s in spans if s["source"] == "gate")
    assert gate["hits"] == 1 and gate["file"] is None
    assert [s["score"] for s in spans] == sorted((s["score"] for s in spans), reverse=True)
    # The pure function: separate when they do not overlap, per source and file.
    hits = [dict(id=str(i), source="s", uri="u", start=s, end=s + 12, score=sc)
            for i, (s, sc) in enumerate([(0, .1), (10, .5), (30, .2), (41, .3)])]
    got = collapse_hits(hits)
    assert [(s["start"], s["end"], s["id"], s["hits"]) for s in got] == \
        [(0, 22, "1", 2), (30, 53, "3", 2)]


def test_play_direct_remux_and_unrecorded(mc, media_site):
    hits = mc.get("/search", params={"q": "1", "k": 10}).json()["hits"]
    a1 = next(h for h in hits if h["file"] == "a.mp4" and h["start"] == 4.0)
    info = mc.get(f"/play/{urllib.parse.quote(a1['id'])}").json()
    assert info["mode"] == "direct" and info["offset"] == 4.0
    assert info["url"] == "/media/cams/a.mp4"
    full = mc.get(info["url"])
    assert full.status_code == 200 and full.content == (media_site["videos"] / "a.mp4").read_bytes()
    # Range requests (browser seeking).
    size = len(full.content)
    r = mc.get(info["url"], headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == full.content[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{size}"
    r = mc.get(info["url"], headers={"Range": f"bytes={size + 10}-"})
    assert r.status_code == 416
    # MPEG-TS: a span remuxed into MP4, starting at the keyframe before the hit.
    ts = next(h for h in hits if h["file"] == "b.ts")
    info = mc.get(f"/play/{urllib.parse.quote(ts['id'])}").json()
    assert info["mode"] == "remux" and info["url"].startswith("/media/cams/sub/b.ts?start=")
    span = mc.get(info["url"])
    assert span.status_code == 200 and span.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(span.content)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        n = sum(1 for p in c.demux(s) if p.size)
    assert 0 < n <= 48
    assert mc.get(info["url"], headers={"Range": "bytes=0-9"}).status_code == 206
    # Live stream without a recording; a source that is not configured.
    gate = next(h for h in hits if h["source"] == "gate")
    info = mc.get(f"/play/{urllib.parse.quote(gate['id'])}").json()
    assert info["url"] is None and "not recorded" in info["reason"]
    other = next(h for h in hits if h["source"] == "other")
    info = mc.get(f"/play/{urllib.parse.quote(other['id'])}").json()
    assert info["url"] is None and "not a folder" in info["reason"]
    assert mc.get("/play/nope|0|1").status_code == 404
    assert mc.get("/recordings").json()["sources"]["gate"] == {
        "type": "stream", "recorded": False, "playable": False}


@pytest.mark.parametrize("path,status", [
    ("/media/cams/../secret.mp4", 400),                 # a literal '..' (not normalised away)
    ("/media/cams/sub/../../secret.mp4", 400),
    ("/media/cams/%2e%2e/secret.mp4", 400),              # encoded dots
    ("/media/cams/..%2Fsecret.mp4", 400),                # encoded separator
    ("/media/cams/sub%2Fb.ts", 400),
    ("/media/cams/..%5Csecret.mp4", 400),                # encoded backslash
    ("/media/cams/a.mp4%00.txt", 400),                   # NUL
    ("/media/cams//etc/passwd", 400),                    # absolute
    ("/media/cams/%2Fetc%2Fpasswd", 400),
    ("/media/cams/escape.mp4", 404),                     # a symlink out of the root
    ("/media/cams/notes.txt", 404),                      # not a video of the source
    ("/media/cams/missing.mp4", 404),
    ("/media/gate/x.ts", 404),                           # a stream that is not recorded
    ("/media/nope/a.mp4", 404),                          # no such source
])
def test_media_path_refusals(live_server, path, status):
    # http.client sends the path exactly as written (httpx would resolve the dots itself).
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == status, (path, r.status, body[:200])
    assert b"not for you" not in body


@pytest.fixture(scope="module")
def live_server(media_site):
    import socket
    import time

    from pystream.http import serve_in_thread

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve_in_thread(create_app(media_site["arc"], lambda: None, config=media_site["cfg"]),
                             "127.0.0.1", port)
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True


def test_media_symlink_inside_the_root_is_served(mc, media_site):
    r = mc.get("/media/cams/alias.mp4")
    assert r.status_code == 200 and r.content == (media_site["videos"] / "a.mp4").read_bytes()


def test_span_limits(mc):
    assert mc.get("/media/cams/sub/b.ts", params={"start": 0, "end": 5000}).status_code == 400
    assert mc.get("/media/cams/sub/b.ts", params={"start": 5, "end": 2}).status_code == 400
    assert mc.get("/media/cams/sub/b.ts", params={"start": -1}).status_code == 422


def test_length_limits(mc):
    assert mc.get("/search", params={"q": "0", "k": 1_000_000}).status_code == 422
    assert mc.get("/search", params={"q": "x" * 600}).status_code == 422
    assert mc.get("/search", params={"q": "0", "since": "y" * 100}).status_code == 422
    assert mc.get("/search?q=0&pad=" + "a" * 5000).status_code == 414
    assert mc.get("/thumb/" + "a" * 3000).status_code == 414


def test_image_search_and_upload_limits(mc):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    r = mc.post("/search/image", content=buf.getvalue(), params={"k": 2},
                headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["query"] == "image" and len(r.json()["hits"]) == 2
    assert mc.post("/search/image", content=b"\x00" * 100).status_code == 400  # not an image
    assert mc.post("/search/image", content=b"").status_code == 400
    huge = b"\xff" * (8 * 1024 * 1024 + 1)
    assert mc.post("/search/image", content=huge).status_code == 413
    # A small file that decodes to a huge image (a decompression bomb): refused before decoding.
    bomb = io.BytesIO()
    Image.new("1", (10000, 10000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 100_000
    assert mc.post("/search/image", content=bomb.getvalue()).status_code == 413
    assert mc.post("/search/image", content=buf.getvalue(), params={"k": 10**6}).status_code == 422


def test_no_cors_and_security_headers(mc):
    r = mc.get("/search", params={"q": "0"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = mc.options("/search", headers={"Origin": "https://evil.example",
                                         "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"


def test_token_required_off_loopback(media_site, monkeypatch):
    for var in ("PYSTREAM_HTTP_TOKEN", "PYSTREAM_HTTP_TOKEN_FILE", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(TokenError, match="refusing to serve without a token"):
            create_app(media_site["arc"], lambda: None, host=host)
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_exposure(host, None)
    create_app(media_site["arc"], lambda: None, host="0.0.0.0", token=TOKEN)
    # Where the token comes from: config, file, environment, systemd credential.
    cfg = parse_config({"http": {"token": TOKEN}}).http
    assert resolve_token(cfg, {}) == TOKEN
    f = media_site["root"] / "token"
    f.write_text(TOKEN + "\n")
    assert resolve_token(parse_config({"http": {"token_file": str(f)}}).http, {}) == TOKEN
    assert resolve_token(parse_config({}).http, {"PYSTREAM_HTTP_TOKEN": TOKEN}) == TOKEN
    assert resolve_token(parse_config({}).http, {"PYSTREAM_HTTP_TOKEN_FILE": str(f)}) == TOKEN
    cred = media_site["root"] / "creds"
    cred.mkdir(exist_ok=True)
    (cred / "http-token").write_text(TOKEN)
    assert resolve_token(parse_config({}).http, {"CREDENTIALS_DIRECTORY": str(cred)}) == TOKEN
    assert resolve_token(parse_config({}).http, {}) is None
    with pytest.raises(TokenError, match="too short"):
        resolve_token(parse_config({}).http, {"PYSTREAM_HTTP_TOKEN": "short"})
    with pytest.raises(ValueError, match="token"):
        parse_config({"http": {"token": "short"}})


def test_cli_refuses_to_serve_off_loopback_without_a_token(tmp_path):
    import subprocess
    import sys

    from test_pipeline_fixtures import env_for_subprocess

    env = {k: v for k, v in env_for_subprocess().items() if not k.startswith("PYSTREAM_HTTP")}
    p = subprocess.run([sys.executable, "-m", "pystream", "serve", "--archive", str(tmp_path / "a"),
                        "--host", "0.0.0.0", "--port", "1"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "refusing to serve without a token" in p.stderr, p.stderr


def test_every_route_but_healthz_needs_the_token(media_site):
    status = {"sources": {}, "running": True, "stale": False}
    c = TestClient(create_app(media_site["arc"], lambda: status, config=media_site["cfg"],
                              token=TOKEN, host="0.0.0.0"))
    app_routes = [r for r in c.app.routes if getattr(r, "methods", None)]
    checked = 0
    for r in app_routes:
        path = (r.path.replace("{clip_id:path}", "cams|0|0").replace("{path:path}", "a.mp4")
                .replace("{source}", "cams").replace("{name}", "app.js"))
        for method in r.methods - {"HEAD"}:
            resp = c.request(method, path)
            if path == "/healthz" or (path, method) == ("/login", "GET"):
                assert resp.status_code != 401, (method, path)
                continue
            if path == "/login":  # POST: the form itself; an empty one is a wrong token
                continue
            assert resp.status_code == 401, (method, path, resp.status_code)
            checked += 1
            wrong = c.request(method, path, headers={"Authorization": "Bearer " + "x" * 30})
            assert wrong.status_code == 401, (method, path)
    assert checked >= 15
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert c.get("/search", params={"q": "0"}, headers=ok).status_code == 200
    assert c.get("/media/cams/a.mp4", headers=ok).status_code == 200
    assert c.get("/metrics", headers=ok).status_code == 200
    assert c.get("/healthz").status_code == 200
    # A browser asking for the page gets the login form (with the 401).
    page = c.get("/?q=van", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'name="token"' in page.text and 'value="/?q=van"' in page.text
    # The form: wrong token 401; right token sets an HttpOnly cookie (not the token itself).
    bad = c.post("/login", content="token=nope&next=/", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 401 and "Wrong token" in bad.text
    good = c.post("/login", content=urllib.parse.urlencode({"token": TOKEN, "next": "//evil.example/"}),
                  headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/"  # no open redirect
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    assert c.get("/search", params={"q": "0"}).status_code == 200  # the client keeps the cookie
    c.post("/logout")
    c.cookies.clear()
    assert c.get("/search", params={"q": "0"}).status_code == 401
