"""ClipWriter: batching, idempotent upserts, flush/close, hooks, errors, index maintenance."""

import io
import time

import lancedb
import numpy as np
import pytest
from PIL import Image

from pystream.store import VECTOR_INDEX_NAME, ClipRow, clip_id, make_thumbnail, vector_index_params
from pystream.writer import ClipWriter, WriterError

DIM = 16


def make_rows(n, source="cam1", start0=1_000.0, seed=0, level=0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return [ClipRow(source=source, uri=f"/videos/{source}.mp4", level=level, start=start0 + 4 * i,
                    end=start0 + 4 * i + 12, vector=vectors[i]) for i in range(n)]


def open_table(path):
    return lancedb.connect(str(path)).open_table("clips")


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_many_writes_become_few_commits(tmp_path):
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", batch_rows=100, flush_interval_s=30,
                        optimize_every_s=1e9)
    for row in make_rows(250):
        writer.write([row])
    writer.flush()
    stats = writer.stats()
    assert stats["rows_written"] == 250 and stats["pending"] == 0
    assert stats["commits"] <= 3  # 100 + 100 + the flushed 50
    assert stats["last_commit_time"] is not None
    writer.close(optimize=False)
    assert open_table(tmp_path).count_rows() == 250


def test_flush_interval_commits_without_flush(tmp_path):
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", batch_rows=1000, flush_interval_s=0.2,
                        optimize_every_s=1e9)
    writer.write(make_rows(5))
    assert wait_for(lambda: writer.stats()["commits"] == 1, timeout=5)
    writer.close(optimize=False)


def test_rewriting_rows_is_idempotent(tmp_path):
    rows = make_rows(50)
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", optimize_every_s=1e9)
    writer.write(rows)
    writer.write(rows[:10])  # duplicate inside the same batch
    writer.flush()
    writer.write(rows)  # duplicate in a later commit
    writer.close(optimize=False)
    # A new writer (a daemon restarted after a crash) replays the last batch.
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", optimize_every_s=1e9)
    writer.write(rows[-20:])
    writer.close(optimize=False)
    table = open_table(tmp_path)
    assert table.count_rows() == 50
    ids = table.to_arrow().column("id").to_pylist()
    assert sorted(ids) == sorted(clip_id("cam1", 0, r.start) for r in rows)


def test_ids_are_deterministic():
    assert clip_id("cam1", 0, 12.0) == clip_id("cam1", 0, 12.0000001) == "cam1|0|12000"
    assert clip_id("cam1", 1, 12.0) != clip_id("cam1", 0, 12.0)


def test_close_drains_queue_and_refuses_more(tmp_path):
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", batch_rows=10_000, flush_interval_s=60,
                        optimize_every_s=1e9)
    writer.write(make_rows(30))
    writer.close(optimize=False)
    assert open_table(tmp_path).count_rows() == 30
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(make_rows(1))


def test_on_commit_fires_after_commit_with_rows(tmp_path):
    seen = []

    def hook(rows):
        # The rows must already be readable when the hook runs (it advances checkpoints).
        seen.append((len(rows), open_table(tmp_path).count_rows()))

    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", batch_rows=40, on_commit=hook,
                        optimize_every_s=1e9)
    writer.write(make_rows(100))
    writer.flush()
    assert sum(n for n, _ in seen) == 100  # flush() returns only after the hooks ran
    writer.close(optimize=False)
    committed = 0
    for n, visible in seen:
        committed += n
        assert visible >= committed


def test_failing_hook_is_raised_on_flush(tmp_path):
    def hook(rows):
        raise OSError("checkpoint disk full")

    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", on_commit=hook, optimize_every_s=1e9)
    writer.write(make_rows(3))
    with pytest.raises(WriterError, match="checkpoint disk full"):
        writer.flush()
    writer.on_commit = None
    writer.write(make_rows(3, start0=5000))
    writer.flush()  # the error was reported once; the writer keeps going
    writer.close(optimize=False)
    assert open_table(tmp_path).count_rows() == 6


def test_failed_commit_is_raised_and_retried(tmp_path):
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", optimize_every_s=1e9,
                        retry_backoff_s=0.05)
    real_commit = writer._commit
    failures = []

    def flaky_commit(batch):
        if not failures:
            failures.append(1)
            raise IOError("transient storage error")
        real_commit(batch)

    writer._commit = flaky_commit
    writer.write(make_rows(7))
    with pytest.raises(WriterError, match="transient storage error"):
        writer.flush()
    writer.flush()  # the rows stayed queued and the retry committed them
    writer.close(optimize=False)
    assert open_table(tmp_path).count_rows() == 7


def test_bad_rows_are_rejected_at_write(tmp_path):
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", optimize_every_s=1e9)
    row = make_rows(1)[0]
    row.vector = np.ones(8, np.float32)
    with pytest.raises(ValueError, match=r"dimension 8.*dimension 16"):
        writer.write([row])
    row.vector = np.full(DIM, np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        writer.write([row])
    writer.close(optimize=False)
    with pytest.raises(ValueError, match="dimension 16.*dimension 32"):
        ClipWriter(tmp_path, dim=32, model_id="m")


def test_vector_and_scalar_indexes_appear_past_threshold(tmp_path):
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", optimize_every_s=1e9, reindex_growth=2)
    writer.write(make_rows(200))
    writer.flush()
    writer.maintain()
    names = {index.name for index in writer.table.list_indices()}
    assert VECTOR_INDEX_NAME not in names  # 200 rows: too few to train IVF_PQ
    assert {"source_idx", "start_idx", "id_idx"} <= names

    writer.write(make_rows(100, start0=10_000))
    writer.flush()
    writer.maintain()
    assert VECTOR_INDEX_NAME in {index.name for index in writer.table.list_indices()}
    assert writer._index_built_rows == 300

    writer.write(make_rows(150, start0=20_000))
    writer.close()  # close() runs maintenance: new rows join the index, no rebuild yet
    stats = writer.table.index_stats(VECTOR_INDEX_NAME)
    assert stats.num_unindexed_rows == 0 and stats.num_indexed_rows == 450
    assert writer._index_built_rows == 300

    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", optimize_every_s=1e9, reindex_growth=2)
    writer.maintain()  # restart: current size is the base for the next rebuild
    writer.write(make_rows(450, start0=40_000))
    writer.close()  # 900 >= 2 x 450: rebuilt with partitions for the new size
    assert writer._index_built_rows == 900


def test_periodic_maintenance_builds_index(tmp_path):
    writer = ClipWriter(tmp_path, dim=DIM, model_id="m", optimize_every_s=0.2)
    writer.write(make_rows(300))
    writer.flush()
    assert wait_for(lambda: VECTOR_INDEX_NAME in {i.name for i in writer.table.list_indices()})
    writer.close(optimize=False)


def test_index_params_divide_dim():
    assert vector_index_params(1_000_000, 512) == (1000, 64)
    for dim in (16, 24, 100, 512, 768):
        partitions, sub_vectors = vector_index_params(10_000, dim)
        assert dim % sub_vectors == 0 and 1 <= partitions <= 10_000 // 256


def test_make_thumbnail_is_small_jpeg():
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, :160] = (255, 0, 0)
    data = make_thumbnail(rgb)
    assert data[:2] == b"\xff\xd8" and len(data) < 8000
    image = Image.open(io.BytesIO(data))
    assert image.size == (96, 72)
    with pytest.raises(ValueError):
        make_thumbnail(np.zeros((10, 10), np.uint8))
