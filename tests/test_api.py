"""The public Python API: pystream.open() with the recorded model, the top-level exports,
ClipQuery / Hit conventions, thumbnails, pystream.index(), row identity."""

import hashlib
import os
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest

import pystream
from pystream.archive import ClipNotFoundError, Hit, ModelMismatchError, to_timestamp
from pystream.store import MODEL_KEY, ClipRow, clip_id, make_thumbnail, portable_model_ref
from pystream.writer import ClipWriter
from test_pipeline_fixtures import REPO, env_for_subprocess, make_model_dir, write_video

T0 = 1_790_000_000.0


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("api") / "model")


@pytest.fixture(scope="module")
def model(model_dir):
    from pystream.model import ClipVideoModel

    return ClipVideoModel.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def built(tmp_path_factory, model, model_dir):
    """An archive written with the tiny model's id (its directory), 3 sources x 20 windows."""
    path = tmp_path_factory.mktemp("api-archive") / "archive"
    rng = np.random.default_rng(1)
    texts = ["a red circle", "the blue square", "a white van"]
    targets = model.encode_text(texts).numpy()
    thumb = make_thumbnail(np.full((40, 60, 3), 90, np.uint8))
    rows = []
    for s, source in enumerate(["gate", "dock", "yard"]):
        for i in range(20):
            v = unit(targets[s] + 0.5 * rng.standard_normal(model.dim)) if i else targets[s]
            rows.append(ClipRow(source, f"rtsp://{source}", 0, T0 + 4 * i, T0 + 4 * i + 12, v,
                                thumb if s < 2 else None))
    with ClipWriter(path, dim=model.dim, model_id=model_dir) as w:
        w.write(rows)
    return str(path), rows, dict(zip(texts, targets))


# ----------------------------------------------------------------------------- the model

def test_open_loads_the_recorded_model_lazily(built, model_dir):
    path, rows, texts = built
    arc = pystream.open(path)
    assert arc.recorded_model == os.path.realpath(model_dir)
    assert arc._model is None  # nothing loaded for opening, counting, vector search
    assert arc.count() == 60 and arc.search(rows[0].vector, k=1)[0].id == rows[0].row_id()
    assert arc._model is None
    hits = arc.search("a red circle", k=3)  # no encoder, no lambda: the recorded model
    assert arc._model is not None and hits[0].id == rows[0].row_id()
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert arc.stats()["model"] == arc.recorded_model


def test_model_override_forms(built, model, model_dir):
    path, rows, _ = built
    assert pystream.open(path, model=model).search("the blue square", k=1)[0].source == "dock"
    assert pystream.open(path, model=model_dir).search("the blue square", k=1)[0].source == "dock"
    with pytest.raises(TypeError, match="model must be 'shipped'"):
        pystream.open(path, model=42)
    # "shipped" makes 128-d embeddings; this archive stores 32-d ones.
    with pytest.raises(ModelMismatchError) as e:
        pystream.open(path, model="shipped").search("a red circle")
    msg = str(e.value)
    assert "128" in msg and "32" in msg and "shipped" in msg and path in msg


def test_text_encoder_keyword_still_works(built):
    path, rows, texts = built
    arc = pystream.open(path, text_encoder=lambda q: np.stack([texts[t] for t in q]))
    assert arc.search("a white van", k=1)[0].source == "yard" and arc._model is None


def test_image_queries_with_the_model(built, model, tmp_path):
    path, rows, _ = built
    arc = pystream.open(path, model=model)
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    v = arc.encode_image(rgb)
    assert v.shape == (model.dim,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    from PIL import Image

    Image.fromarray(rgb).save(tmp_path / "q.png")
    assert np.allclose(arc.encode_image(tmp_path / "q.png"), v, atol=1e-5)
    assert len(arc.search_image(rgb, k=4, sources=["gate"])) == 4
    with pytest.raises(FileNotFoundError, match="nope.png"):
        arc.search_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="uint8"):
        arc.search_image(rgb.astype(np.float32))


def test_writer_records_the_model_portably(tmp_path, model_dir):
    from pystream.model.loader import shipped_model_dir

    assert portable_model_ref("shipped") == "shipped"
    assert portable_model_ref(str(shipped_model_dir())) == "shipped"
    # tiny-clip with its TempMe adapter (pystream/model/adapter.py)
    assert portable_model_ref("shipped-tempme") == "shipped-tempme"
    assert portable_model_ref(str(shipped_model_dir() / "adapter")) == "shipped-tempme"
    assert portable_model_ref("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    rel = os.path.relpath(model_dir)
    assert portable_model_ref(rel) == os.path.realpath(model_dir)
    # An archive from before the metadata: the model column answers, and the next writer
    # records it in the metadata.
    import lancedb

    from pystream.store import clip_schema

    db = lancedb.connect(tmp_path)
    db.create_table("clips", schema=clip_schema(4))
    with ClipWriter(tmp_path, dim=4, model_id="m"):
        pass
    assert db.open_table("clips").schema.metadata[MODEL_KEY.encode()] == b"m"
    table = lancedb.connect(tmp_path / "old").create_table("clips", schema=clip_schema(4))
    import pyarrow as pa

    table.add(pa.table({"id": ["x"], "source": ["s"], "uri": ["u"], "level": pa.array([0], pa.int8()),
                        "start": [0.0], "end": [1.0], "model": ["from-column"],
                        "vector": pa.FixedSizeListArray.from_arrays(
                            pa.array([1.0, 0, 0, 0], pa.float32()), 4),
                        "thumbnail": pa.array([None], pa.binary()), "created": [0.0]},
                       schema=clip_schema(4)))
    assert pystream.open(tmp_path / "old").recorded_model == "from-column"
    with pytest.raises(ValueError, match=r"dimension 4.*made by model 'm'.*dimension 8"):
        ClipWriter(tmp_path, dim=8, model_id="other")


def test_weights_fingerprint_recorded_and_checked(tmp_path, model_dir, caplog):
    """The archive records a hash of the weights; a model of the same name whose weights
    changed (the shipped model, retrained) is refused with an error that says so, by readers
    and writers alike, while a copy of the same weights elsewhere is accepted."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from pystream.model import ClipVideoModel
    from pystream.store import FINGERPRINT_KEY, recorded_fingerprint

    mine = tmp_path / "model"
    shutil.copytree(model_dir, mine)
    model = ClipVideoModel.from_pretrained(mine)
    assert model.fingerprint and len(model.fingerprint) == 16
    assert ClipVideoModel.from_pretrained(model_dir).fingerprint == model.fingerprint  # a copy
    text = model.encode_text(["a red circle"]).numpy()[0]
    rows = [ClipRow("gate", "rtsp://gate", 0, T0 + 4 * i, T0 + 4 * i + 12, text) for i in range(3)]
    path = tmp_path / "archive"
    with ClipWriter(path, dim=model.dim, model_id=mine, model_fingerprint=model.fingerprint) as w:
        w.write(rows)
    arc = pystream.open(path)
    assert arc.table.schema.metadata[FINGERPRINT_KEY.encode()] == model.fingerprint.encode()
    assert arc.stats()["model_fingerprint"] == model.fingerprint
    assert arc.search("a red circle", k=1)[0].score == pytest.approx(1.0, abs=1e-4)
    assert pystream.open(path, model=model_dir).search("a red circle", k=1)  # same weights

    # "Retrain" the model in place: same directory, other weights.
    weights = load_file(mine / "model.safetensors")
    name = next(k for k in weights if k.endswith("text_projection.weight"))
    weights[name] = weights[name] + 0.01 * torch.randn_like(weights[name])
    save_file(weights, mine / "model.safetensors", metadata={"format": "pt"})
    retrained = ClipVideoModel.from_pretrained(mine)
    assert retrained.fingerprint != model.fingerprint
    with pytest.raises(ModelMismatchError) as e:
        pystream.open(path).search("a red circle")
    msg = str(e.value)
    assert model.fingerprint in msg and retrained.fingerprint in msg and "retrained" in msg
    assert str(path) in msg
    with pytest.raises(ModelMismatchError, match=model.fingerprint):
        ClipWriter(path, dim=model.dim, model_id=mine, model_fingerprint=retrained.fingerprint)
    assert pystream.open(path).count() == 3  # nothing lost

    # An archive from before fingerprints: rows but none recorded. The writer cannot know
    # which weights made them: it warns and records nothing; an empty table gets one.
    import lancedb

    old = tmp_path / "old"
    with ClipWriter(old, dim=model.dim, model_id=mine) as w:
        w.write(rows)
    assert recorded_fingerprint(lancedb.connect(old).open_table("clips")) is None
    with caplog.at_level("WARNING"):
        ClipWriter(old, dim=model.dim, model_id=mine,
                   model_fingerprint=retrained.fingerprint).close()
    assert "no weights fingerprint" in caplog.text
    assert recorded_fingerprint(lancedb.connect(old).open_table("clips")) is None
    empty = tmp_path / "empty"
    ClipWriter(empty, dim=model.dim, model_id=mine).close()
    ClipWriter(empty, dim=model.dim, model_id=mine,
               model_fingerprint=retrained.fingerprint).close()
    assert recorded_fingerprint(lancedb.connect(empty).open_table("clips")) == \
        retrained.fingerprint


def test_shipped_models_have_their_own_fingerprints():
    from pystream.model import ClipVideoModel

    base = ClipVideoModel.from_pretrained("shipped")
    assert base.fingerprint == ClipVideoModel.from_pretrained("shipped-base").fingerprint
    assert ClipVideoModel.from_pretrained("shipped-tempme").fingerprint not in (
        None, base.fingerprint)


# ----------------------------------------------------------------------------- queries and hits

def test_where_twice_is_and_and_results_are_plain_or_typed(built):
    path, rows, texts = built
    arc = pystream.open(path, model=None, text_encoder=lambda q: np.stack([texts[t] for t in q]))
    q = arc.query("a red circle").where(sources=["gate", "dock"]).where(sources=["dock", "yard"])
    assert {r["source"] for r in q.limit(50).to_list()} == {"dock"}
    q = arc.query("a red circle").where(since=T0 + 40).where(until=T0 + 50).limit(50)
    assert all(r["end"] >= T0 + 40 and r["start"] <= T0 + 50 for r in q.to_list())
    assert len(q.to_list()) == 3 * 6  # windows starting 28 ... 48 overlap [40, 50] in each source
    assert "`end` >=" in q.filter_sql() and "start <=" in q.filter_sql()
    sql = arc.query("a red circle").where("uri LIKE '%gate%'").where(level=0).limit(50)
    assert {r["source"] for r in sql.to_list()} == {"gate"}
    assert arc.query("a red circle").where(level=1).to_list() == []  # no coarse rows here
    assert len(arc.query("a red circle").where(level=None).limit(100).to_list()) == 60
    with pytest.raises(TypeError, match="sources=\\[...\\]"):
        arc.query("x").where(["gate"])
    with pytest.raises(ValueError, match="level"):
        arc.query("x").where(level="coarse")
    with pytest.raises(ValueError, match="limit"):
        arc.query("x").limit("ten")

    dicts = arc.query("a red circle").limit(3).to_list()
    hits = arc.query("a red circle").limit(3).to_hits()
    assert all(type(d) is dict for d in dicts) and all(isinstance(h, Hit) for h in hits)
    assert [d["id"] for d in dicts] == [h.id for h in hits]
    assert set(hits[0].to_dict()) == {"id", "source", "uri", "level", "start", "end", "score",
                                      "thumbnail", "model"}
    assert "thumbnail" not in hits[0].to_dict(thumbnail=False)
    assert hits[0].to_dict()["score"] == pytest.approx(dicts[0]["score"])


def test_hit_repr_is_short(built):
    path, rows, texts = built
    hit = pystream.open(path).search(rows[0].vector, k=1)[0]
    text = repr(hit)
    assert len(text) < 200 and "\\x" not in text and "bytes>" in text and "gate" in text
    assert "score=1.000" in text


def test_thumbnail_and_get(built):
    path, rows, _ = built
    arc = pystream.open(path)
    jpeg = arc.thumbnail(rows[0].row_id())
    assert jpeg[:2] == b"\xff\xd8"
    assert arc.thumbnail(rows[-1].row_id()) is None  # "yard" rows have none
    assert arc.get(rows[5].row_id()).start == rows[5].start
    with pytest.raises(ClipNotFoundError, match="no clip with id 'nope|0|1'"):
        arc.thumbnail("nope|0|1")
    with pytest.raises(TypeError):
        arc.thumbnail(5)


def test_time_bounds_accept_iso_strings_and_datetimes():
    assert to_timestamp("2026-11-21T08:00") == datetime(2026, 11, 21, 8, 0).timestamp()
    assert to_timestamp(datetime(2026, 11, 21, 8, 0)) == to_timestamp("2026-11-21T08:00")
    assert to_timestamp("1790000000.5") == 1790000000.5
    with pytest.raises(ValueError, match="ISO 8601"):
        to_timestamp("yesterday")
    with pytest.raises(TypeError, match="time bound"):
        to_timestamp([1])


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(TypeError, match="archive path"):
        pystream.open(None)
    with pytest.raises(TypeError, match="text_encoder must be callable"):
        pystream.open(tmp_path, text_encoder="clip")
    with pytest.raises(FileNotFoundError, match="no pystream archive"):
        pystream.open(tmp_path / "nowhere").search("a red circle")


# ----------------------------------------------------------------------------- package surface

def test_import_pystream_is_light_and_exports_resolve():
    code = ("import sys, pystream\n"
            "heavy = [m for m in ('torch', 'lancedb', 'av', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import pystream.model\n"
            "assert 'torch' not in sys.modules\n"
            "for name in pystream.__all__: getattr(pystream, name)\n"
            "from pystream.model import ClipVideoModel\n"
            "assert pystream.ClipVideoModel is ClipVideoModel\n"
            "assert callable(pystream.index) and callable(pystream.open)\n"
            "import pystream.store\n"
            "assert callable(pystream.index)\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env_for_subprocess(), cwd=str(REPO), timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pystream.nope  # noqa: B018


def test_row_identity_has_one_definition():
    # Ids are what makes replays idempotent: they must not change between versions.
    assert clip_id("gate", 0, 1000.0004) == "gate|0|1000000"
    uri = "/rec/a.mp4"
    suffix = hashlib.sha1(uri.encode()).hexdigest()[:12]
    assert clip_id("rec", 1, 12.0, uri) == f"rec|1|12000|{suffix}"
    row = ClipRow("rec", uri, 1, 12.0, 24.0, np.ones(4), recording=True)
    assert row.row_id() == f"rec|1|12000|{suffix}"
    assert ClipRow("gate", "rtsp://g", 0, 5.0, 17.0, np.ones(4)).row_id() == "gate|0|5000"
    import pystream.pipeline as pipeline

    assert not hasattr(pipeline, "row_id")


# ----------------------------------------------------------------------------- pystream.index()

def test_index_function(tmp_path, model, model_dir):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 48, fps=4, seed=3)
    write_video(videos / "b.mkv", 24, fps=4, seed=4)
    (videos / "notes.txt").write_text("not a video")
    seen = []
    result = pystream.index(str(videos), archive=tmp_path / "arc", model=model_dir,
                            source="disk", progress=lambda *a: seen.append(a))
    assert result.files_indexed == 2 and result.errors == 0 and result.rows > 0
    assert result.exit_code == 0 and result.state_dir == str(tmp_path / "arc") + ".state"
    assert str(result).startswith("indexed 2 file(s) (0 already done)")
    assert seen and seen[-1][2] == result.rows
    arc = pystream.open(result.archive)
    assert arc.count(sources="disk") == result.rows
    assert arc.recorded_model == os.path.realpath(model_dir)
    assert arc.search("a red circle", k=2)[0].source == "disk"
    # Resumable: a second run (here with the loaded model object) skips both files.
    again = pystream.index([videos / "a.mp4", videos / "b.mkv"], tmp_path / "arc", model=model,
                           source="disk")
    assert again.files_indexed == 0 and again.files_skipped == 2 and again.rows == result.rows

    with pytest.raises(FileNotFoundError, match="nothing-here: no such file"):
        pystream.index(tmp_path / "nothing-here", archive=tmp_path / "x")
    with pytest.raises(ValueError, match="no video files found"):
        pystream.index(tmp_path / "arc.state", archive=tmp_path / "x")
    with pytest.raises(ValueError, match="source name 'a|b'"):
        pystream.index(videos, archive=tmp_path / "x", source="a|b")
    with pytest.raises(TypeError, match="model must be"):
        pystream.index(videos, archive=tmp_path / "x", model=3.5)


# ----------------------------------------------------------------------------- CLI and HTTP

def test_cli_thumbnail_uses_the_archive(built, tmp_path, capsys):
    from pystream import cli

    path, rows, _ = built
    out = tmp_path / "t.jpg"
    assert cli.main(["thumbnail", rows[0].row_id(), "--archive", path, "-o", str(out)]) == 0
    assert out.read_bytes()[:2] == b"\xff\xd8"
    assert cli.main(["thumbnail", "nope|0|1", "--archive", path]) == 2
    assert "no clip with id 'nope|0|1'" in capsys.readouterr().err
    assert cli.main(["thumbnail", rows[-1].row_id(), "--archive", path]) == 2
    assert "has no thumbnail" in capsys.readouterr().err
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # `search` sets up its own logging
    try:
        assert cli.main(["search", "x", "--archive", path, "--since", "soon"]) == 2
    finally:
        root.handlers[:], root.level = handlers, level
    assert "ISO 8601" in capsys.readouterr().err


def test_http_reports_a_model_mismatch(built):
    from fastapi.testclient import TestClient

    from pystream.http import create_app

    path, rows, _ = built
    client = TestClient(create_app(pystream.open(path, model="shipped"), lambda: None))
    r = client.get("/search", params={"q": "a red circle"})
    assert r.status_code == 503 and "128-dimensional" in r.json()["detail"]
    client = TestClient(create_app(pystream.open(path), lambda: None))
    hits = client.get("/search", params={"q": "a red circle", "k": 2}).json()["hits"]
    assert hits[0]["id"] == rows[0].row_id() and "thumbnail" not in hits[0]
    assert client.get(hits[0]["thumbnail_url"]).content[:2] == b"\xff\xd8"
