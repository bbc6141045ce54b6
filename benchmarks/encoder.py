"""Encoder throughput, side by side in one run: per-frame CLIP vs offline vs streaming TempMe.

CPU, ViT-B/32 shapes (random weights, 224 px). Three ways to turn frames into 12-frame window
embeddings:
  perframe  transformers' CLIPModel.get_image_features per frame, mean pooled (CLIP4Clip);
            each frame is encoded once, so a window every 4 frames costs 4 frames
  offline   TempMe on whole 12-frame windows (one window per 12 frames)
  stream    streaming TempMe, 8 streams batched, a 12-frame window every 4 frames
The rounds of the three are interleaved and each figure is a median over rounds, so machine
noise hits all of them alike. Prints frames/s, MACs per emitted window, output tokens, and last
lines stream_speedup_vs_perframe= and mac_ratio_vs_perframe=.

    python benchmarks/encoder.py [--rounds 5] [--preset default|fast] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pystream.model.configs import random_clip
from pystream.model.schedule import schedule_from_config, streaming_window_macs
from pystream.model.streaming import Chunk, StreamingEncoder
from pystream.model.tempme import ClipVideoModel, image_features


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--presets", default="default,fast")
    ap.add_argument("--tiny", action="store_true", help="tiny model, for a smoke run")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    name = "tiny" if args.tiny else "b32"
    clip = random_clip(name)
    size = clip.config.vision_config.image_size
    S = args.streams
    device = "cpu"
    print(f"device={device} threads={torch.get_num_threads()} model=ViT-{name} random weights "
          f"{size}px streams={S} rounds={args.rounds}")

    px_chunk = torch.randn(S, 4, 3, size, size)  # one new 4-frame chunk per stream
    px_window = torch.randn(max(1, S // 3), 12, 3, size, size)  # offline: whole windows

    def perframe():
        feats = image_features(clip, px_chunk.flatten(0, 1))  # each new frame once
        feats.view(S, 4, -1).mean(1)
        return S * 4

    encoders = {}
    for preset in args.presets.split(","):
        model = ClipVideoModel(clip, schedule=preset)
        enc = StreamingEncoder(model, coarse_windows=0)
        t = [0]

        def feed(enc=enc, t=t):
            chunks = [Chunk(f"cam{s}", px_chunk[s], [t[0] + j for j in range(4)], t[0], 1.0)
                      for s in range(S)]
            t[0] += 4
            return enc.encode(chunks)

        for _ in range(3):  # fill the windows: from now on every call emits S windows
            feed()

        def stream(feed=feed):
            out = feed()
            assert len(out) == S
            return S * 4

        def offline(model=model):
            model.encode_video(px_window)
            return px_window.shape[0] * 12

        encoders[preset] = (model, stream, offline)

    runs = {"perframe": perframe}
    for preset, (_, stream, offline) in encoders.items():
        runs[f"offline_{preset}"] = offline
        runs[f"stream_{preset}"] = stream
    for fn in runs.values():  # warm-up
        fn()
    fps = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            frames = fn()
            fps[k].append(frames / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in fps.items()}

    L = clip.config.vision_config.num_hidden_layers
    off = schedule_from_config("off")
    base_model = ClipVideoModel(clip, schedule="off")
    acc_off = base_model.accounting(off)
    macs_perframe = streaming_window_macs(acc_off, off, L)
    print(f"{'method':<18}{'frames/s':>10}{'x perframe':>12}{'GMAC/window':>13}{'out tokens':>12}")
    print(f"{'perframe':<18}{med['perframe']:>10.1f}{1.0:>12.2f}{macs_perframe / 1e9:>13.2f}"
          f"{acc_off.output_tokens:>12}")
    results = {}
    for preset, (model, _, _) in encoders.items():
        sch = schedule_from_config(preset)
        acc = model.accounting(sch)
        m_off, m_str = acc.total_macs, streaming_window_macs(acc, sch, L)
        for kind, macs in (("offline", m_off), ("stream", m_str)):
            k = f"{kind}_{preset}"
            print(f"{k:<18}{med[k]:>10.1f}{med[k] / med['perframe']:>12.2f}{macs / 1e9:>13.2f}"
                  f"{acc.output_tokens:>12}")
        results[preset] = (med[f"stream_{preset}"] / med["perframe"], macs_perframe / m_str)
    for preset, (speed, macr) in results.items():
        if preset != "default":
            print(f"stream_speedup_vs_perframe_{preset}={speed:.2f}")
            print(f"mac_ratio_vs_perframe_{preset}={macr:.2f}")
    speed, macr = results.get("default", next(iter(results.values())))
    print(f"stream_speedup_vs_perframe={speed:.2f}")
    print(f"mac_ratio_vs_perframe={macr:.2f}")


if __name__ == "__main__":
    main()
