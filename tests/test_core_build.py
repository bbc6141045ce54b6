"""The compiled module: build facts, no libtorch link, DLPack interop, reference fallback."""

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from pystream import merge
from pystream import merge_reference as ref

ROOT = Path(__file__).resolve().parents[1]
needs_core = pytest.mark.skipif(not merge.HAVE_CORE, reason="pystream._core not built")


@needs_core
def test_build_info():
    info = merge._core.build_info()
    assert isinstance(info["version"], str) and info["version"]
    assert isinstance(info["openmp"], bool) and isinstance(info["cuda_compiled"], bool)
    assert "openmp" in info["summary"] and "cuda" in info["summary"]
    assert isinstance(merge._core.cuda_available(), bool)
    if not info["cuda_compiled"]:
        assert merge._core.cuda_available() is False


@needs_core
def test_importable_from_repo_root():
    out = subprocess.run(
        [sys.executable, "-c", "import pystream._core as c; print(c.build_info()['version'])"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr


@needs_core
@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_module_does_not_link_libtorch():
    libs = subprocess.run(["ldd", merge._core.__file__], capture_output=True, text=True).stdout
    assert "libtorch" not in libs and "libc10" not in libs
    assert "libcudart.so" not in libs  # CUDA runtime is linked statically


@needs_core
def test_window_capsules_are_plain_dlpack():
    s = merge._core.StreamStates(2, 1 << 20)
    t = torch.arange(12, dtype=torch.float32).view(3, 4)
    s.push("a", t, torch.ones(3), torch.zeros(3, 2, dtype=torch.int64),
           torch.zeros(3, 2, dtype=torch.float64), 0)  # tensors go in through __dlpack__
    caps = s.window("a")
    assert len(caps) == 5
    tokens = torch.from_dlpack(caps[0])
    assert torch.equal(tokens, t)
    del caps, s  # the buffer belongs to the tensor now
    assert torch.equal(tokens * 1, t)


def test_fallback_without_core_warns_once(monkeypatch):
    monkeypatch.setattr(merge, "HAVE_CORE", False)
    monkeypatch.setattr(merge, "_warned", set())
    x, s, m = torch.randn(2, 10, 4), torch.ones(2, 10), torch.randn(2, 10, 4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = merge.bipartite_merge(x, s, m, 2, 1)
        merge.bipartite_merge(x, s, m, 2, 1)
        sp = merge.merge_spans(torch.zeros(2, 10, 2, dtype=torch.long), a.index_map, 8)
    assert sum("not built" in str(e.message) for e in w) == 1
    b = ref.bipartite_merge(x, s, m, 2, 1)
    assert torch.equal(a.index_map, b.index_map) and torch.equal(a.x, b.x)
    assert sp.shape == (2, 8, 2)


def test_merge_api_matches_reference_signature():
    import inspect

    assert inspect.signature(merge.bipartite_merge).parameters.keys() == \
        inspect.signature(ref.bipartite_merge).parameters.keys()
    assert merge.MergeResult is ref.MergeResult
    assert isinstance(merge.HAVE_CORE, bool)


def test_stream_states_without_core_fail_loudly(monkeypatch):
    """One carried-state implementation: without the core there is no silent Python swap."""
    monkeypatch.setattr(merge, "HAVE_CORE", False)
    monkeypatch.setattr(merge, "_CORE_IMPORT_ERROR", ImportError("No module named '_core'"))
    assert not hasattr(merge, "PyStreamStates")
    with pytest.raises(ImportError, match="make build"):
        merge.StreamStates(3)
    with pytest.raises(ImportError, match="not built"):
        merge.StreamStates.from_bytes(b"")
