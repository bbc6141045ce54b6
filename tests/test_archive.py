"""Archive: search, filters (prefilter), chained API, ANN recall, encoders, errors, visibility."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from pystream import archive
from pystream.archive import ArchiveNotFoundError, Hit, NoEncoderError, build_filter
from pystream.model.loader import ModelLoadError
from pystream.store import VECTOR_INDEX_NAME, ClipRow
from pystream.writer import ClipWriter

DIM = 16
SOURCES = ["dock-cam", "gate-cam", "o'neil's cam"]  # a quote in a name must not break the SQL
ROWS_PER_SOURCE = 200
T0 = 1_700_000_000.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """600 level-0 rows (3 sources, clustered vectors, 4 s apart) + 30 level-1 rows, indexed."""
    path = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(42)
    centres = unit(rng.standard_normal((12, DIM)))
    rows, vectors = [], {}
    for s, source in enumerate(SOURCES):
        labels = rng.integers(0, len(centres), ROWS_PER_SOURCE)
        vs = unit(centres[labels] + 0.4 * rng.standard_normal((ROWS_PER_SOURCE, DIM)))
        for i in range(ROWS_PER_SOURCE):
            start = T0 + 4 * i
            rows.append(ClipRow(source=source, uri=f"rtsp://{s}", level=0, start=start,
                                end=start + 12, vector=vs[i], thumbnail=b"jpg"))
    for i in range(30):
        rows.append(ClipRow(source=SOURCES[0], uri="rtsp://0", level=1, start=T0 + 60 * i,
                            end=T0 + 60 * (i + 1), vector=unit(rng.standard_normal(DIM))))
    writer = ClipWriter(path, dim=DIM, model_id="test-model", batch_rows=256,
                        optimize_every_s=1e9)
    writer.write(rows)
    writer.close()  # builds the IVF_PQ + scalar indexes
    for row in rows:
        vectors[row.row_id()] = row.vector
    return path, rows, vectors


@pytest.fixture
def arc(built):
    return archive.open(built[0])


def test_index_was_built(arc):
    stats = arc.stats()
    assert stats["total_rows"] == 630
    assert stats["rows_per_source"] == {SOURCES[0]: 230, SOURCES[1]: 200, SOURCES[2]: 200}
    assert stats["vector_index"] and stats["indexes"][VECTOR_INDEX_NAME]["type"] == "IVF_PQ"
    assert stats["indexes"][VECTOR_INDEX_NAME]["unindexed_rows"] == 0


def test_search_finds_stored_vector_first(arc, built):
    _, rows, _ = built
    target = rows[123]
    hits = arc.search(target.vector, k=5)
    assert len(hits) == 5 and isinstance(hits[0], Hit)
    assert hits[0].id == target.row_id() and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    assert hits[0].model == "test-model" and hits[0].thumbnail == b"jpg"
    assert hits[0].source == target.source and hits[0].start == target.start


def test_scores_are_cosine_similarity(arc, built):
    _, _, vectors = built
    query = unit(np.arange(DIM, dtype=np.float32) - 7)
    for hit in arc.search(query, k=5, exact=True):
        assert hit.score == pytest.approx(float(query @ vectors[hit.id]), abs=1e-4)


def test_source_and_time_filters(arc, built):
    query = built[1][0].vector
    hits = arc.search(query, k=20, sources=[SOURCES[2]])
    assert len(hits) == 20 and {h.source for h in hits} == {SOURCES[2]}
    since, until = T0 + 100, T0 + 300
    hits = arc.search(query, k=20, sources=SOURCES[:2], since=since, until=until)
    assert hits and all(h.source in SOURCES[:2] for h in hits)
    assert all(h.end >= since and h.start <= until for h in hits)  # overlaps the range
    assert arc.search(query, sources=[]) == []
    assert arc.search(query, sources=["no such camera'; --"]) == []


def test_prefilter_returns_all_matches_of_a_selective_filter(arc, built):
    # 5 windows of one source overlap [400, 404] (12 s windows starting 388 ... 404); a
    # post-filter over the global top-k would usually miss them.
    query = -built[1][0].vector
    hits = arc.search(query, k=10, sources=[SOURCES[1]], since=T0 + 400, until=T0 + 404)
    assert sorted(h.start for h in hits) == [T0 + 388, T0 + 392, T0 + 396, T0 + 400, T0 + 404]


def test_levels(arc, built):
    query = built[1][-1].vector  # a level-1 row
    assert all(h.level == 0 for h in arc.search(query, k=10))
    hits = arc.search(query, k=10, level=1)
    assert len(hits) == 10 and all(h.level == 1 for h in hits)
    assert hits[0].id == built[1][-1].row_id()
    assert {h.level for h in arc.search(query, k=50, level=None)} == {0, 1}


def test_chained_query_equals_search(arc, built):
    query = built[1][7].vector
    a = arc.search(query, k=7, sources=SOURCES[1:], since=T0 + 50)
    b = arc.query(query).where(sources=SOURCES[1:], since=T0 + 50).limit(7).to_hits()
    assert [h.id for h in a] == [h.id for h in b] and len(a) == 7
    rows = arc.query(query).where(sources=SOURCES[1:]).where(since=T0 + 50).limit(7).to_list()
    assert [r["id"] for r in rows] == [h.id for h in a]  # where() twice: AND
    assert all(type(r) is dict and r["score"] == pytest.approx(1 - r["_distance"]) for r in rows)


def test_ann_recall_against_exact(arc, built):
    rng = np.random.default_rng(7)
    recalls = []
    for row in rng.choice(len(built[1]) - 30, 20, replace=False):
        query = unit(built[1][row].vector + 0.3 * rng.standard_normal(DIM))
        ann = {h.id for h in arc.search(query, k=10)}
        exact = {h.id for h in arc.search(query, k=10, exact=True)}
        recalls.append(len(ann & exact) / 10)
    assert np.mean(recalls) >= 0.9


def test_text_query_needs_an_encoder(built, tmp_path):
    # The recorded model ("test-model") cannot be loaded here: the error says where it came from.
    with pytest.raises(ModelLoadError, match="recorded with the archive"):
        archive.open(built[0]).search("white van")
    # An archive that does not record its model at all.
    import lancedb

    from pystream.store import clip_schema
    lancedb.connect(tmp_path).create_table("clips", schema=clip_schema(DIM))
    with pytest.raises(NoEncoderError, match=r"model=.*text_encoder"):
        archive.open(tmp_path).search("white van")
    calls = []

    def encode_text(texts):
        calls.append(texts)
        return unit(np.stack([built[1][5].vector]))

    arc = archive.open(built[0], text_encoder=encode_text)
    hits = arc.query("white van").limit(3).to_list()
    assert calls == [["white van"]] and hits[0]["id"] == built[1][5].row_id()


def test_torch_and_image_queries(built):
    target = built[1][42]
    arc = archive.open(built[0], image_encoder=lambda images: torch.from_numpy(
        np.stack([target.vector for _ in images])).numpy())
    assert arc.search(torch.from_numpy(target.vector)[None], k=1)[0].id == target.row_id()
    assert arc.search_image(np.zeros((32, 32, 3), np.uint8), k=1)[0].id == target.row_id()
    with pytest.raises(ValueError, match="RGB"):
        arc.search_image(np.zeros((8, 8), np.uint8))


def test_bad_query_vectors(arc):
    with pytest.raises(ValueError, match=r"dimension 8.*dimension 16"):
        arc.search(np.ones(8, np.float32))
    nan_query = np.ones(DIM, np.float32)
    nan_query[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        arc.search(nan_query)
    with pytest.raises(ValueError, match="zeros"):
        arc.search(np.zeros(DIM, np.float32))
    with pytest.raises(ValueError):
        arc.query(np.ones(DIM)).limit(0)


def test_missing_archive(tmp_path):
    missing = tmp_path / "nowhere"
    arc = archive.open(missing)  # opening is lazy: the daemon may not have started yet
    with pytest.raises(FileNotFoundError, match="nowhere"):
        arc.search(np.ones(DIM))
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(ArchiveNotFoundError, match="clips"):
        archive.open(tmp_path / "empty").count()


def test_count(arc):
    assert arc.count() == 630
    assert arc.count(sources=[SOURCES[0]], level=0) == 200
    assert arc.count(since=T0 + 400, until=T0 + 404, level=0) == 5 * len(SOURCES)


def test_filter_sql_is_escaped():
    sql = build_filter(sources=["a'b"], since=1.5, level=0)
    assert sql == "source IN ('a''b') AND `end` >= 1.5 AND level = 0"
    with pytest.raises(ValueError):
        build_filter(since=float("nan"))


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    from pystream.store import ClipRow
    from pystream.writer import ClipWriter
    writer = ClipWriter({path!r}, dim={dim}, model_id="m", optimize_every_s=1e9)
    rows = [ClipRow(source="remote", uri="x", level=0, start=float(i), end=i + 1.0,
                    vector=np.ones({dim}, np.float32)) for i in range(10)]
    writer.write(rows)
    writer.flush()
    print(time.time(), flush=True)
    writer.close(optimize=False)
""")


def test_other_process_sees_new_rows_within_a_second(tmp_path):
    path = str(tmp_path / "live")
    seed_writer = ClipWriter(path, dim=DIM, model_id="m", optimize_every_s=1e9)
    seed_writer.write([ClipRow(source="local", uri="x", level=0, start=0.0, end=1.0,
                               vector=np.ones(DIM, np.float32))])
    seed_writer.close(optimize=False)

    arc = archive.open(path, read_consistency_interval=0.5)
    assert arc.count(sources="remote") == 0  # the table is open at the old version
    child = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT.format(repo=REPO, path=path,
                                                                         dim=DIM)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # printed right after the child's flush() returned
        assert line, child.stderr.read()
        committed_at = float(line)
        while arc.count(sources="remote") < 10:
            assert time.time() - committed_at < 3, "new rows not visible after 3 s"
            time.sleep(0.02)
        seen_after = time.time() - committed_at
    finally:
        child.wait(timeout=60)
    assert seen_after < 1.5, f"rows became visible {seen_after:.2f} s after the commit"
    assert len(arc.search(np.ones(DIM), k=20, sources=["remote"])) == 10


def test_any_source_name_filters_exactly(tmp_path):
    """Property: whatever the source name (quotes, backslashes, unicode), the filter matches it
    and only it: names are escaped, never interpolated raw into the SQL."""
    from hypothesis import given, settings, strategies as st

    writer = ClipWriter(tmp_path, dim=4, model_id="m", optimize_every_s=1e9)
    arc = archive.open(tmp_path, read_consistency_interval=0)  # see each flush at once
    names = []

    @settings(max_examples=30, deadline=None)
    @given(st.text(min_size=1, max_size=12))
    def check(name):
        names.append(name)
        writer.write([ClipRow(source=name, uri="x", level=0, start=float(len(names)),
                              end=float(len(names)), vector=np.ones(4))])
        writer.flush()
        hits = arc.search(np.ones(4), k=50, sources=[name])
        assert hits and {h.source for h in hits} == {name}
        assert arc.count(sources=[name]) == names.count(name)

    try:
        check()
    finally:
        writer.close(optimize=False)
