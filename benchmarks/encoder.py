"""Encoder throughput, side by side in one run: per-frame CLIP vs offline vs streaming TempMe.

CPU, ViT-B/32 shapes (random weights, 224 px). Three ways to turn frames into 12-frame window
embeddings:
  perframe  transformers' CLIPModel.get_image_features per frame, mean pooled (CLIP4Clip);
            each frame is encoded once, so a window every 4 frames costs 4 frames
  offline   TempMe on whole 12-frame windows (one window per 12 frames)
  stream    streaming TempMe, 8 streams batched, a 12-frame window every 4 frames
The rounds of the three are interleaved and each figure is a median over rounds, so machine
noise hits all of them alike. Prints frames/s and, for multiply-adds, two comparisons on the
same frames each: per 12 frames (offline TempMe vs per-frame CLIP on one 12-frame window) and per
emitted window when streaming (a window every 4 frames: per-frame CLIP pays 4 new frames,
streaming TempMe pays its new chunk plus the last layers on the window). Last lines:
stream_speedup_vs_perframe=, offline_speedup_vs_perframe=, mac_ratio_vs_perframe= (streaming),
mac_ratio_offline_vs_perframe= (12 frames), and the same with _fast for the fast preset.

    python benchmarks/encoder.py [--rounds 5] [--presets default,fast] [--tiny] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
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
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    name = "tiny" if args.tiny else "b32"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch sees no CUDA device")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clip = random_clip(name)
    if device.type != "cpu":  # a copy: random_clip() caches the CPU model
        clip = copy.deepcopy(clip).to(device)
    size = clip.config.vision_config.image_size
    S = args.streams
    print(f"device={device} threads={torch.get_num_threads()} model=ViT-{name} random weights "
          f"{size}px streams={S} rounds={args.rounds}")

    px_chunk = torch.randn(S, 4, 3, size, size, device=device)  # one new 4-frame chunk per stream
    px_window = torch.randn(max(1, S // 3), 12, 3, size, size, device=device)  # offline windows

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
    sync()
    fps = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            frames = fn()
            sync()
            fps[k].append(frames / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in fps.items()}

    L = clip.config.vision_config.num_hidden_layers
    off = schedule_from_config("off")
    acc_off = ClipVideoModel(clip, schedule="off").accounting(off)
    pf_window, pf_stream = acc_off.total_macs, streaming_window_macs(acc_off, off, L)
    print("throughput (frames/s, median over rounds) and multiply-adds:")
    print(f"  GMAC/12f: one 12-frame window offline; GMAC/emit: per emitted window when streaming "
          f"(hop 4 frames); x fewer: per-frame CLIP / this, on the same frames")
    print(f"{'method':<18}{'frames/s':>10}{'x perframe':>12}{'GMAC/12f':>10}{'x fewer':>9}"
          f"{'GMAC/emit':>11}{'x fewer':>9}{'out tokens':>12}")
    print(f"{'perframe':<18}{med['perframe']:>10.1f}{1.0:>12.2f}{pf_window / 1e9:>10.2f}{1.0:>9.2f}"
          f"{pf_stream / 1e9:>11.2f}{1.0:>9.2f}{acc_off.output_tokens:>12}")
    results = {}
    for preset, (model, _, _) in encoders.items():
        sch = schedule_from_config(preset)
        acc = model.accounting(sch)
        m_off, m_str = acc.total_macs, streaming_window_macs(acc, sch, L)
        k = f"offline_{preset}"
        print(f"{k:<18}{med[k]:>10.1f}{med[k] / med['perframe']:>12.2f}{m_off / 1e9:>10.2f}"
              f"{pf_window / m_off:>9.2f}{'-':>11}{'-':>9}{acc.output_tokens:>12}")
        k = f"stream_{preset}"
        print(f"{k:<18}{med[k]:>10.1f}{med[k] / med['perframe']:>12.2f}{'-':>10}{'-':>9}"
              f"{m_str / 1e9:>11.2f}{pf_stream / m_str:>9.2f}{acc.output_tokens:>12}")
        results[preset] = dict(
            stream_speedup_vs_perframe=med[f"stream_{preset}"] / med["perframe"],
            offline_speedup_vs_perframe=med[f"offline_{preset}"] / med["perframe"],
            mac_ratio_vs_perframe=pf_stream / m_str,
            mac_ratio_offline_vs_perframe=pf_window / m_off,
            output_tokens=acc.output_tokens)
    for preset, r in results.items():
        suffix = "" if preset == "default" else f"_{preset}"
        for key, v in r.items():
            print(f"{key}{suffix}={v:.2f}" if isinstance(v, float) else f"{key}{suffix}={v}")
    print(f"output_tokens_perframe={acc_off.output_tokens}")


if __name__ == "__main__":
    main()
