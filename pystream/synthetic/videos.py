"""Deterministic synthetic text-video benchmark whose captions need time.

No pretrained CLIP is reachable offline, so pystream trains a small one on these videos.
Every caption describes something a single frame cannot show: which way an object moves,
whether it appears or disappears, whether it stops, two objects crossing, a colour change.
A mean of per-frame features loses most of that, so the benchmark rewards temporal modelling.

Scenes: 1-2 objects (shapes x colours x sizes) over a per-video textured background (gradient,
smooth blotches, faint stripes, sensor noise) with mild camera jitter. Drawing is plain numpy
masks, no anti-aliasing.

Time convention: a clip of ``frames`` frames covers normalised time u in [0, 1); frame i is
at u = i / frames. So rendering 4x the frames gives a superset of the same instants
(``render_example(ex, s, 48)[::4]`` matches ``render_example(ex, s, 12)`` up to sensor noise),
which is what ``generate_dataset`` relies on: it renders ``frames * encode_fps / fps`` frames
and writes them at ``encode_fps``, so sampling the file at ``fps`` gives the ``frames`` frames.

Splits (compositional generalisation):
  * train and val draw (shape, event) pairs from the same distribution, excluding HELD_OUT;
  * test draws ONLY the HELD_OUT (shape, event) pairs, which never occur in train/val:
        circle+appear, square+stop, triangle+change_colour, star+move, cross+disappear,
        triangle+cross (the first object of a crossing is the triangle; in train/val no
        object of a crossing is a triangle).
    Every shape and every event is seen in training, just not in these pairings. Colours,
    sizes, directions and distractors are drawn the same way in all splits.
All randomness flows from (seed, split, index) through numpy SeedSequence, so the same
arguments always give the same captions and the same pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .vocabulary import (DIR_WORDS, NOUNS, POSITION_TEMPLATES, POSITION_WORDS, SIZE_WORDS,
                         TEMPLATES)

__all__ = [
    "SHAPES", "COLOURS", "SIZES", "EVENTS", "DIRECTIONS", "HELD_OUT", "Example",
    "NOUNS", "SIZE_WORDS", "DIR_WORDS", "TEMPLATES",
    "POSITION_WORDS", "POSITION_TEMPLATES",
    "make_split", "render_example", "frame_positions", "position_caption", "write_video",
    "generate_dataset", "render_stream_frames",
]

SHAPES = ("circle", "square", "triangle", "star", "cross")
# Saturated (or white) object colours; backgrounds are kept muted so a colour mask finds objects.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "purple": (150, 50, 210),
}
SIZES = {"small": 0.09, "large": 0.16}  # object radius as a fraction of the frame side
EVENTS = ("move", "appear", "disappear", "stop", "cross", "change_colour")
DIRECTIONS = ("left", "right", "up", "down")
HELD_OUT = (
    ("circle", "appear"),
    ("square", "stop"),
    ("triangle", "change_colour"),
    ("star", "move"),
    ("cross", "disappear"),
    ("triangle", "cross"),
)
SPLITS = {"train": 0, "val": 1, "test": 2}
N_PARAPHRASES = 4
DISTRACTOR_P = 0.3  # chance of a static second object in single-object events


@dataclass
class Example:
    caption: str
    paraphrases: list[str]
    label: dict
    seed: int
    split: str = "train"


# --------------------------------------------------------------------------------------
# Labels and captions


def _allowed_shapes(event: str) -> list[str]:
    return [s for s in SHAPES if (s, event) not in HELD_OUT]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _other_object(rng, avoid: set[tuple[str, str]], shapes=SHAPES) -> tuple[str, str, str]:
    """A (shape, colour, size) whose (shape, colour) is not in ``avoid``, so captions that
    name colour + shape always identify one object."""
    while True:
        shape, colour = _pick(rng, shapes), _pick(rng, list(COLOURS))
        if (shape, colour) not in avoid:
            return shape, colour, _pick(rng, list(SIZES))


def _sample_label(rng: np.random.Generator, held_out: bool) -> dict:
    if held_out:
        shape, event = _pick(rng, HELD_OUT)
    else:
        event = _pick(rng, EVENTS)
        shape = _pick(rng, _allowed_shapes(event))
    label = {
        "event": event, "shape": shape, "colour": _pick(rng, list(COLOURS)),
        "size": _pick(rng, list(SIZES)), "direction": None, "colour_to": None,
        "shape2": None, "colour2": None, "size2": None, "distractor": None,
    }
    if event in ("move", "stop"):
        label["direction"] = _pick(rng, DIRECTIONS)
    if event == "change_colour":
        label["colour_to"] = _pick(rng, [c for c in COLOURS if c != label["colour"]])
    if event == "cross":
        label["direction"] = _pick(rng, ("horizontal", "vertical"))
        # The second object never makes a held-out pair in train/val either.
        shapes2 = _allowed_shapes("cross")
        s2, c2, z2 = _other_object(rng, {(shape, label["colour"])}, shapes2)
        label.update(shape2=s2, colour2=c2, size2=z2)
    elif rng.random() < DISTRACTOR_P:
        avoid = {(shape, label["colour"]), (shape, label["colour_to"])}
        s2, c2, z2 = _other_object(rng, avoid)
        label["distractor"] = {"shape": s2, "colour": c2, "size": z2}
    return label


def _noun_phrase(rng, shape: str, colour: str, size: str) -> str:
    words = [_pick(rng, ["a", "the"])]
    if rng.random() < 0.5:  # size is mentioned in about half of the phrasings
        words.append(_pick(rng, SIZE_WORDS[size]))
    words += [colour, _pick(rng, NOUNS[shape])]
    return " ".join(words)


def _one_caption(rng, label: dict) -> str:
    ev = label["event"]
    fields = {
        "np": _noun_phrase(rng, label["shape"], label["colour"], label["size"]),
        "noun": _pick(rng, NOUNS[label["shape"]]),
        "size": _pick(rng, SIZE_WORDS[label["size"]]),
        "colour": label["colour"],
        "colour_to": label["colour_to"],
    }
    if label["direction"] in DIR_WORDS:
        fields["dir"] = _pick(rng, DIR_WORDS[label["direction"]])
    if ev == "cross":
        fields["np2"] = _noun_phrase(rng, label["shape2"], label["colour2"], label["size2"])
    return _pick(rng, TEMPLATES[ev]).format(**fields)


def _paraphrases(rng, label: dict, k: int = N_PARAPHRASES) -> list[str]:
    out: list[str] = []
    for _ in range(20 * k):  # random draws until k distinct phrasings
        c = _one_caption(rng, label)
        if c not in out:
            out.append(c)
            if len(out) == k:
                break
    return out


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def make_split(split: str, n: int, seed: int) -> list[Example]:
    """``n`` examples of ``split`` ('train', 'val' or 'test'); deterministic in (split, n, seed)
    and prefix-stable (example i does not depend on n)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    out = []
    for i in range(n):
        rng = _rng(seed, SPLITS[split], i)
        label = _sample_label(rng, held_out=(split == "test"))
        para = _paraphrases(rng, label)
        out.append(Example(caption=para[0], paraphrases=para, label=label,
                           seed=int(rng.integers(2**62)), split=split))
    return out


# --------------------------------------------------------------------------------------
# Rendering


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` of radius ``r`` at offsets (dx, dy) from its centre."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r
    if shape == "triangle":  # apex up, base at dy = r/2
        return (dy <= 0.5 * r) & (np.abs(dx) * np.sqrt(3.0) <= dy + r)
    if shape == "star":  # 5 points: radius is a triangle wave of the angle
        rho = np.hypot(dx, dy)
        phase = (np.arctan2(dx, -dy) / (2 * np.pi) * 5.0) % 1.0
        return rho <= r * (0.45 + 0.55 * np.abs(1.0 - 2.0 * phase))
    if shape == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        arm = 0.3 * r
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    raise ValueError(f"unknown shape {shape!r}")


def _draw(frame: np.ndarray, shape: str, cx: float, cy: float, r: float, rgb) -> None:
    """Fills ``shape`` into ``frame`` (H, W, 3) in place; only the bounding box is touched."""
    h, w = frame.shape[:2]
    x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, w)
    y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    frame[y0:y1, x0:x1][_shape_mask(shape, dx, dy, r)] = rgb


def _resize_bilinear(grid: np.ndarray, n: int) -> np.ndarray:
    """(g, g, c) -> (n, n, c) by separable linear interpolation (smooth blotches)."""
    g = grid.shape[0]
    pos = np.linspace(0, g - 1, n)
    i0 = np.minimum(pos.astype(int), g - 2)
    w = (pos - i0)[:, None, None]
    rows = grid[i0] * (1 - w) + grid[i0 + 1] * w  # (n, g, c)
    w = w[:, 0, 0][None, :, None]
    return rows[:, i0] * (1 - w) + rows[:, i0 + 1] * w


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Muted textured background (n, n, 3) uint8: gradient + blotches + faint stripes +
    static grain. Values stay in ~[25, 185] with low saturation so objects stand out."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    grey = rng.uniform(60, 150)
    c0 = grey + rng.uniform(-25, 25, 3)
    c1 = c0 + rng.uniform(-40, 40, 3)
    th = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(th) + yy * np.sin(th))
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    img = c0 + (c1 - c0) * ramp[..., None]
    img += _resize_bilinear(rng.normal(0, 12, (6, 6, 1)), n)  # smooth blotches
    for _ in range(int(rng.integers(1, 4))):  # faint stripes
        a = rng.uniform(0, np.pi)
        f = rng.uniform(3, 12)
        img += rng.uniform(3, 9) * np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a))
                                          + rng.uniform(0, 2 * np.pi))[..., None]
    img += rng.normal(0, 4, (n, n, 1))  # static grain (same for all frames)
    return np.clip(img, 25, 185).astype(np.uint8)


def _jitter_params(rng, amp_max: float) -> np.ndarray:
    """Per axis: amplitude, two frequencies (cycles per clip) and two phases."""
    return np.stack([
        rng.uniform(0.4, 1.0, 2) * amp_max,
        rng.uniform(2, 5, 2), rng.uniform(5, 11, 2),
        rng.uniform(0, 2 * np.pi, 2), rng.uniform(0, 2 * np.pi, 2),
    ])  # (5, 2)


def _jitter(p: np.ndarray, u: np.ndarray, margin: int) -> np.ndarray:
    """Integer camera offsets (T, 2) as a smooth-ish function of time u (so renders at
    different frame rates agree at shared instants)."""
    u = u[:, None]
    s = 0.6 * np.sin(2 * np.pi * p[1] * u + p[3]) + 0.4 * np.sin(2 * np.pi * p[2] * u + p[4])
    return np.clip(np.rint(p[0] * s), -margin, margin).astype(int)


_U_REF = np.linspace(0.0, 1.0, 33)


def _tracks(label: dict, rng: np.random.Generator, u: np.ndarray) -> list[dict]:
    """Object trajectories in normalised frame coordinates for times ``u`` (T,).

    Returns a list (drawn in order, so later objects are on top) of dicts with
    shape, r (fraction of side), x, y (T,), visible (T,) bool, colour (T, 3) uint8.
    """
    if label["event"] == "none":  # quiet stretch of a stream
        return []
    # Paths are also evaluated on a fixed reference grid (appended, sliced off at the end)
    # so that distractor placement does not depend on how many frames are rendered.
    n_out = len(u)
    u = np.concatenate([u, _U_REF])
    T = len(u)
    ev = label["event"]
    objs = []

    def obj(shape, colour, size):
        r = SIZES[size]
        base = np.clip(np.array(COLOURS[colour]) + rng.integers(-12, 13, 3), 0, 255)
        return {"shape": shape, "r": r, "x": np.zeros(T), "y": np.zeros(T),
                "visible": np.ones(T, bool), "colour": np.tile(base.astype(np.uint8), (T, 1)),
                "colour_name": colour}

    def span(r):  # start/end along the motion axis: at least 0.3 of the frame apart
        m = r + 0.03
        return rng.uniform(m, 0.35), rng.uniform(0.65, 1 - m)

    main = obj(label["shape"], label["colour"], label["size"])
    m = main["r"] + 0.03
    if ev in ("move", "stop"):
        a0, a1 = span(main["r"])
        if label["direction"] in ("left", "up"):
            a0, a1 = a1, a0
        if ev == "move":
            prog = u
        else:  # moves, then stands still from u_stop on
            u_stop = rng.uniform(0.35, 0.6)
            prog = np.minimum(u / u_stop, 1.0)
        along = a0 + (a1 - a0) * prog
        perp = np.full(T, rng.uniform(m, 1 - m))
        horizontal = label["direction"] in ("left", "right")
        main["x"], main["y"] = (along, perp) if horizontal else (perp, along)
    else:
        main["x"][:] = rng.uniform(m, 1 - m)
        main["y"][:] = rng.uniform(m, 1 - m)
    if ev == "appear":
        main["visible"] = u >= rng.uniform(0.25, 0.6)
    elif ev == "disappear":
        main["visible"] = u < rng.uniform(0.4, 0.75)
    elif ev == "change_colour":
        after = u >= rng.uniform(0.3, 0.7)
        to = np.clip(np.array(COLOURS[label["colour_to"]]) + rng.integers(-12, 13, 3), 0, 255)
        main["colour"][after] = to.astype(np.uint8)
    elif ev == "cross":
        other = obj(label["shape2"], label["colour2"], label["size2"])
        mm = max(main["r"], other["r"]) + 0.03
        a0, a1 = span(max(main["r"], other["r"]))
        centre, gap = rng.uniform(0.35, 0.65), rng.uniform(0.1, 0.3)
        sign = 1 if rng.random() < 0.5 else -1
        p1 = np.clip(centre - sign * gap / 2, mm, 1 - mm)
        p2 = np.clip(centre + sign * gap / 2, mm, 1 - mm)
        along1, along2 = a0 + (a1 - a0) * u, a1 + (a0 - a1) * u
        if label["direction"] == "horizontal":
            main["x"], main["y"] = along1, np.full(T, p1)
            other["x"], other["y"] = along2, np.full(T, p2)
        else:
            main["x"], main["y"] = np.full(T, p1), along1
            other["x"], other["y"] = np.full(T, p2), along2
        objs.append(other)

    if label.get("distractor"):
        d = label["distractor"]
        dis = obj(d["shape"], d["colour"], d["size"])
        dm = dis["r"] + 0.03
        # Rejection-sample a spot clear of the main object's whole path (it may still touch
        # after 30 tries; it is drawn underneath, so the main object stays whole).
        for _ in range(30):
            x, y = rng.uniform(dm, 1 - dm, 2)
            ref = slice(n_out, None)
            dist = np.hypot(main["x"][ref] - x, main["y"][ref] - y)
            if dist.min() > main["r"] + dis["r"] + 0.03:
                break
        dis["x"][:], dis["y"][:] = x, y
        objs.insert(0, dis)
    objs.append(main)
    keys = ("x", "y", "visible", "colour")
    return [{**o, **{k: o[k][:n_out] for k in keys}} for o in objs]


def _render(label, rng, size: int, u: np.ndarray, bg: np.ndarray, jit: np.ndarray,
            margin: int) -> np.ndarray:
    """Frames (T, size, size, 3) uint8 for times ``u``; ``bg`` is the (size + 2 margin)^2
    world canvas and ``jit`` the (T, 2) camera offsets."""
    T = len(u)
    tracks = _tracks(label, rng, u)
    frames = np.empty((T, size, size, 3), np.uint8)
    for t in range(T):
        ox, oy = margin + jit[t, 0], margin + jit[t, 1]
        frames[t] = bg[oy:oy + size, ox:ox + size]
        for o in tracks:
            if o["visible"][t]:
                # World -> frame: the camera moved by jit, so the scene shifts by -jit.
                _draw(frames[t], o["shape"], o["x"][t] * size - jit[t, 0],
                      o["y"][t] * size - jit[t, 1], o["r"] * size, o["colour"][t])
    # Sensor noise, fresh every frame (small: does not blur the colour masks).
    noise = rng.integers(-5, 6, frames.shape, dtype=np.int16)
    return np.clip(frames + noise, 0, 255).astype(np.uint8)


def _margin(size: int) -> int:
    return max(2, round(size * 0.03))


def render_example(example: Example, size: int = 128, frames: int = 12) -> np.ndarray:
    """Renders ``example`` to uint8 [frames, size, size, 3]. Frame i is at clip time
    u = i / frames (see module docstring). Deterministic in (example.seed, label)."""
    rng = _rng(example.seed)
    margin = _margin(size)
    bg = _background(rng, size + 2 * margin)
    jp = _jitter_params(rng, margin)
    u = np.arange(frames) / frames
    # The layout rng is separate from the per-frame noise so trajectories (drawn from
    # layout_rng) do not depend on how many frames are rendered.
    layout_rng = _rng(example.seed, 1)
    return _render(example.label, layout_rng, size, u, bg, _jitter(jp, u, margin), margin)


def frame_positions(label: dict, seed: int, frames: int = 12) -> list[dict | None]:
    """Where the main object is in each frame ``render_example`` draws for (``label``,
    ``seed``): per frame {"x", "y" (normalised, camera jitter ignored), "colour" (its name at
    that instant)}, or None where it is not visible. Only the layout is computed, no pixels."""
    u = np.arange(frames) / frames
    main = _tracks(label, _rng(seed, 1), u)[-1]  # drawn last: the captioned object
    first = main["colour"][0]
    out: list[dict | None] = []
    for t in range(frames):
        if not main["visible"][t]:
            out.append(None)
            continue
        changed = label.get("colour_to") and (main["colour"][t] != first).any()
        out.append({"x": float(main["x"][t]), "y": float(main["y"][t]),
                    "colour": label["colour_to"] if changed else label["colour"]})
    return out


def grid_cell(x: float, y: float) -> tuple[str, str]:
    """(horizontal, vertical) third of the frame a normalised point is in."""
    h = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    v = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    return h, v


def position_caption(rng: np.random.Generator, label: dict, where: dict) -> tuple[str, str]:
    """A caption of one frame, the main object (its colour at that instant) and where it is
    ("a small red circle in the top left"), and its hard negative: the same words with
    another grid cell ("a small red circle on the right"). ``where`` is one of
    ``frame_positions``. Other frames of a batch rarely show the same object elsewhere, so
    without the negative a contrastive loss never needs position."""
    np_ = _noun_phrase(rng, label["shape"], where["colour"], label["size"])
    template = _pick(rng, POSITION_TEMPLATES)
    cell = grid_cell(where["x"], where["y"])
    other = _pick(rng, [c for c in POSITION_WORDS if c != cell])
    return (template.format(np=np_, pos=_pick(rng, POSITION_WORDS[cell])),
            template.format(np=np_, pos=_pick(rng, POSITION_WORDS[other])))


# --------------------------------------------------------------------------------------
# Encoding and dataset files


def _video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(frames: np.ndarray | Iterable[np.ndarray], path: str | os.PathLike,
                fps: float = 4.0, crf: int = 20) -> None:
    """Writes RGB uint8 frames [T, H, W, 3] as H.264 (libx264, yuv420p) MP4; falls back to
    MPEG-4 part 2 if PyAV's ffmpeg lacks libx264. H and W must be even (yuv420p)."""
    import av
    from fractions import Fraction

    frames = list(frames)
    if not frames:
        raise ValueError("write_video: no frames")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"write_video: frame size {w}x{h} must be even for yuv420p")
    codec = _video_codec()
    opts = {"crf": str(crf), "preset": "veryfast"} if codec == "libx264" else {}
    with av.open(os.fspath(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=opts)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.thread_count = 1  # many small files: parallelise across files instead
        if codec == "mpeg4":
            s.codec_context.qscale = 3
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def generate_dataset(out_dir: str | os.PathLike, n_train: int, n_val: int, n_test: int,
                     seed: int = 0, size: int = 128, frames: int = 12, fps: float = 1.0,
                     encode_fps: float = 4.0, progress: bool = True) -> dict:
    """Renders and encodes the three splits under ``out_dir/{split}/`` and writes
    ``out_dir/manifest.json``. Each video lasts ``frames / fps`` seconds (12 s by default),
    encoded at ``encode_fps``; decoding it at ``fps`` yields ``frames`` frames.

    Returns the manifest: {"seed", "size", "frames", "fps", "encode_fps", "held_out",
    "examples": [{"path" (relative to out_dir), "caption", "paraphrases", "label", "split",
    "seed"}]}.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    n_render = frames * encode_fps / fps
    if abs(n_render - round(n_render)) > 1e-9:
        raise ValueError("frames * encode_fps / fps must be an integer")
    n_render = int(round(n_render))
    splits = {"train": n_train, "val": n_val, "test": n_test}
    manifest = {"seed": seed, "size": size, "frames": frames, "fps": fps,
                "encode_fps": encode_fps, "codec": _video_codec(),
                "held_out": [list(p) for p in HELD_OUT], "examples": []}
    with tqdm(total=sum(splits.values()), desc="synth", unit="video", disable=not progress) as bar:
        for split, n in splits.items():
            (out / split).mkdir(parents=True, exist_ok=True)
            for i, ex in enumerate(make_split(split, n, seed)):
                rel = f"{split}/{split}_{i:05d}.mp4"
                write_video(render_example(ex, size, n_render), out / rel, fps=encode_fps)
                manifest["examples"].append({"path": rel, **asdict(ex)})
                bar.update(1)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / "manifest.json")  # readers never see a half-written manifest
    return manifest


# --------------------------------------------------------------------------------------
# Live-stream demo


def render_stream_frames(seed: int, seconds: float, size: int = 128, fps: float = 1.0,
                         held_out: bool = False) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """A long "camera" recording: one fixed background, continuous camera jitter, and a
    sequence of events (8-14 s each) separated by optional quiet gaps (1-4 s, background
    only). Returns (frames uint8 [N, size, size, 3] at ``fps``, [(start_s, end_s, caption)]).
    Events use train-like combinations unless ``held_out`` (test combinations only)."""
    rng = _rng(seed, 99)
    margin = _margin(size)
    bg = _background(rng, size + 2 * margin)
    jp = _jitter_params(rng, margin)
    n_total = int(round(seconds * fps))
    parts, segments = [], []
    n = 0
    min_event = int(round(4 * fps))  # a shorter tail cannot show an event: leave it quiet
    after_event = False
    while n < n_total:
        if (after_event and rng.random() < 0.5) or n_total - n < min_event:  # quiet gap
            g = min(int(round(rng.uniform(1, 4) * fps)), n_total - n)
            after_event = False
            s_u = (n + np.arange(g)) / fps / 12.0
            parts.append(_render({"event": "none"}, rng, size, s_u, bg,
                                 _jitter(jp, s_u, margin), margin))
            n += g
            continue
        length = min(int(round(rng.uniform(8, 14) * fps)), n_total - n)  # >= min_event
        label = _sample_label(rng, held_out)
        caption = _paraphrases(rng, label, 1)[0]
        u = np.arange(length) / length  # event time within the segment
        s_u = (n + np.arange(length)) / fps / 12.0  # jitter runs on the global clock
        parts.append(_render(label, rng, size, u, bg, _jitter(jp, s_u, margin), margin))
        segments.append((n / fps, (n + length) / fps, caption))
        n += length
        after_event = True
    frames = np.concatenate(parts) if parts else np.empty((0, size, size, 3), np.uint8)
    return frames, segments
