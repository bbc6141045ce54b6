"""Index video files and folders once, from Python: what `pystream index` runs.

    import pystream

    result = pystream.index(["videos"], archive="pystream-data/archive", source="recordings")
    print(result)                      # files indexed / skipped, rows, errors
    arc = pystream.open(result.archive)

Resumable and idempotent: files are checkpointed in `state_dir` (default: ARCHIVE.state) once
their rows are committed, so a second call skips them, and a run stopped half-way resumes
each file where it stopped.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .config import _NAME_PATTERN, VIDEO_PATTERNS, Config, load_config


@dataclass
class IndexResult:
    archive: str
    state_dir: str
    source: str
    files: list[str]  # the video files given (after expanding folders)
    files_indexed: int  # indexed in this run
    files_skipped: int  # already indexed before
    rows: int  # rows of this source in the archive
    errors: int
    error_messages: list[str] = field(default_factory=list)  # the last few
    exit_code: int = 0  # what `pystream index` exits with (1: errors and no rows)

    def __str__(self) -> str:
        return (f"indexed {self.files_indexed} file(s) ({self.files_skipped} already done), "
                f"{self.rows} rows in {self.archive}; {self.errors} error(s)")


def video_files(paths: str | os.PathLike | Iterable, patterns=VIDEO_PATTERNS) -> list[str]:
    """Files given directly, plus the video files (by `patterns`) under folders, recursively.
    FileNotFoundError for a path that does not exist, ValueError when no video file is found."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"paths must be file or folder paths, got {type(p).__name__}")
        path = Path(p).expanduser()
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and any(fnmatch.fnmatch(f.name.lower(), pat) for pat in patterns):
                    out.append(str(f.resolve()))
        elif path.is_file():
            out.append(str(path.resolve()))
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    if not out:
        raise ValueError("no video files found in " + (", ".join(map(str, paths)) or "no paths")
                         + f" (looked for {', '.join(patterns)})")
    return out


def index(
    paths,
    archive: str | os.PathLike | None = None,
    *,
    model=None,
    source: str = "local",
    fps: float | None = None,
    state_dir: str | os.PathLike | None = None,
    config: str | os.PathLike | Config | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> IndexResult:
    """Index `paths` (files and folders) into `archive` and return when done.

    archive: LanceDB directory or URI (default: the config's `archive`).
    model: "shipped", a Hugging Face id, a model directory or a loaded ClipVideoModel
        (default: the config's `model`, "shipped-tempme" in the default config).
    source: the source name stored with the rows (filter with sources=[...]).
    fps: sample rate (default: the config's sample_fps, 1.0).
    state_dir: checkpoints (default: ARCHIVE.state next to the archive).
    config: a YAML path or a Config for the other settings (merge, writer, device, ...).
    progress: called about 4 times a second with (frames done, frames expected, rows).
    stop: set it (from another thread or a signal handler) to stop early; files cut short
        resume on the next call.
    Raises FileNotFoundError / ValueError for bad paths or settings, ModelLoadError for a model
    that cannot load.
    """
    from .decode import DecodeError, probe
    from .pipeline import Indexer, RestartPolicy, load_video_model
    from .sources import make_source
    from .status import StatusReporter

    files = video_files(paths)
    if not isinstance(source, str) or not re.fullmatch(_NAME_PATTERN, source):
        raise ValueError(f"source name {source!r} is not valid: letters, digits and _.:@- only, "
                         "starting with a letter or digit")
    overrides = {}
    if archive is not None:
        overrides["archive"] = os.fspath(archive)
    if fps is not None:
        overrides["sample_fps"] = fps
    model_obj = None
    if model is not None and not isinstance(model, (str, os.PathLike)):
        if not hasattr(model, "encode_video") and not hasattr(model, "image_size"):
            raise TypeError("model must be 'shipped', a Hugging Face id, a model directory or a "
                            f"ClipVideoModel, got {type(model).__name__}")
        model_obj = model
        overrides["model"] = str(getattr(model, "model_id", "") or "custom")
    elif model is not None:
        overrides["model"] = os.fspath(model)
    if state_dir is not None:
        overrides["state_dir"] = os.fspath(state_dir)
    elif archive is not None:
        overrides["state_dir"] = str(Path(os.fspath(archive)).expanduser()).rstrip("/") + ".state"
    if isinstance(config, Config):
        cfg = Config.model_validate(dict(config.model_dump(), **overrides))
    else:
        cfg = load_config(config, overrides)
    cfg = cfg.model_copy(update={"sources": [], "triggers": []})  # alerts: the daemon's job

    if model_obj is None:
        model_obj = load_video_model(cfg)
    sources = [make_source({"type": "file", "name": source, "path": f, "fps": cfg.sample_fps,
                            "size": model_obj.image_size}) for f in files]
    total = 0
    for f in files:
        try:
            total += int((probe(f).get("duration_s") or 0) * cfg.sample_fps) + 1
        except DecodeError:
            pass
    # A finite run: a source that keeps crashing gives up instead of retrying forever.
    ix = Indexer(cfg, model=model_obj, sources=sources, restart=RestartPolicy(max_failures=2))
    done_before = ix.stats[source].files_done
    reporter = StatusReporter(cfg.state_dir, ix.status).start()  # `pystream status` works too
    ix.start()
    try:
        while not ix._encoder_done.wait(0.25):
            if stop is not None and stop.is_set():
                ix.stop()
            if progress is not None:
                s = ix.status()["sources"][source]
                progress(s["frames"], max(total, 1), s["rows"])
    except BaseException:  # KeyboardInterrupt: stop cleanly (checkpoints), then re-raise
        ix.stop()
        ix.wait()
        reporter.stop()
        raise
    code = ix.wait()
    reporter.stop()
    s = ix.status()["sources"][source]
    if progress is not None:
        progress(max(total, s["frames"]), max(total, 1), s["rows"])
    messages = [e["message"] for e in s["events"] if e["kind"] == "error" and e.get("message")]
    return IndexResult(
        archive=cfg.archive, state_dir=cfg.state_dir, source=source, files=files,
        files_indexed=s["files_done"] - done_before, files_skipped=s["files_skipped"],
        rows=s["rows"], errors=s["errors"], error_messages=messages,
        exit_code=code if not s["errors"] or s["rows"] else 1)


__all__ = ["index", "IndexResult", "video_files"]
