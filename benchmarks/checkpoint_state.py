"""How much encoder state one checkpoint writes: every stream vs the files only. (issue 12)

    python benchmarks/checkpoint_state.py [--cameras 8] [--chunks 6]

While a file is being indexed every commit saves the encoder's carried state (fsynced), so
that the file resumes where it was after a crash. Live streams restart live and never use
theirs, so the checkpoint keeps only the files' state. This builds the daemon's encoder
(default config, shipped model, reuse on), feeds ``--cameras`` live streams and one file
``--chunks`` chunks each, and prints both sizes: ``state_all_kb=``, ``state_files_only_kb=``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pystream.config import parse_config  # noqa: E402
from pystream.model.streaming import Chunk  # noqa: E402
from pystream.pipeline import Indexer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--chunks", type=int, default=6)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="checkpoint-state-"))
    cfg = parse_config(dict(archive=str(work / "archive"), state_dir=str(work / "state"),
                            http={"enabled": False}))
    enc = Indexer(cfg, sources=[]).encoder
    k, size = enc.chunk_frames, enc.model.image_size
    streams = [f"live:cam{i}|udp://cam{i}" for i in range(args.cameras)] + ["file:f|a.ts"]
    rng = np.random.default_rng(0)
    for step in range(args.chunks):
        enc.encode([Chunk(s, torch.from_numpy(rng.integers(0, 255, (k, 3, size, size))
                                              .astype(np.float32)),
                          [1000.0 + step * k + j for j in range(k)], step * k, 1.0)
                    for s in streams])
    every, files = len(enc.state_bytes()), len(enc.state_bytes(["file:f|a.ts"]))
    print(f"{args.cameras} cameras + 1 file, {args.chunks} chunks of {k} frames each, "
          f"reuse {'on' if enc.reuse is not None else 'off'}")
    print(f"state_all_kb={every / 1024:.0f} state_files_only_kb={files / 1024:.0f} "
          f"ratio={every / files:.1f}")


if __name__ == "__main__":
    main()
