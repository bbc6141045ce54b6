"""A pure-Python twin of pystream.merge.StreamStates (the C++ ``_core.StreamStates``): the same
API and the same serialised format, kept as the tests' oracle (tests/test_core_states.py runs
both and checks their blobs are byte-identical). The library itself has one carried-state
implementation, the compiled one.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import deque

import torch

from pystream.merge import Window, WindowBatch

_MAGIC = b"PYSTSTAT"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQII")  # magic, version, header size, payload size, crc32, 0
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}
_ROW_BYTES = 4 + 16 + 16  # sizes + frames + times per token


def _check_arg(t, name, shape, dtype):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"{name} must be {str(dtype)[6:]}, got {t.dtype}")


class PyStreamStates:
    """Pure-Python twin of :class:`StreamStates` (see there); thread safe through one lock."""

    def __init__(self, max_chunks: int = 3, max_bytes: int = 1 << 30) -> None:
        max_chunks, max_bytes = int(max_chunks), int(max_bytes)
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._max_chunks, self._max_bytes = max_chunks, max_bytes
        self._streams: dict = {}  # id -> [dtype, C, last_seq, deque of (seq, tok, sz, fr, tm)]
        self._nbytes = 0
        self._lock = threading.RLock()

    @staticmethod
    def _chunk_bytes(c) -> int:
        return c[1].numel() * c[1].element_size() + c[1].shape[0] * _ROW_BYTES

    def _get(self, stream_id):
        try:
            return self._streams[stream_id]
        except (KeyError, TypeError):
            raise KeyError(f"unknown stream id {stream_id!r}") from None

    def push(self, stream_id, tokens, sizes, frames, times, seq) -> None:
        if not isinstance(stream_id, str):
            raise TypeError(f"stream_id must be str, got {type(stream_id).__name__}")
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [n, C], got {tuple(tokens.shape)}")
        if tokens.dtype not in _DTYPE_CODES:
            raise ValueError(f"tokens must be float32, float16 or bfloat16, got {tokens.dtype}")
        n, C = tokens.shape
        _check_arg(sizes, "sizes", (n,), torch.float32)
        _check_arg(frames, "frames", (n, 2), torch.int64)
        _check_arg(times, "times", (n, 2), torch.float64)
        for name, t in (("tokens", tokens), ("sizes", sizes), ("frames", frames), ("times", times)):
            if not t.is_contiguous():
                raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
        seq = int(seq)
        chunk = (seq,) + tuple(t.detach().to("cpu", copy=True) for t in (tokens, sizes, frames, times))
        add = self._chunk_bytes(chunk)
        with self._lock:
            s = self._streams.get(stream_id)
            freed = 0
            if s is not None:
                if s[1] != C:
                    raise ValueError(f"stream {stream_id!r} holds tokens with C={s[1]}, got C={C}")
                if s[0] != tokens.dtype:
                    raise ValueError(f"stream {stream_id!r} holds {s[0]} tokens, got {tokens.dtype}")
                if seq <= s[2]:
                    raise ValueError(f"stream {stream_id!r}: seq must increase, got {seq} after {s[2]}")
                evict = len(s[3]) - self._max_chunks + 1
                freed = sum(self._chunk_bytes(c) for c in list(s[3])[: max(evict, 0)])
            total = self._nbytes - freed + add
            if total > self._max_bytes:
                raise MemoryError(
                    f"StreamStates: pushing {add} bytes to stream {stream_id!r} would hold {total} "
                    f"bytes, above max_bytes={self._max_bytes} (drop streams or raise max_bytes)"
                )
            if s is None:
                s = self._streams[stream_id] = [tokens.dtype, C, seq, deque()]
            while len(s[3]) >= self._max_chunks:
                s[3].popleft()
            s[3].append(chunk)
            s[2] = seq
            self._nbytes = total

    def windows(self, stream_ids, device=None) -> WindowBatch:
        ids = [stream_ids] if isinstance(stream_ids, str) else list(stream_ids)
        with self._lock:
            ss = [self._get(i) for i in ids]
            for i, s in zip(ids[1:], ss[1:]):
                if (s[0], s[1]) != (ss[0][0], ss[0][1]):
                    raise ValueError(
                        f"windows(): streams {ids[0]!r} ({ss[0][0]}, C={ss[0][1]}) and {i!r} "
                        f"({s[0]}, C={s[1]}) cannot be batched together"
                    )
            dtype, C = (ss[0][0], ss[0][1]) if ss else (torch.float32, 0)
            S = len(ss)
            lens = [sum(c[1].shape[0] for c in s[3]) for s in ss]
            Nmax, Kmax = max(lens, default=0), max((len(s[3]) for s in ss), default=0)
            out = WindowBatch(
                torch.zeros(S, Nmax, C, dtype=dtype), torch.zeros(S, Nmax),
                torch.zeros(S, Nmax, 2, dtype=torch.int64), torch.zeros(S, Nmax, 2, dtype=torch.float64),
                torch.tensor(lens, dtype=torch.int64), torch.zeros(S, Kmax, dtype=torch.int64),
            )
            for k, s in enumerate(ss):
                off = 0
                for q, c in enumerate(s[3]):
                    n = c[1].shape[0]
                    for dst, src in zip(out[:4], c[1:]):
                        dst[k, off : off + n] = src
                    out.chunk_lengths[k, q] = n
                    off += n
        return out if device is None else WindowBatch(*(t.to(device) for t in out))

    def window(self, stream_id, device=None) -> Window:
        with self._lock:
            self._get(stream_id)
            w = self.windows([stream_id])
        L = int(w.lengths[0])
        out = Window(w.tokens[0, :L], w.sizes[0, :L], w.frames[0, :L], w.times[0, :L],
                     w.chunk_lengths[0, : self.num_chunks(stream_id)])
        return out if device is None else Window(*(t.to(device) for t in out))

    def num_chunks(self, stream_id) -> int:
        with self._lock:
            return len(self._get(stream_id)[3])

    def last_seq(self, stream_id) -> int:
        with self._lock:
            return self._get(stream_id)[2]

    def streams(self) -> list:
        with self._lock:
            return sorted(self._streams)

    def drop(self, stream_id) -> None:
        with self._lock:
            s = self._get(stream_id)
            self._nbytes -= sum(self._chunk_bytes(c) for c in s[3])
            del self._streams[stream_id]

    nbytes = property(lambda self: self._nbytes)
    max_chunks = property(lambda self: self._max_chunks)
    max_bytes = property(lambda self: self._max_bytes)

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id) -> bool:
        return isinstance(stream_id, str) and stream_id in self._streams

    def to_bytes(self, streams=None) -> bytes:
        with self._lock:
            ids = [i for i in self._streams if streams is None or i in set(streams)]
            parts = [struct.pack("<qqQ", self._max_chunks, self._max_bytes, len(ids))]
            for sid in sorted(ids, key=lambda i: i.encode()):
                dtype, C, last_seq, chunks = self._streams[sid]
                b = sid.encode()
                parts.append(struct.pack("<Q", len(b)) + b)
                parts.append(struct.pack("<iiqqQ", _DTYPE_CODES[dtype], 0, C, last_seq, len(chunks)))
                for seq, tok, sz, fr, tm in chunks:
                    parts.append(struct.pack("<qq", seq, tok.shape[0]))
                    parts.extend(t.view(torch.uint8).numpy().tobytes() for t in (tok, sz, fr, tm))
        payload = b"".join(parts)
        return _HEADER.pack(_MAGIC, _VERSION, _HEADER.size, len(payload), zlib.crc32(payload), 0) + payload

    @classmethod
    def from_bytes(cls, data) -> "PyStreamStates":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"from_bytes needs bytes, got {type(data).__name__}")
        data = bytes(data)
        pre = "StreamStates.from_bytes: "
        if len(data) < _HEADER.size:
            raise ValueError(pre + f"truncated input ({len(data)} bytes, the header alone is 32)")
        magic, version, hsize, psize, crc, _ = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError(pre + "not a StreamStates blob (bad magic)")
        if version != _VERSION:
            raise ValueError(pre + f"unsupported format version {version} (this build reads version {_VERSION})")
        if hsize != _HEADER.size:
            raise ValueError(pre + "corrupt header (bad header size)")
        if psize != len(data) - _HEADER.size:
            raise ValueError(pre + ("truncated input" if psize > len(data) - 32 else "trailing bytes"))
        payload = memoryview(data)[_HEADER.size :]
        if zlib.crc32(payload) != crc:
            raise ValueError(pre + "checksum mismatch (corrupt state)")
        pos = 0

        def take(n):
            nonlocal pos
            if n < 0 or pos + n > len(payload):
                raise ValueError(pre + "corrupt state (runs past the end)")
            pos += n
            return payload[pos - n : pos]

        def unpack(fmt):
            return struct.unpack(fmt, take(struct.calcsize(fmt)))

        max_chunks, max_bytes, ns = unpack("<qqQ")
        if max_chunks < 1 or max_bytes < 1:
            raise ValueError(pre + "corrupt limits")
        st = cls(max_chunks, max_bytes)
        for _ in range(ns):
            (idlen,) = unpack("<Q")
            sid = bytes(take(idlen)).decode("utf-8", errors="surrogateescape")
            code, _, C, last_seq, nc = unpack("<iiqqQ")
            if code not in _CODE_DTYPES or C < 0 or nc > max_chunks:
                raise ValueError(pre + "corrupt stream header")
            dtype = _CODE_DTYPES[code]
            chunks = deque()
            for _ in range(nc):
                seq, n = unpack("<qq")
                if n < 0:
                    raise ValueError(pre + "corrupt chunk length")
                es = torch.empty((), dtype=dtype).element_size()

                def tensor(count, dt, shape):
                    raw = bytearray(take(count * torch.empty((), dtype=dt).element_size()))
                    return torch.frombuffer(raw, dtype=dt).reshape(shape) if count else torch.empty(shape, dtype=dt)

                tok = tensor(n * C, dtype, (n, C)) if es else None
                chunk = (seq, tok, tensor(n, torch.float32, (n,)),
                         tensor(2 * n, torch.int64, (n, 2)), tensor(2 * n, torch.float64, (n, 2)))
                st._nbytes += cls._chunk_bytes(chunk)
                chunks.append(chunk)
            if sid in st._streams:
                raise ValueError(pre + f"corrupt state (stream {sid!r} appears twice)")
            st._streams[sid] = [dtype, C, last_seq, chunks]
        if pos != len(payload):
            raise ValueError(pre + "corrupt state (unparsed trailing payload)")
        return st

    def __reduce__(self):
        return (PyStreamStates.from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return (
            f"PyStreamStates(streams={len(self)}, nbytes={self.nbytes}, "
            f"max_chunks={self.max_chunks}, max_bytes={self.max_bytes})"
        )
