"""Benchmark of the clip store: IVF_PQ query latency and recall@10 at 10k and 1M rows.

    python benchmarks/store.py                 # 10k and 1M rows (1M: ~2 GB of vectors, minutes)
    python benchmarks/store.py 10000 100000    # other sizes
    PYSTREAM_BENCH_SIZES=10000 python benchmarks/store.py

Synthetic data: dim-512 unit vectors drawn around random cluster centres (real clip embeddings of
a few cameras are strongly clustered, uniform random vectors would be unrealistically hard).
Queries are perturbed archive vectors, as in "find more like this". Ground truth: exact cosine
top-10 by numpy brute force. Queries go through pystream.archive (the real API path, with result
columns and Hit objects). For each size the script sweeps nprobes x refine_factor and reports the
fastest setting (by p95) whose recall@10 >= 0.95.

Rows are bulk-loaded with table.add() in 100k-row batches (the writer's merge_insert path is
measured separately, at the smallest size, as rows/s). Thumbnails are left empty.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lancedb  # noqa: E402
from lancedb.index import Bitmap, BTree, IvfPq  # noqa: E402

from pystream import archive  # noqa: E402
from pystream.store import ClipRow, clip_id, clip_schema, vector_index_params  # noqa: E402
from pystream.writer import ClipWriter  # noqa: E402

DIM = 512
K = 10
NUM_QUERIES = 200
NUM_CLUSTERS = 1024
NUM_SOURCES = 16
LOAD_BATCH = 100_000
TARGET_RECALL = 0.95
SWEEP_NPROBES = [8, 16, 32, 64]
SWEEP_REFINE = [None, 10, 20, 40]


def make_vectors(n: int, seed: int = 0) -> np.ndarray:
    """n unit vectors around NUM_CLUSTERS centres (cosine to own centre ~0.7)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((NUM_CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, DIM), np.float32)
    for lo in range(0, n, LOAD_BATCH):
        hi = min(n, lo + LOAD_BATCH)
        noise = rng.standard_normal((hi - lo, DIM)).astype(np.float32) / np.sqrt(DIM)
        block = centres[rng.integers(0, NUM_CLUSTERS, hi - lo)] + noise
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def make_queries(vectors: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = vectors[rng.integers(0, len(vectors), NUM_QUERIES)]
    q = picks + 0.5 * rng.standard_normal(picks.shape).astype(np.float32) / np.sqrt(DIM)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row numbers of the exact cosine top-K per query (vectors are unit length).

    Scans the vectors in blocks, keeping a running top-K, so memory stays at one block of scores.
    """
    best_rows = np.empty((len(queries), 0), np.int64)
    best_scores = np.empty((len(queries), 0), np.float32)
    for lo in range(0, len(vectors), LOAD_BATCH):
        scores = queries @ vectors[lo:lo + LOAD_BATCH].T
        top = np.argpartition(-scores, min(K, scores.shape[1] - 1), axis=1)[:, :K]
        best_rows = np.concatenate([best_rows, top + lo], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        keep = np.argsort(-best_scores, axis=1)[:, :K]
        best_rows = np.take_along_axis(best_rows, keep, 1)
        best_scores = np.take_along_axis(best_scores, keep, 1)
    return best_rows


def row_start(i: np.ndarray) -> np.ndarray:
    # 16 cameras, each emitting a window every 4 s.
    return 1.7e9 + (i // NUM_SOURCES) * 4.0


def arrow_batch(vectors: np.ndarray, lo: int) -> pa.Table:
    n = len(vectors)
    rows = np.arange(lo, lo + n)
    sources = [f"cam{r % NUM_SOURCES:02d}" for r in rows]
    starts = row_start(rows)
    return pa.table(
        {
            "id": [clip_id(s, 0, t) for s, t in zip(sources, starts)],
            "source": sources,
            "uri": [f"rtsp://cams/{s}" for s in sources],
            "level": pa.array(np.zeros(n, np.int8)),
            "start": pa.array(starts),
            "end": pa.array(starts + 12.0),
            "model": ["bench"] * n,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
            "thumbnail": pa.nulls(n, pa.binary()),
            "created": pa.array(np.full(n, time.time())),
        },
        schema=clip_schema(DIM),
    )


def writer_rows_per_s(root: str, vectors: np.ndarray) -> float:
    """Throughput of the real writer path (ClipWriter, merge_insert upserts) on `vectors`."""
    rows = [ClipRow(source=f"cam{i % NUM_SOURCES:02d}", uri="x", level=0,
                    start=float(row_start(np.int64(i))), end=float(row_start(np.int64(i))) + 12,
                    vector=v) for i, v in enumerate(vectors)]
    t0 = time.perf_counter()
    writer = ClipWriter(os.path.join(root, "writer"), dim=DIM, model_id="bench",
                        batch_rows=2048, optimize_every_s=1e9)
    writer.write(rows)
    writer.close(optimize=False)
    return len(rows) / (time.perf_counter() - t0)


def latency_and_recall(arc, queries, truth_ids, nprobes, refine):
    latencies, recalls = [], []
    for q, truth in zip(queries, truth_ids):
        t0 = time.perf_counter()
        hits = arc.query(q).where(level=None).limit(K).nprobes(nprobes).refine_factor(refine).to_hits()
        latencies.append((time.perf_counter() - t0) * 1000)
        recalls.append(len({h.id for h in hits} & truth) / K)
    return np.percentile(latencies, 50), np.percentile(latencies, 95), float(np.mean(recalls))


def build_archive(uri: str, vectors: np.ndarray) -> tuple[list[str], float, float, int, int]:
    """The benchmark archive at `uri`: `vectors` bulk-loaded, then IVF_PQ + scalar indexes.
    Returns the row ids, load and index seconds, partitions and sub-vectors."""
    n = len(vectors)
    table = lancedb.connect(uri).create_table("clips", schema=clip_schema(DIM))
    t0 = time.perf_counter()
    ids = []
    for lo in range(0, n, LOAD_BATCH):
        batch = arrow_batch(vectors[lo:lo + LOAD_BATCH], lo)
        ids.extend(batch.column("id").to_pylist())
        table.add(batch)
    load_s = time.perf_counter() - t0
    partitions, sub_vectors = vector_index_params(n, DIM)
    t0 = time.perf_counter()
    table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=partitions,
                                              num_sub_vectors=sub_vectors), name="vector_idx")
    table.create_index("source", config=Bitmap(), name="source_idx")
    table.create_index("start", config=BTree(), name="start_idx")
    return ids, load_s, time.perf_counter() - t0, partitions, sub_vectors


def bench_size(n: int, root: str) -> dict:
    print(f"--- {n} rows x {DIM} dims", flush=True)
    t0 = time.perf_counter()
    vectors = make_vectors(n)
    queries = make_queries(vectors)
    truth_rows = exact_top_k(vectors, queries)
    print(f"data + exact top-{K}: {time.perf_counter() - t0:.1f} s", flush=True)

    uri = os.path.join(root, f"n{n}")
    ids, load_s, index_s, partitions, sub_vectors = build_archive(uri, vectors)
    truth_ids = [{ids[r] for r in row} for row in truth_rows]
    del vectors
    print(f"load {load_s:.1f} s ({n / load_s:,.0f} rows/s), index {index_s:.1f} s "
          f"(IVF_PQ {partitions} partitions, {sub_vectors} sub-vectors)", flush=True)

    arc = archive.open(uri)
    latency_and_recall(arc, queries[:20], truth_ids[:20], 16, 10)  # warm the index cache
    results = []
    for nprobes in SWEEP_NPROBES:
        for refine in SWEEP_REFINE:
            p50, p95, recall = latency_and_recall(arc, queries, truth_ids, nprobes, refine)
            results.append((nprobes, refine, p50, p95, recall))
            print(f"n={n} nprobes={nprobes:3d} refine={str(refine):4s} p50={p50:6.2f} ms "
                  f"p95={p95:6.2f} ms recall@10={recall:.3f}", flush=True)
    good = [r for r in results if r[4] >= TARGET_RECALL]
    best = min(good, key=lambda r: r[3]) if good else max(results, key=lambda r: r[4])
    nprobes, refine, p50, p95, recall = best

    # A filtered query (one camera, one hour) at the chosen setting: prefilter cost.
    t_mid = float(row_start(np.int64(n // 2)))
    t0 = time.perf_counter()
    for q in queries[:50]:
        arc.query(q).where(sources=["cam03"], since=t_mid, until=t_mid + 3600).limit(K) \
            .nprobes(nprobes).refine_factor(refine).to_hits()
    filtered_ms = (time.perf_counter() - t0) * 1000 / 50
    print(f"n={n} chosen nprobes={nprobes} refine={refine}: p50={p50:.2f} ms p95={p95:.2f} ms "
          f"recall@10={recall:.3f}; filtered (1 source, 1 h) mean {filtered_ms:.2f} ms", flush=True)
    return {"p95": p95, "recall": recall}


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main() -> None:
    sizes_arg = sys.argv[1:] or os.environ.get("PYSTREAM_BENCH_SIZES", "10000,1000000").split(",")
    sizes = [int(float(s)) for s in sizes_arg if s.strip()]
    root = tempfile.mkdtemp(prefix="pystream-bench-", dir=os.environ.get("PYSTREAM_BENCH_DIR"))
    print(f"pystream store benchmark: dim={DIM}, k={K}, {NUM_QUERIES} queries, "
          f"{os.cpu_count()} CPUs, lancedb {lancedb.__version__}, data in {root}", flush=True)
    try:
        rate = writer_rows_per_s(root, make_vectors(min(sizes[0], 10_000), seed=2))
        print(f"ClipWriter (merge_insert upsert) ingest: {rate:,.0f} rows/s", flush=True)
        summary = {}
        for n in sizes:
            summary[n] = bench_size(n, root)
            shutil.rmtree(os.path.join(root, f"n{n}"), ignore_errors=True)
        for n, result in summary.items():
            print(f"query_p95_ms_{label(n)}={result['p95']:.2f}")
            print(f"recall10_{label(n)}={result['recall']:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
