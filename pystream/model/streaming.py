"""Streaming TempMe: every frame encoded once, each new chunk merged into the carried ones.

With TempMe's 2-2-3 grouping, layers before the last ClipMe layer never mix frames of different
4-frame chunks. So a chunk runs through those layers once, as soon as it is complete, and its
tokens (with sizes and provenance) go into the carried state (``pystream._core.StreamStates``).
Each hop the last ``chunks_per_window`` chunks of a stream are joined, cross-clip merged and run
through the remaining layers: one embedding per window, identical to offline TempMe on the same
frames (tests/test_streaming.py). Cost per window is constant; state is bounded.

A coarse level (running mean of ``coarse_windows`` consecutive window embeddings, L2-normalised)
is emitted alongside for long-range search.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import precision as _precision
from .reuse import ReuseSettings, ReuseState, run_reused_layers
from .schedule import schedule_from_config
from .tempme import ClipVideoModel, Tokens, join_clips

STATE_MAGIC = b"PSENC2"  # PSENC1 (no reuse section) still loads


def _stream_states_cls():
    from pystream.merge import StreamStates

    return StreamStates


@dataclass
class Chunk:
    """k consecutive sampled frames of one stream."""

    stream: str
    frames: object  # uint8 [k, H, W, 3] (numpy or torch) or normalised pixels [k, 3, H, W]
    times: Sequence[float]  # start time of each frame, seconds (wall clock or file time)
    first_frame: int  # index of the first frame among this stream's sampled frames
    frame_duration: float  # seconds one sampled frame stands for (1 / sample fps)
    frame_indices: Optional[Sequence[int]] = None  # default: first_frame, first_frame + 1, ...
    # A file's chunk: its vectors must not depend on how chunks fall into batches (a resumed or
    # replayed file equals an uninterrupted run). Static-patch reuse then gates it against its
    # stream's last full recompute; a live chunk against the state the previous chunk left
    # (model/reuse.py).
    replayable: bool = False

    def indices(self) -> List[int]:
        if self.frame_indices is not None:
            return list(self.frame_indices)
        return [self.first_frame + j for j in range(len(self.times))]


@dataclass
class Emission:
    stream: str
    level: int  # 0 = window, 1 = coarse running mean
    start: float  # seconds, start of the first frame covered
    end: float  # seconds, end of the last frame covered
    first_frame: int
    last_frame: int
    vector: np.ndarray  # [D] float32, L2-normalised


@dataclass
class _Progress:
    chunks: int = 0  # chunks pushed
    coarse_sum: Optional[List[float]] = None
    coarse_n: int = 0
    coarse_start: float = 0.0
    coarse_end: float = 0.0
    coarse_first: int = 0
    coarse_last: int = 0


class StreamingEncoder:
    """Encode many streams chunk by chunk; ``encode`` batches the new chunks of all streams."""

    def __init__(self, model: ClipVideoModel, schedule=None, hop_chunks: int = 1,
                 coarse_windows: int = 15, max_state_bytes: int = 1 << 30,
                 precision: str = "fp32", reuse=None):
        """``precision``: auto | fp32 | bf16 | int8 (precision.py). ``reuse``: ReuseSettings, a dict of
        its fields, or None/threshold 0 for no static-patch reuse (reuse.py)."""
        self.model = model
        self.device = model.pixel_mean.device
        self.precision = _precision.resolve(precision, self.device)
        if self.precision == "bf16":
            self.model = model = _precision.with_bf16_linears(model)
        elif self.precision == "int8":
            self.model = model = _precision.with_int8_linears(model)
        self.schedule = schedule_from_config(schedule) if schedule is not None else model.schedule
        L = len(model.layers)
        s = self.schedule
        if s.enabled:
            self.chunk_frames = s.frames_per_chunk
            self.window_chunks = s.chunks_per_window
            self.chunk_stop = s.clipme_start(L) + len(s.clip_groups) - 1
        else:  # per-frame CLIP: all layers per frame, carry only the CLS outputs
            self.chunk_frames = 4
            self.window_chunks = 3
            self.chunk_stop = L
        if hop_chunks < 1:
            raise ValueError(f"hop_chunks must be >= 1, got {hop_chunks}")
        self.hop_chunks = hop_chunks
        self.coarse_windows = coarse_windows
        self.max_state_bytes = max_state_bytes
        self.states = _stream_states_cls()(self.window_chunks, max_state_bytes)
        self.progress: Dict[str, _Progress] = {}
        if isinstance(reuse, dict):
            reuse = ReuseSettings(**reuse)
        if reuse is not None and reuse.threshold < 0:
            raise ValueError(f"reuse threshold must be >= 0, got {reuse.threshold}")
        if reuse is not None and reuse.refresh_chunks < 1:
            raise ValueError(f"reuse refresh_chunks must be >= 1, got {reuse.refresh_chunks}")
        # Reuse needs the per-frame layers before ClipMe; per-frame CLIP (merging off) has them
        # all the way, but its baseline role is to be plain CLIP, so reuse applies to TempMe only.
        # Cached keys/values in the linears' compute dtype: bf16 halves the record (1.5 MB a
        # ViT-B/32 stream instead of 2.8).
        kv = torch.bfloat16 if self.precision == "bf16" else None
        self.reuse = ReuseState(reuse, kv_dtype=kv) \
            if (reuse is not None and reuse.enabled and s.enabled) else None

    @property
    def frames_per_window(self) -> int:
        return self.chunk_frames * self.window_chunks

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def encode(self, chunks: Sequence[Chunk]) -> List[Emission]:
        """Run new complete chunks (any streams, several per stream allowed, in order)."""
        if not chunks:
            return []
        with _precision.autocast(self.precision, self.device):
            return self._encode(chunks)

    def _encode(self, chunks: Sequence[Chunk]) -> List[Emission]:
        for c in chunks:
            if len(c.times) != self.chunk_frames:
                raise ValueError(
                    f"stream {c.stream!r}: a chunk needs {self.chunk_frames} frames, got {len(c.times)}"
                )
        tokens = self._chunk_layers(chunks)
        out: List[Emission] = []
        # Rounds: the j-th chunk of each stream, so a stream's windows see its chunks in order.
        rounds: List[List[int]] = []
        seen: Dict[str, int] = {}
        for i, c in enumerate(chunks):
            j = seen.get(c.stream, 0)
            seen[c.stream] = j + 1
            if j == len(rounds):
                rounds.append([])
            rounds[j].append(i)
        for rnd in rounds:
            ready = []
            for i in rnd:
                c = chunks[i]
                self._push(c.stream, tokens, i)
                p = self.progress[c.stream]
                if p.chunks >= self.window_chunks and (p.chunks - self.window_chunks) % self.hop_chunks == 0:
                    ready.append(c.stream)
            out.extend(self._emit_windows(ready))
        return out

    @torch.no_grad()
    def finish(self, stream: str, tail: Optional[Chunk] = None) -> List[Emission]:
        """End of a stream: encode a last partial chunk (padded by repeating its last frame),
        emit a window covering the end if none did, flush the coarse level, drop the state."""
        out: List[Emission] = []
        if tail is not None and len(tail.times) > 0:
            out.extend(self.encode([self._pad_chunk(tail)]))
        p = self.progress.get(stream)
        if p is not None and p.chunks:
            covered = p.chunks >= self.window_chunks and \
                (p.chunks - self.window_chunks) % self.hop_chunks == 0
            if not covered:
                with _precision.autocast(self.precision, self.device):
                    out.extend(self._emit_windows([stream], short=p.chunks < self.window_chunks))
            out.extend(self._flush_coarse(stream))
        self.drop(stream)
        return out

    def drop(self, stream: str):
        if stream in self.states:
            self.states.drop(stream)
        self.progress.pop(stream, None)
        if self.reuse is not None:
            self.reuse.drop(stream)

    def reused_share(self, stream: str) -> float:
        """Share of this stream's patches that reused cached state (0 without reuse)."""
        return self.reuse.reused_share(stream) if self.reuse is not None else 0.0

    def _pad_chunk(self, c: Chunk) -> Chunk:
        n = len(c.times)
        if n > self.chunk_frames:
            raise ValueError(f"tail chunk has {n} frames, more than {self.chunk_frames}")
        frames = c.frames
        idx = list(range(n)) + [n - 1] * (self.chunk_frames - n)
        frames = frames[idx] if isinstance(frames, torch.Tensor) else np.asarray(frames)[idx]
        times = [c.times[i] for i in idx]
        indices = [c.indices()[i] for i in idx]
        return Chunk(c.stream, frames, times, c.first_frame, c.frame_duration, indices,
                     c.replayable)

    def _chunk_layers(self, chunks: Sequence[Chunk]) -> Tokens:
        m = self.model
        given = [isinstance(c.frames, torch.Tensor) and c.frames.is_floating_point()
                 for c in chunks]  # normalised pixels handed in (else uint8 frames)
        frames = [c.frames if isinstance(c.frames, torch.Tensor)
                  else torch.as_tensor(np.asarray(c.frames)) for c in chunks]
        if not any(given) and len({(f.shape[-3:], f.dtype) for f in frames}) == 1:
            # uint8 frames: joined first (4x fewer bytes than floats), normalised in one call
            pixels = m.preprocess(torch.cat([f.reshape(-1, *f.shape[-3:]) for f in frames]))
        else:  # per chunk, so that preprocess names what is wrong with a chunk's frames
            pix = [m.pixels_for_embed(c.frames) if g else m.preprocess(c.frames)
                   for c, g in zip(chunks, given)]
            pixels = torch.cat([p.reshape(-1, *p.shape[-3:]) for p in pix])
        frame_index, frame_times = [], []
        for c in chunks:
            frame_index += c.indices()  # a padded tail repeats its last frame's index
            frame_times += [(t, t + c.frame_duration) for t in c.times]
        t = m.embed(pixels, frame_index, frame_times, finite=not any(given))
        if self.reuse is not None:
            c0 = self.schedule.clipme_start(len(m.layers))
            t = run_reused_layers(m, t, [c.stream for c in chunks], self.chunk_frames, self.reuse,
                                  {c.stream for c in chunks if not c.replayable},
                                  c0, c0 * self.schedule.imgme_r)
            t = m.run_layers(t, c0, self.chunk_stop, self.schedule)
        else:
            t = m.run_layers(t, 0, self.chunk_stop, self.schedule)
        if not self.schedule.enabled:  # keep only the CLS outputs of the k frames of a chunk
            t = Tokens(t.h[:, :1], t.sizes[:, :1], 1, t.frames[:, :1], t.times[:, :1])
            t = join_clips(t, self.chunk_frames)
        assert t.num_seq == len(chunks)
        return t

    def _push(self, stream: str, t: Tokens, i: int):
        p = self.progress.setdefault(stream, _Progress())
        self.states.push(stream, t.h[i].contiguous(), t.sizes[i].contiguous(),
                         t.frames[i].contiguous(), t.times[i].contiguous(), p.chunks)
        p.chunks += 1

    def _emit_windows(self, streams: List[str], short: bool = False) -> List[Emission]:
        if not streams:
            return []
        m = self.model
        if short:  # end of a stream shorter than one window: join what there is
            assert len(streams) == 1
            n_chunks = self.states.num_chunks(streams[0])
        else:
            n_chunks = self.window_chunks
        w = self.states.windows(list(streams), device=self.device)  # carried tokens: host memory
        h, sizes, frames, times = w.tokens, w.sizes, w.frames, w.times
        S = len(streams)
        per = h.shape[1] // n_chunks  # every chunk has the same token count under a schedule
        n_cls = self.chunk_frames
        t = Tokens(h.reshape(S * n_chunks, per, -1), sizes.reshape(S * n_chunks, per), n_cls,
                   frames.reshape(S * n_chunks, per, 2), times.reshape(S * n_chunks, per, 2))
        if self.schedule.enabled:
            t = m.run_layers(t, self.chunk_stop, len(m.layers), self.schedule,
                             last_group=n_chunks if short else None)
            with _precision.full_precision(self.device):
                vecs = m.head(Tokens(t.h.float(), t.sizes, t.n_cls, t.frames, t.times),
                              n_chunks * self.chunk_frames)
        else:
            with _precision.full_precision(self.device):
                feats = m.clip.visual_projection(m.vision.post_layernorm(t.h.float()))
            vecs = F.normalize(feats.reshape(S, -1, feats.shape[-1]).mean(1), dim=-1)
            t = join_clips(t, n_chunks)
        out = []
        for s, name in enumerate(streams):
            e = Emission(
                name, 0,
                float(t.times[s, :, 0].min()), float(t.times[s, :, 1].max()),
                int(t.frames[s, :, 0].min()), int(t.frames[s, :, 1].max()),
                vecs[s].float().cpu().numpy(),
            )
            out.append(e)
            out.extend(self._add_coarse(e))
        return out

    # ------------------------------------------------------------------ coarse level
    def _add_coarse(self, e: Emission) -> List[Emission]:
        if self.coarse_windows <= 0:
            return []
        p = self.progress[e.stream]
        if p.coarse_n == 0:
            p.coarse_sum = [0.0] * len(e.vector)
            p.coarse_start, p.coarse_first = e.start, e.first_frame
        p.coarse_sum = (np.asarray(p.coarse_sum) + e.vector.astype(np.float64)).tolist()
        p.coarse_n += 1
        p.coarse_end, p.coarse_last = e.end, e.last_frame
        return self._flush_coarse(e.stream) if p.coarse_n >= self.coarse_windows else []

    def _flush_coarse(self, stream: str) -> List[Emission]:
        p = self.progress.get(stream)
        if p is None or p.coarse_n == 0:
            return []
        v = np.asarray(p.coarse_sum, dtype=np.float64) / p.coarse_n
        v = (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)
        e = Emission(stream, 1, p.coarse_start, p.coarse_end, p.coarse_first, p.coarse_last, v)
        p.coarse_n, p.coarse_sum = 0, None
        return [e]

    # ------------------------------------------------------------------ checkpoints
    def state_bytes(self, streams=None) -> bytes:
        """Carried tokens (from the core) + per-stream counters, for crash-safe resume; of every
        stream, or of ``streams`` only (a checkpoint needs just the ones that resume)."""
        keep = None if streams is None else sorted(set(streams))
        core = self.states.to_bytes(keep)
        meta = json.dumps({k: vars(v) for k, v in self.progress.items()
                           if keep is None or k in keep}).encode()
        reuse = self.reuse.to_bytes(keep) if self.reuse is not None else b""
        return (STATE_MAGIC + struct.pack("<QQQ", len(core), len(meta), len(reuse))
                + core + meta + reuse)

    def load_state_bytes(self, blob: bytes):
        v1 = blob.startswith(b"PSENC1")
        head = len(STATE_MAGIC) + (16 if v1 else 24)
        if not (v1 or blob.startswith(STATE_MAGIC)) or len(blob) < head:
            raise ValueError("not a pystream encoder state (bad magic or truncated)")
        if v1:
            (n_core, n_meta), n_reuse = struct.unpack_from("<QQ", blob, len(STATE_MAGIC)), 0
        else:
            n_core, n_meta, n_reuse = struct.unpack_from("<QQQ", blob, len(STATE_MAGIC))
        off = head
        if len(blob) != off + n_core + n_meta + n_reuse:
            raise ValueError("corrupt pystream encoder state (length mismatch)")
        states = _stream_states_cls().from_bytes(blob[off: off + n_core])
        try:
            meta = json.loads(blob[off + n_core: off + n_core + n_meta].decode())
            progress = {k: _Progress(**v) for k, v in meta.items()}
        except (ValueError, TypeError) as e:
            raise ValueError(f"corrupt pystream encoder state ({e})") from e
        reuse = None
        if self.reuse is not None:
            reuse = ReuseState(self.reuse.settings, self.reuse.kv_dtype, self.reuse.max_bytes)
            reuse.load_bytes(blob[off + n_core + n_meta:])
        self.states, self.progress = states, progress
        if reuse is not None:
            self.reuse = reuse
