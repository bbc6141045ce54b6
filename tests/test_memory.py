"""pystream.memory.trim_heap: freed heap pages scattered between live allocations go back to the
kernel (what keeps the daemon's RSS flat in benchmarks/soak.py)."""

import threading

import pytest

from pystream.memory import _libc, trim_heap


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(_libc() is None, reason="not glibc")
def test_trim_returns_free_pages_between_live_chunks():
    kept = []

    def churn():  # in a thread: its own arena, as the daemon's reader threads have
        blocks = [bytearray(100_000) for _ in range(2000)]  # 200 MB, below the mmap threshold
        kept.extend(blocks[::20])  # live chunks pin the heap: nothing can shrink from the top
        blocks.clear()

    t = threading.Thread(target=churn)
    t.start()
    t.join()
    before = _rss_mb()
    assert trim_heap()
    after = _rss_mb()
    assert before - after > 100, (before, after)
    assert len(kept) == 100


def test_indexer_sends_pyarrow_allocations_to_malloc(tmp_path, monkeypatch):
    """pyarrow's bundled mimalloc keeps freed pages that malloc_trim cannot return (memory.py)."""
    import pyarrow as pa

    from pystream.memory import use_system_arrow_pool

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        assert use_system_arrow_pool()
        assert pa.default_memory_pool().backend_name == "system"
        assert not use_system_arrow_pool()  # already
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")  # the user's choice wins
        assert not use_system_arrow_pool()
        assert pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(before)


def test_the_indexer_switches_the_pool_before_it_opens_the_archive(tmp_path, monkeypatch):
    import pyarrow as pa

    from pystream.config import load_config
    from pystream.pipeline import Indexer
    from test_pipeline_fixtures import make_model_dir, write_config

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    cfg = load_config(write_config(tmp_path / "c.yaml", archive=tmp_path / "arc",
                                   state_dir=tmp_path / "state",
                                   model=make_model_dir(tmp_path / "model"),
                                   folder=tmp_path / "videos"))
    before = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        ix = Indexer(cfg)
        assert pa.default_memory_pool().backend_name == "system"
        ix.writer.close(optimize=False, timeout=30)  # nothing was started but the writer
    finally:
        pa.set_memory_pool(before)
