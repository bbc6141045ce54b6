"""Many live UDP cameras from one process: MPEG-TS files replayed in real time, paced by PCR.

    python benchmarks/ts_replay.py --seconds 200 PORT:FILE.ts[:OFFSET_S] ...

The cameras benchmark needs dozens of live 720p H.264 senders on the box it measures. One
``ffmpeg -re -stream_loop -1 -c copy`` per camera costs about 0.3% of a core each (demuxing
MP4, remuxing to MPEG-TS, one process and its wake-ups per camera): at 60 cameras 0.19 cores of
a 2-core box, which real cameras (separate devices) do not take from the indexer. This sender
does only what a camera's network stack does: it sends the bytes of an MPEG-TS stream, muxed
once beforehand by ffmpeg (``mux_ts``), in 7-packet (1316-byte) datagrams at the times the
stream's own clock (PCR) gives, so each camera's bytes arrive at its real bit rate, in bursts per
frame, as ffmpeg's UDP output sends them. Cameras that replay one file start at different
offsets (like ``-ss``): a receiver joins mid-stream, as it would join a multicast camera.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

TS = 188
DGRAM = 7  # TS packets per datagram (ffmpeg's udp pkt_size=1316)


def mux_ts(src: Path, out: Path, seconds: float) -> Path:
    """``src`` looped into an MPEG-TS file ``seconds`` long with continuous timestamps (ffmpeg,
    stream copy, so the H.264 bytes are the camera's own)."""
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp.ts")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
                    "-i", str(src), "-t", str(seconds), "-c", "copy", "-f", "mpegts", str(tmp)],
                   check=True)
    tmp.rename(out)
    return out


def datagram_times(data: np.ndarray) -> np.ndarray:
    """Send time (seconds from the stream's start) of each 1316-byte datagram of the MPEG-TS
    bytes ``data``: each TS packet's time interpolated between the PCRs around it (the mux's
    own clock, what a receiver's demuxer paces by)."""
    if len(data) < TS or data[0] != 0x47:
        raise ValueError("not an MPEG-TS stream (no sync byte 0x47 at offset 0)")
    pk = data[: len(data) // TS * TS].reshape(-1, TS)
    if not (pk[:, 0] == 0x47).all():
        raise ValueError("MPEG-TS packets out of sync (a sync byte is missing)")
    has_af = (pk[:, 3] & 0x20) != 0
    has_pcr = has_af & (pk[:, 4] >= 7) & ((pk[:, 5] & 0x10) != 0)
    idx = np.flatnonzero(has_pcr)
    if len(idx) < 2:
        raise ValueError("MPEG-TS stream has fewer than two PCRs: cannot pace it")
    b = pk[idx, 6:12].astype(np.int64)
    base = (b[:, 0] << 25) | (b[:, 1] << 17) | (b[:, 2] << 9) | (b[:, 3] << 1) | (b[:, 4] >> 7)
    ext = ((b[:, 4] & 1) << 8) | b[:, 5]
    pcr = (base * 300 + ext) / 27e6
    t = np.interp(np.arange(len(pk)), idx, pcr - pcr[0])  # flat before the first PCR
    return t[::DGRAM]


class Camera:
    def __init__(self, port: int, path: Path, offset_s: float = 0.0):
        self.addr = ("127.0.0.1", port)
        self.data = np.fromfile(path, np.uint8)
        self.times = datagram_times(self.data)
        self.view = memoryview(self.data)
        self.i = int(np.searchsorted(self.times, offset_s))  # join mid-stream, like -ss
        self.t0 = self.times[min(self.i, len(self.times) - 1)]

    def send_due(self, sock: socket.socket, elapsed: float) -> bool:
        """Sends every datagram due by ``elapsed`` seconds; False once the file has ended."""
        times, n = self.times, len(self.times)
        due = self.t0 + elapsed
        while self.i < n and times[self.i] <= due:
            a = self.i * DGRAM * TS
            sock.sendto(self.view[a:a + DGRAM * TS], self.addr)
            self.i += 1
        return self.i < n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cameras", nargs="+", help="PORT:FILE.ts[:OFFSET_S]")
    ap.add_argument("--seconds", type=float, required=True, help="stop after this long")
    ap.add_argument("--tick", type=float, default=0.005, help="pacing granularity, seconds")
    args = ap.parse_args()
    cams = []
    for spec in args.cameras:
        port, path, *off = spec.split(":")
        cams.append(Camera(int(port), Path(path), float(off[0]) if off else 0.0))
        left = cams[-1].times[-1] - cams[-1].t0
        if left < args.seconds:
            raise SystemExit(f"{path} holds {left:.0f} s after offset {off or 0}, "
                             f"fewer than --seconds {args.seconds:.0f}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < args.seconds:
        for c in cams:
            c.send_due(sock, elapsed)
        time.sleep(args.tick)


if __name__ == "__main__":
    main()
