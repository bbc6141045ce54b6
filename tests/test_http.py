"""HTTP API: search, thumbnails, status, Prometheus metrics, health (FastAPI TestClient)."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

import pystream
from pystream.http import create_app
from pystream.store import ClipRow, ClipWriter, make_thumbnail
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
