"""Token merging for pystream: the public, torch-facing API over the C++/CUDA core.

``bipartite_merge`` and ``merge_spans`` have the signatures and results of
:mod:`pystream.merge_reference` (the readable specification). They run in ``pystream._core``
(OpenMP on CPU, one fused kernel per merge step on CUDA) chosen by the tensors' device, and fall
back to the PyTorch reference when the extension is not built (one warning), for devices the
core does not handle, and when autograd needs a graph (the core is inference only: a merge of
tensors that require grad, under ``torch.is_grad_enabled()``, runs the differentiable reference).

Differences from the reference worth knowing:
* inputs must be contiguous: a non-contiguous tensor raises ValueError instead of being copied
  silently (call ``.contiguous()``);
* tensors cross into C++ through DLPack without copies; outputs are allocated here with torch.

``StreamStates`` keeps the carried per-stream state (merged tokens, sizes and frame/time
provenance of each stream's last chunks) in C++-owned memory; ``window``/``windows`` return
fresh torch tensors (zero-copy views of buffers C++ filled), optionally moved to a device. It
exists only in the compiled core: without the core, constructing one raises ImportError saying
how to build it (no silent pure-Python swap; tests/state_oracle.py keeps a pure-Python twin as
the tests' oracle).
"""

from __future__ import annotations

import warnings
from typing import Iterable, NamedTuple, Optional, Union

import torch

from . import merge_reference as _ref
from .merge_reference import MergeResult

try:  # the compiled core: merges fall back to the reference without it, StreamStates does not
    from . import _core  # type: ignore[attr-defined]

    HAVE_CORE = True
    _CORE_IMPORT_ERROR: Optional[BaseException] = None
except ImportError as _e:  # pragma: no cover - depends on the build
    _core = None
    HAVE_CORE = False
    _CORE_IMPORT_ERROR = _e

__all__ = [
    "HAVE_CORE",
    "MergeResult",
    "ReuseRecords",
    "ReuseStates",
    "StreamStates",
    "Window",
    "WindowBatch",
    "bipartite_merge",
    "core_cuda_available",
    "merge_spans",
]

_to_dlpack = getattr(torch._C, "_to_dlpack", None) or torch.utils.dlpack.to_dlpack

#: CUDA merges check the metric for NaN/inf like the reference, which costs one stream
#: synchronisation per call. Set to False in a trusted, latency-bound pipeline to keep CUDA
#: merges fully asynchronous (a NaN then yields arbitrary merges instead of a ValueError).
CUDA_CHECK_FINITE = True
_warned: set = set()
_cuda_ok: Optional[bool] = None


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def core_cuda_available() -> bool:
    """True when the core was compiled with CUDA and a device is present (checked once)."""
    global _cuda_ok
    if _cuda_ok is None:
        _cuda_ok = bool(HAVE_CORE and _core.cuda_available())
    return _cuda_ok


def _use_core(device: torch.device) -> bool:
    if not HAVE_CORE:
        _warn_once(
            "nocore",
            f"pystream._core is not built ({_CORE_IMPORT_ERROR}); using the PyTorch reference "
            "merge (slower). Build it with `make build`.",
        )
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        if core_cuda_available():
            return True
        _warn_once(
            "nocuda",
            "pystream._core was built without CUDA kernels; CUDA merges use the PyTorch "
            "reference (rebuild with nvcc available, PYSTREAM_CUDA=on).",
        )
        return False
    return False


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def bipartite_merge(
    x: torch.Tensor,
    sizes: torch.Tensor,
    metric: torch.Tensor,
    r: Union[int, torch.Tensor],
    protected: int = 0,
    lengths: Optional[torch.Tensor] = None,
) -> MergeResult:
    """Merge ``r`` tokens in each row of ``x`` [B, N, C] (rule: :mod:`pystream.merge_reference`).

    sizes [B, N] float32, metric [B, N, Cm] (float32/16, bfloat16), r int or [B], the first
    ``protected`` tokens of every row are never merged, lengths [B] valid tokens per row
    (default N). Returns MergeResult(x [B, M, C], sizes [B, M], lengths [B], index_map [B, N]).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor, got {type(x).__name__}")
    if (
        not _use_core(x.device)
        or (torch.is_grad_enabled() and (x.requires_grad or sizes.requires_grad))
    ):
        return _ref.bipartite_merge(x, sizes, metric, r, protected, lengths)
    if x.dim() != 3:
        raise ValueError(f"tokens must have shape [B, N, C], got rank {x.dim()}")
    B, N, C = x.shape
    if metric.requires_grad:
        metric = metric.detach()
    if lengths is None and type(r) is int:
        M = 0 if B == 0 else (N - r if 0 <= r <= N else N)  # bad r: the core raises
    else:
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu().contiguous()
        if type(r) is not int:
            r = torch.as_tensor(r, dtype=torch.int64).cpu().contiguous()
        M = _core.merge_out_tokens(B, N, protected, r, lengths) if B else 0
        if lengths is not None:
            lengths = _to_dlpack(lengths)
        if type(r) is not int:
            r = _to_dlpack(r)
    dev = x.device
    x_out = torch.empty((B, M, C), dtype=x.dtype, device=dev)
    sizes_out = torch.empty((B, M), dtype=torch.float32, device=dev)
    index_map = torch.empty((B, N), dtype=torch.int64, device=dev)
    lengths_out = torch.empty((B,), dtype=torch.int64, device=dev)
    _core.bipartite_merge(
        _to_dlpack(x),
        _to_dlpack(sizes),
        _to_dlpack(metric),
        r,
        protected,
        lengths,
        _to_dlpack(x_out),
        _to_dlpack(sizes_out),
        _to_dlpack(index_map),
        _to_dlpack(lengths_out),
        _stream(dev),
        CUDA_CHECK_FINITE,
    )
    return MergeResult(x_out, sizes_out, lengths_out, index_map)


def merge_spans(spans: torch.Tensor, index_map: torch.Tensor, out_tokens: int) -> torch.Tensor:
    """Union of provenance spans under a merge: ``spans[B, N, 2]`` (int64 frames or float64
    seconds) -> ``[B, out_tokens, 2]``: min of starts, max of ends, 0 where nothing lands."""
    if (
        not isinstance(spans, torch.Tensor)
        or spans.dtype not in (torch.int64, torch.float64)
        or not _use_core(spans.device)
    ):
        return _ref.merge_spans(spans, index_map, out_tokens)
    if spans.dim() != 3 or spans.shape[-1] != 2:
        raise ValueError(f"spans must have shape [B, N, 2], got {tuple(spans.shape)}")
    out_tokens = int(out_tokens)
    if out_tokens < 0:
        raise ValueError(f"out_tokens must be >= 0, got {out_tokens}")
    out = torch.empty((spans.shape[0], out_tokens, 2), dtype=spans.dtype, device=spans.device)
    _core.merge_spans(
        _to_dlpack(spans), _to_dlpack(index_map), _to_dlpack(out), _stream(spans.device)
    )
    return out


# ----------------------------------------------------------------------------------------------
# Carried per-stream state


class Window(NamedTuple):
    tokens: torch.Tensor  # [T, C], the stream's dtype (chunks concatenated oldest first)
    sizes: torch.Tensor  # [T] float32
    frames: torch.Tensor  # [T, 2] int64 (first, last frame index)
    times: torch.Tensor  # [T, 2] float64 (start, end seconds)
    chunk_lengths: torch.Tensor  # [k] int64, tokens per chunk


class WindowBatch(NamedTuple):
    tokens: torch.Tensor  # [S, Nmax, C], zero padded
    sizes: torch.Tensor  # [S, Nmax] float32
    frames: torch.Tensor  # [S, Nmax, 2] int64
    times: torch.Tensor  # [S, Nmax, 2] float64
    lengths: torch.Tensor  # [S] int64, valid tokens per stream
    chunk_lengths: torch.Tensor  # [S, Kmax] int64, tokens per chunk, zero padded


def _require_core() -> None:
    if not HAVE_CORE:
        raise ImportError(
            f"StreamStates (the streaming encoder's carried state) needs the compiled core "
            f"pystream._core, which is not built ({_CORE_IMPORT_ERROR}). Build it with "
            "`make build` (or `pip install .`, which compiles it); there is no pure-Python "
            "fallback for the carried state."
        )


def _host(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.requires_grad:
        t = t.detach()
    return t if t.device.type == "cpu" else t.cpu()  # device -> host copy is the one we make


class _CoreStates:
    """What both C++-owned per-stream states share: a handle on the core object, membership,
    size, dropping a stream, serialisation."""

    __slots__ = ("_s",)

    @classmethod
    def _wrap(cls, core_states):
        obj = cls.__new__(cls)
        obj._s = core_states
        return obj

    def streams(self) -> list:
        return self._s.streams()

    def drop(self, stream_id: str) -> None:
        self._s.drop(stream_id)

    @property
    def nbytes(self) -> int:
        return self._s.nbytes

    def __len__(self) -> int:
        return len(self._s)

    def __contains__(self, stream_id) -> bool:
        return stream_id in self._s

    def to_bytes(self, streams: Optional[Iterable[str]] = None) -> bytes:
        """All streams, or only ``streams`` (ids not held are skipped)."""
        return self._s.to_bytes(None if streams is None else list(streams))


class StreamStates(_CoreStates):
    """Carried state of many streams: each stream's last ``max_chunks`` chunks of merged tokens
    [n, C] (float32/16, bfloat16, kept as pushed), sizes [n] float32, frames [n, 2] int64 and
    times [n, 2] float64, in C++-owned memory; ``max_bytes`` bounds the total payload (tokens +
    sizes + frames + times) over all streams. ``seq`` must increase within a stream.

    ``window(id)`` / ``windows(ids)`` copy a stream's chunks (oldest first) into new buffers
    owned by the returned tensors (exported from C++ through DLPack, no further copy); pass
    ``device=`` to get them on a GPU. Serialise with ``to_bytes()`` / ``from_bytes()`` or
    pickle (versioned format, magic + CRC-32; corrupt input raises ValueError).
    """

    __slots__ = ()

    def __init__(self, max_chunks: int = 3, max_bytes: int = 1 << 30) -> None:
        _require_core()
        self._s = _core.StreamStates(int(max_chunks), int(max_bytes))

    def push(
        self,
        stream_id: str,
        tokens: torch.Tensor,
        sizes: torch.Tensor,
        frames: torch.Tensor,
        times: torch.Tensor,
        seq: int,
    ) -> None:
        """Copy one chunk in (CUDA tensors are copied to the host); evicts the stream's oldest
        chunk beyond max_chunks. MemoryError when max_bytes would be exceeded (nothing changes)."""
        self._s.push(
            stream_id,
            _to_dlpack(_host(tokens, "tokens")),
            _to_dlpack(_host(sizes, "sizes")),
            _to_dlpack(_host(frames, "frames")),
            _to_dlpack(_host(times, "times")),
            int(seq),
        )

    def window(self, stream_id: str, device: Optional[Union[str, torch.device]] = None) -> Window:
        w = Window(*(torch.from_dlpack(c) for c in self._s.window(stream_id)))
        return w if device is None else Window(*(t.to(device) for t in w))

    def windows(
        self, stream_ids: Iterable[str], device: Optional[Union[str, torch.device]] = None
    ) -> WindowBatch:
        ids = [stream_ids] if isinstance(stream_ids, str) else list(stream_ids)
        w = WindowBatch(*(torch.from_dlpack(c) for c in self._s.windows(ids)))
        return w if device is None else WindowBatch(*(t.to(device) for t in w))

    def num_chunks(self, stream_id: str) -> int:
        return self._s.num_chunks(stream_id)

    def last_seq(self, stream_id: str) -> int:
        return self._s.last_seq(stream_id)

    @property
    def max_chunks(self) -> int:
        return self._s.max_chunks

    @property
    def max_bytes(self) -> int:
        return self._s.max_bytes

    @classmethod
    def from_bytes(cls, data: Union[bytes, bytearray, memoryview]) -> "StreamStates":
        _require_core()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"from_bytes needs bytes, got {type(data).__name__}")
        return cls._wrap(_core.StreamStates.from_bytes(bytes(data)))

    def __getstate__(self):
        return self._s.to_bytes()

    def __setstate__(self, state) -> None:
        self._s = _core.StreamStates.from_bytes(state)

    def __reduce__(self):
        return (StreamStates.from_bytes, (self._s.to_bytes(),))

    def __repr__(self) -> str:
        return (
            f"StreamStates(streams={len(self)}, nbytes={self.nbytes}, "
            f"max_chunks={self.max_chunks}, max_bytes={self.max_bytes})"
        )


class ReuseRecords(NamedTuple):
    ref: torch.Tensor  # [S, N, C] input embedding each position was last computed from
    k: torch.Tensor  # [S, L, N, C] cached keys of every reused layer
    v: torch.Tensor  # [S, L, N, C] cached values
    out: torch.Tensor  # [S, N, C] last reused layer's outputs
    age: torch.Tensor  # [S] int64 chunks since the last full recompute; -1 = no record


class ReuseStates(_CoreStates):
    """Static-patch reuse caches (pystream/model/reuse.py), one fixed-size record per stream in
    C++-owned memory beside the carried tokens; ``max_bytes`` bounds them all. ``gather`` stacks
    the records of a batch's streams (optionally onto a device), ``put`` stores new ones (CUDA
    tensors are copied to the host). Serialise with ``to_bytes()`` / ``from_bytes()``."""

    __slots__ = ()

    def __init__(self, layers: int, tokens: int, dim: int, tok_dtype: torch.dtype,
                 kv_dtype: torch.dtype, max_bytes: int = 1 << 30) -> None:
        _require_core()
        self._s = _core.ReuseStates(int(layers), int(tokens), int(dim), str(tok_dtype),
                                    str(kv_dtype), int(max_bytes))

    def gather(self, stream_ids: Iterable[str],
               device: Optional[Union[str, torch.device]] = None) -> ReuseRecords:
        r = ReuseRecords(*(torch.from_dlpack(c) for c in self._s.gather(list(stream_ids))))
        return r if device is None else ReuseRecords(*(t.to(device) for t in r))

    def put(self, stream_ids: Iterable[str], ref: torch.Tensor, k: torch.Tensor,
            v: torch.Tensor, out: torch.Tensor, age: torch.Tensor, patches: torch.Tensor,
            reused: torch.Tensor) -> None:
        args = [_host(t, n).contiguous() for t, n in ((ref, "ref"), (k, "k"), (v, "v"), (out, "out"),
                                                      (age, "age"), (patches, "patches"),
                                                      (reused, "reused"))]
        self._s.put(list(stream_ids), *(_to_dlpack(a) for a in args))

    def advance(self, stream_ids: Iterable[str], age: torch.Tensor, patches: torch.Tensor,
                reused: torch.Tensor) -> None:
        """New ages and counter increments for existing records (KeyError for a stream without
        one); their cached values stay as they are."""
        args = [_host(t, n).contiguous() for t, n in ((age, "age"), (patches, "patches"),
                                                      (reused, "reused"))]
        self._s.advance(list(stream_ids), *(_to_dlpack(a) for a in args))

    def counts(self, stream_id: str) -> tuple:
        """(patches seen, patches reused) of a stream; KeyError when it has no record."""
        return tuple(self._s.counts(stream_id))

    def age(self, stream_id: str) -> int:
        """Chunks since the stream's last full recompute; KeyError when it has no record."""
        return self._s.age(stream_id)

    @property
    def shape(self) -> tuple:
        return tuple(self._s.shape)  # (layers, tokens, dim)

    @property
    def dtypes(self) -> tuple:
        return tuple(getattr(torch, n.split(".")[-1]) for n in self._s.dtypes)

    @property
    def record_bytes(self) -> int:
        return self._s.record_bytes

    @classmethod
    def from_bytes(cls, data: Union[bytes, bytearray, memoryview]) -> "ReuseStates":
        _require_core()
        return cls._wrap(_core.ReuseStates.from_bytes(bytes(data)))

    def __repr__(self) -> str:
        return (f"ReuseStates(streams={len(self)}, record_bytes={self.record_bytes}, "
                f"shape={self.shape})")
