"""Give the heap's free pages back to the kernel (glibc), so a months-long daemon's RSS follows
what it uses rather than its high-water mark.

Many threads (a reader per camera, reconnecting; LanceDB's and libav's own) allocate and free
in glibc's per-thread arenas; freed chunks scattered between live ones stay resident. In the
soak (benchmarks/soak.py) that free-but-resident memory grew about 7 MB a minute while the
memory in use stayed flat. ``malloc_trim(0)`` releases every whole free page of every arena
(madvise), not just the top of the main heap; it takes a few milliseconds, so the writer calls
it after each maintenance pass.

pyarrow allocates from its own bundled mimalloc by default: a 1 GB reserved mapping that
neither glibc's statistics, ``malloc_trim`` nor a jemalloc heap profile sees. In the soak its
resident part grew from 16 to 38 MB over the first hour (flat after) while pyarrow reported
nothing allocated: freed pages that mimalloc kept (benchmarks/results/soak-2026-12-03c.txt).
``use_system_arrow_pool`` sends pyarrow's allocations to malloc instead, where the trim above
returns them. It changes the whole process's pyarrow default, which is what a daemon wants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os


@functools.lru_cache(maxsize=None)
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None


def trim_heap() -> bool:
    """Returns True when glibc released memory, False when there was none to release or this
    is not glibc."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def use_system_arrow_pool() -> bool:
    """Make malloc pyarrow's default memory pool (the Indexer calls it before it opens the
    archive). A user's own ``ARROW_DEFAULT_MEMORY_POOL`` wins. Returns True when it changed."""
    import pyarrow as pa

    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ or \
            pa.default_memory_pool().backend_name == "system":
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    return True
