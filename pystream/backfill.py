"""Backfill: index a large set of recordings on a Ray cluster (what `pystream backfill` runs).

    from pystream.backfill import backfill

    result = backfill(["videos"], archive="pystream-data/backfill")  # a local Ray instance
    print(result)       # files indexed / skipped, rows, errors, seconds
    # on a cluster: backfill(["/srv/rec/**/*.mp4"], archive="s3://bucket/archive",
    #                        ray_address="10.0.0.1:6379", storage_options={...})

The pipeline is a ``ray.data`` dataset, streamed:

    file list (driver: expand folders and globs, drop files already indexed)
      -> decode      CPU tasks, one file each: pystream.sources.FileSource, the same sampler
                     and resize `pystream index` uses, every sampled frame of the file
      -> encode      an actor pool (``num_gpus`` per actor when the cluster has GPUs): the
                     StreamingEncoder and RowBuilder of pystream.engine, fed chunk by chunk
                     in order, so rows, ids and vectors are those of `pystream index`
      -> write       CPU tasks: ``lance.fragment.write_fragments`` (Lance's distributed write:
                     data files written where the rows are, no commit)
      -> commit      the driver: one ``LanceOperation.Append`` of the fragments of every
                     ``files_per_commit`` finished files, then the files' entries in the
                     ``{table}_backfill`` manifest table (same archive).

Exactly once. Each commit is atomic (all of a batch of files' rows or none), row ids are
deterministic (``store.clip_id``: source, level, start, file), and the manifest is written only
after its rows are committed. A killed job re-run skips the files in the manifest, re-encodes
the rest, and drops rows whose id is already in the table (a batch committed just before the
kill, whose manifest entries were not yet written), so the result equals an uninterrupted run.
A file is "already indexed" when the manifest has it with the same size, mtime and settings
(model, sample rate, merge schedule, window, reuse, precision): changing any of these indexes it
again (its new rows have the same ids only when the settings give the same windows).

Ray is optional (``pip install pystream[ray]``): imported here, lazily, never by the daemon.
Worker nodes need pystream installed (or on PYTHONPATH) like any library their tasks import.
Decoded frames travel as one object per file (the model's input size, about 150 KB per sampled
frame at 224 px: 1 h at 1 fps is about 540 MB), so very long recordings want object store room,
or splitting into hour files first.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .config import _NAME_PATTERN, Config, load_config

log = logging.getLogger("pystream.backfill")

MANIFEST_SUFFIX = "_backfill"


class BackfillError(RuntimeError):
    """The backfill could not run (Ray unreachable, archive unusable, ...)."""


@dataclass
class BackfillResult:
    archive: str
    source: str
    files: list[str]
    files_indexed: int  # indexed (and recorded in the manifest) by this run
    files_skipped: int  # in the manifest before this run
    rows: int  # rows this run added to the archive
    rows_skipped: int  # rows already in the archive (a re-run after a kill)
    errors: int
    commits: int
    seconds: float
    workers: int
    error_messages: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors and not (self.files_indexed or self.files_skipped) else 0

    def __str__(self) -> str:
        return (f"backfilled {self.files_indexed} file(s) ({self.files_skipped} already done), "
                f"{self.rows} rows in {self.commits} commit(s) to {self.archive} in "
                f"{self.seconds:.1f} s on {self.workers} encoder(s); {self.errors} error(s)")


# ---------------------------------------------------------------------------- inputs


def expand_inputs(inputs: Iterable) -> list[str]:
    """Files, folders (recursive, video patterns) and glob patterns -> absolute video files.
    FileNotFoundError names an input that matches nothing."""
    from .indexing import video_files

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[str] = []
    for item in inputs:
        s = os.fspath(item)
        if any(c in s for c in "*?[") and not os.path.exists(s):
            matches = sorted(_glob.glob(os.path.expanduser(s), recursive=True))
            if not matches:
                raise FileNotFoundError(f"{s}: no file matches this pattern")
            for m in matches:
                out.extend(video_files(m) if os.path.isdir(m) else [str(Path(m).resolve())])
        else:
            out.extend(video_files(s))
    seen: set[str] = set()
    return [f for f in out if not (f in seen or seen.add(f))]


def settings_key(cfg: Config, model_id: str, image_size: int) -> str:
    """What the rows of a file depend on besides the file: a change indexes it again."""
    d = {"model": model_id, "fps": cfg.sample_fps, "merge": cfg.merge.schedule_dict(),
         "hop_chunks": cfg.hop_chunks, "coarse_windows": cfg.coarse_windows,
         "precision": cfg.precision, "reuse": [cfg.reuse.threshold, cfg.reuse.refresh_chunks],
         "size": image_size}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def file_entry_key(source: str, path: str, size: int, mtime: float, settings: str) -> str:
    return hashlib.sha1(f"{source}|{path}|{size}|{mtime!r}|{settings}".encode()).hexdigest()


def manifest_schema():
    import pyarrow as pa

    return pa.schema([
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("path", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.float64()),
        pa.field("settings", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("time", pa.float64()),
    ])


# ---------------------------------------------------------------------------- Ray


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the address, when nothing listens there (ray.init would retry for a
    long time). "auto" and ray:// client addresses are checked by Ray itself / by host:port."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise BackfillError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} "
                            "(start one with `ray start --head`, or omit --ray for a local "
                            "Ray instance)") from None


def init_ray(address: str | None, num_cpus: int | None = None):
    """Connect to ``address`` (or reuse the running Ray of this process, or start a local one)."""
    try:
        import ray
    except ImportError:
        raise BackfillError("backfill needs Ray: pip install 'pystream[ray]'") from None
    if ray.is_initialized():
        return ray, False
    env = {"PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[1]),
                                                     os.environ.get("PYTHONPATH", "")] if p)}
    kwargs = dict(runtime_env={"env_vars": env}, log_to_driver=False,
                  configure_logging=False)
    if address:
        check_ray_address(address)
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:
            raise BackfillError(f"cannot connect to the Ray cluster at {address}: {e}") from e
    else:
        # address="local": a new instance even when `ray start` left a cluster address in
        # /tmp/ray (ray.init() would connect to that one, or fail on num_cpus).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return ray, True


# ---------------------------------------------------------------------------- stages

# Each stage gets plain dicts (the Config as a dict) and builds what it needs where it runs.


def decode_file(row: dict, *, source: str, fps: float, size) -> dict:
    """CPU task: every sampled frame of one file, as FileSource gives it to `pystream index`."""
    from .decode import DecodeError
    from .sources import FileSource

    path = row["path"]
    out = {"path": path, "size": -1, "mtime": 0.0, "error": "",
           "rgb": np.zeros((0, 1, 1, 3), np.uint8), "t": np.zeros(0), "index": np.zeros(0, np.int64)}
    try:
        st = os.stat(path)
        out["size"], out["mtime"] = int(st.st_size), float(st.st_mtime)
    except OSError as e:
        out["error"] = f"{path}: cannot read ({e.strerror or e})"
        return out
    src = FileSource(source, path, fps=fps, size=size)
    frames = []
    for item in src.segments(threading.Event()):
        if not hasattr(item, "frames"):  # a SourceEvent: the file cannot be used
            out["error"] = item.message if path in item.message else f"{path}: {item.message}"
            return out
        try:
            for f in item.frames:
                frames.append(f)
        except (DecodeError, Exception) as e:  # what decoded before is indexed, as by index
            out["error"] = f"{path}: {e}"
        out["uri"] = item.uri
    if frames:
        out["rgb"] = np.stack([f.rgb for f in frames])
        out["t"] = np.array([f.t for f in frames], np.float64)
        out["index"] = np.array([f.index for f in frames], np.int64)
    elif not out["error"]:
        out["error"] = f"{path}: no frames decoded"
    return out


class _Frame:  # what messages.chunk_item reads of pystream.decode.Frame
    __slots__ = ("rgb", "t", "index")

    def __init__(self, rgb, t, index):
        self.rgb, self.t, self.index = rgb, float(t), int(index)


class FileEncoder:
    """Actor: the encoder of `pystream index` (StreamingEncoder + RowBuilder), one file at a
    time, chunks in order, up to ``batching.max_batch_chunks`` per forward. Returns one row per
    file: its clip rows as Arrow IPC bytes (ids already in the archive dropped) and its error."""

    def __init__(self, cfg_dict: dict, source: str, skip_ids: frozenset | None = None,
                 cpus: float = 1):
        from .pipeline import load_video_model
        from .model.streaming import StreamingEncoder
        from .engine.rows import RowBuilder
        from .store import portable_model_ref

        cfg = Config.model_validate(cfg_dict)
        import torch

        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            cfg = cfg.model_copy(update={"device": "cpu"})
        if cfg.device == "cpu" and not cfg.threads:
            # As many torch threads as the CPUs Ray gave this actor (not the whole node's).
            cfg = cfg.model_copy(update={"threads": max(1, int(cpus))})
        self.cfg = cfg
        self.source = source
        self.model = load_video_model(cfg)
        self.encoder = StreamingEncoder(self.model, schedule=cfg.merge.schedule_dict(),
                                        hop_chunks=cfg.hop_chunks,
                                        coarse_windows=cfg.coarse_windows,
                                        precision=cfg.precision, reuse=cfg.reuse.settings())
        self.k = self.encoder.chunk_frames
        self.model_id = portable_model_ref(getattr(self.model, "model_id", None) or cfg.model)
        self.rows_builder = RowBuilder(self.model_id, self.encoder.frames_per_window, self.k)
        self.dt = 1.0 / cfg.sample_fps
        self.max_chunks = cfg.batching.max_batch_chunks
        self.skip_ids = skip_ids or frozenset()

    def rows_of(self, path: str, rgb, t, index) -> list:
        from .engine.messages import StreamRef, chunk_item

        ref = StreamRef(f"file:{self.source}|{path}", self.source, path, False, None)
        frames = [_Frame(rgb[i], t[i], index[i]) for i in range(len(t))]
        n_full = len(frames) // self.k * self.k
        items = [chunk_item(ref, frames[i:i + self.k], self.dt) for i in range(0, n_full, self.k)]
        tail = chunk_item(ref, frames[n_full:], self.dt) if n_full < len(frames) else None
        rb, enc = self.rows_builder, self.encoder
        rows = []
        try:
            for i in range(0, len(items), self.max_chunks):
                group = items[i:i + self.max_chunks]
                for it in group:
                    rb.remember(it)
                out = enc.encode([it.chunk for it in group])
                rows += rb.rows([(ref, e) for e in out])
            if tail is not None:
                rb.remember(tail)
            rows += rb.rows([(ref, e) for e in enc.finish(ref.key, tail.chunk if tail else None)])
        finally:
            enc.drop(ref.key)
            rb.forget(ref.key)
        return rows

    def __call__(self, batch: dict) -> dict:
        from .store import rows_table

        out = {"path": [], "size": [], "mtime": [], "rows": [], "skipped": [], "error": [],
               "data": []}
        for i, path in enumerate(batch["path"]):
            error = str(batch["error"][i] or "")
            data, n, skipped = b"", 0, 0
            t = batch["t"][i]
            if len(t):
                try:
                    rows = self.rows_of(path, batch["rgb"][i], t, batch["index"][i])
                    fresh = [r for r in rows if r.row_id() not in self.skip_ids]
                    n, skipped = len(fresh), len(rows) - len(fresh)
                    if fresh:
                        data = _ipc_bytes(rows_table(fresh, self.model.dim, self.model_id))
                except Exception as e:  # our fault, not the file's: not marked done
                    log.exception("encoding %s failed", path)
                    error, n, skipped, data = f"{path}: encoding failed: {e!r}", 0, 0, b""
                    out.setdefault("encode_failed", []).append(path)
            out["path"].append(path)
            out["size"].append(int(batch["size"][i]))
            out["mtime"].append(float(batch["mtime"][i]))
            out["rows"].append(n)
            out["skipped"].append(skipped)
            out["error"].append(error)
            out["data"].append(data)
        failed = set(out.pop("encode_failed", []))
        out["retry"] = [p in failed for p in out["path"]]
        return {k: np.array(v, dtype=object) if k in ("data", "path", "error") else np.array(v)
                for k, v in out.items()}


def _ipc_bytes(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def write_file_fragments(row: dict, *, uri: str, storage_options: dict | None,
                         data_storage_version: str | None) -> dict:
    """CPU task: the file's rows as Lance data files (no commit); their metadata as JSON."""
    import pyarrow as pa
    from lance.fragment import write_fragments

    data = row.pop("data")
    frags = []
    if data:
        table = pa.ipc.open_stream(data).read_all()
        frags = [f.to_json() for f in write_fragments(
            table, uri, schema=table.schema, storage_options=storage_options,
            data_storage_version=data_storage_version)]
    row["fragments"] = json.dumps(frags)
    return row


# ---------------------------------------------------------------------------- driver


def table_uri(archive: str, table: str) -> str:
    return archive.rstrip("/") + "/" + table + ".lance"


def backfill(
    inputs,
    archive: str | os.PathLike | None = None,
    *,
    ray_address: str | None = None,
    source: str = "local",
    config: str | os.PathLike | Config | None = None,
    model: str | None = None,
    fps: float | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1,
    files_per_commit: int = 16,
    storage_options: dict | None = None,
    progress: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
) -> BackfillResult:
    """Index ``inputs`` (files, folders, glob patterns) into ``archive`` on Ray; see the module
    docstring. ``workers``: encoder actors (default: one per GPU, else one per
    ``cpus_per_worker`` + 1 CPUs of the cluster, at least 1; each CPU actor runs torch with
    ``cpus_per_worker`` threads, and the other CPUs decode). ``storage_options``: LanceDB/Lance
    object-store options (S3 endpoint, keys, ...); default: the config's ``storage_options``. ``progress`` gets a dict after every
    commit (files_done, files_total, rows, seconds). ``stop``: set it to stop after the
    current commit (a re-run resumes).
    Raises FileNotFoundError / ValueError for bad inputs, BackfillError when Ray or the archive
    cannot be used, ModelLoadError for a model that cannot load.
    """
    import lancedb

    t_start = time.monotonic()
    if not isinstance(source, str) or not __import__("re").fullmatch(_NAME_PATTERN, source):
        raise ValueError(f"source name {source!r} is not valid: letters, digits and _.:@- only, "
                         "starting with a letter or digit")
    if files_per_commit < 1:
        raise ValueError("files_per_commit must be >= 1")
    files = expand_inputs(inputs)
    if ray_address:
        check_ray_address(ray_address)  # before loading anything: fail fast, naming it
    overrides = {}
    if archive is not None:
        overrides["archive"] = os.fspath(archive)
    if fps is not None:
        overrides["sample_fps"] = fps
    if model is not None:
        overrides["model"] = os.fspath(model)
    if isinstance(config, Config):
        cfg = Config.model_validate(dict(config.model_dump(), **overrides))
    else:
        cfg = load_config(config, overrides)
    cfg = cfg.model_copy(update={"sources": [], "triggers": []})
    uri = check_archive_uri(cfg.archive)
    if storage_options is None:
        storage_options = dict(getattr(cfg, "storage_options", None) or {}) or None

    # The model once on the driver: its dim, id and input size (and a clear error if it fails).
    from .pipeline import load_video_model
    from .store import open_or_create_table, portable_model_ref

    probe_cfg = cfg.model_copy(update={"device": "cpu"})
    m = load_video_model(probe_cfg)
    model_id = portable_model_ref(getattr(m, "model_id", None) or cfg.model)
    dim, size, fingerprint = m.dim, m.image_size, getattr(m, "fingerprint", None)
    del m
    settings = settings_key(cfg, model_id, size)

    try:
        db = lancedb.connect(uri, storage_options=storage_options)
        table = open_or_create_table(db, cfg.table, dim, model_id, fingerprint)
        from .store import list_table_names

        mname = cfg.table + MANIFEST_SUFFIX
        manifest = (db.open_table(mname) if mname in list_table_names(db) else
                    db.create_table(mname, schema=manifest_schema(), exist_ok=True))
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:
        raise BackfillError(f"cannot open the archive {uri}: {e}") from e

    # Which files are done (same file, same settings), which rows exist already.
    done_keys = set()
    n = manifest.count_rows()
    if n:
        done_keys = set(manifest.search().where(f"settings = '{settings}' AND error = ''")
                        .select(["key"]).limit(n).to_arrow().column("key").to_pylist())
    todo, skipped = [], 0
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            todo.append(f)  # the decode task reports it
            continue
        if file_entry_key(source, f, st.st_size, st.st_mtime, settings) in done_keys:
            skipped += 1
        else:
            todo.append(f)
    skip_ids: frozenset = frozenset()
    if todo and table.count_rows():
        from .archive import sql_string

        ids = []
        for i in range(0, len(todo), 200):  # rows of a batch committed before a kill
            where = f"source = {sql_string(source)} AND uri IN ({', '.join(map(sql_string, todo[i:i + 200]))})"
            ids += table.search().where(where).select(["id"]).limit(10**9).to_arrow() \
                .column("id").to_pylist()
        skip_ids = frozenset(ids)

    result = BackfillResult(archive=uri, source=source, files=files, files_indexed=0,
                            files_skipped=skipped, rows=0, rows_skipped=0, errors=0, commits=0,
                            seconds=0.0, workers=0)
    if not todo:
        result.seconds = time.monotonic() - t_start
        return result

    ray, started = init_ray(ray_address, num_cpus=int(math.ceil(workers * cpus_per_worker)) + 1
                            if workers else None)
    try:
        _run(ray, result, todo, cfg, uri, table, manifest, settings, skip_ids, source, size,
             workers, cpus_per_worker, files_per_commit, storage_options, progress, stop, t_start)
    finally:
        if started:
            ray.shutdown()
    result.seconds = time.monotonic() - t_start
    return result


def check_archive_uri(uri: str) -> str:
    """A local path (made absolute: workers may run elsewhere in the tree) or a URI Lance
    writes to; ValueError names anything else."""
    uri = os.fspath(uri)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        if scheme not in ("s3", "s3+ddb", "gs", "az", "abfss", "file", "memory"):
            raise ValueError(f"archive {uri!r}: backfill writes to a directory or an s3://, "
                             f"s3+ddb://, gs://, az:// URI, not {scheme}://")
        if not uri.split("://", 1)[1].strip("/"):
            raise ValueError(f"archive {uri!r} names no bucket/path")
        return uri.rstrip("/")
    return str(Path(uri).expanduser().resolve())


def _run(ray, result, todo, cfg, uri, table, manifest, settings, skip_ids, source, size,
         workers, cpus_per_worker, files_per_commit, storage_options, progress, stop, t_start):
    import lance
    import pyarrow as pa

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if workers is None:
        workers = gpus or max(1, int(cpus // (cpus_per_worker + 1)))
    workers = max(1, min(int(workers), len(todo)))
    result.workers = workers
    cfg_dict = cfg.model_dump()
    if gpus and cfg.device == "cpu":
        cfg_dict["device"] = "cuda"
    tbl_uri = table_uri(uri, cfg.table)
    try:
        version = lance.dataset(tbl_uri, storage_options=storage_options).data_storage_version
    except Exception:
        version = None

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=len(todo))
    ds = ds.map(decode_file, fn_kwargs=dict(source=source, fps=cfg.sample_fps, size=size),
                # SPREAD: decoding fans out over the nodes, and its remote args differ from the
                # encoder's, so Ray Data keeps it a task stage instead of fusing it into the
                # actors.
                num_cpus=1, scheduling_strategy="SPREAD")
    encode_args = dict(fn_constructor_args=(cfg_dict, source, skip_ids, cpus_per_worker),
                       batch_size=1,
                       batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                       scheduling_strategy="DEFAULT")
    if gpus:
        encode_args["num_gpus"] = 1
    else:
        encode_args["num_cpus"] = cpus_per_worker
    ds = ds.map_batches(FileEncoder, **encode_args)
    ds = ds.map(write_file_fragments, num_cpus=0.25,
                fn_kwargs=dict(uri=tbl_uri, storage_options=storage_options,
                               data_storage_version=version))

    pending: list[dict] = []

    def commit():
        if not pending:
            return
        frags = [lance.fragment.FragmentMetadata.from_json(json.dumps(f))
                 for r in pending for f in json.loads(r["fragments"])]
        if frags:
            ds_now = lance.dataset(tbl_uri, storage_options=storage_options)
            lance.LanceDataset.commit(tbl_uri, lance.LanceOperation.Append(frags),
                                      read_version=ds_now.version,
                                      storage_options=storage_options)
        now = time.time()
        entries = [r for r in pending if not r["retry"]]
        if entries:
            manifest.add(pa.table({
                "key": [file_entry_key(source, r["path"], int(r["size"]), float(r["mtime"]),
                                       settings) for r in entries],
                "source": [source] * len(entries),
                "path": [r["path"] for r in entries],
                "size": pa.array([int(r["size"]) for r in entries], pa.int64()),
                "mtime": pa.array([float(r["mtime"]) for r in entries], pa.float64()),
                "settings": [settings] * len(entries),
                "rows": pa.array([int(r["rows"]) for r in entries], pa.int64()),
                "error": [str(r["error"] or "") for r in entries],
                "time": pa.array([now] * len(entries), pa.float64()),
            }, schema=manifest_schema()))
        for r in pending:
            result.rows += int(r["rows"])
            result.rows_skipped += int(r["skipped"])
            if r["error"]:
                result.errors += 1
                result.error_messages = (result.error_messages + [str(r["error"])])[-10:]
                log.warning("%s", r["error"])
            if not r["retry"] and (int(r["rows"]) or int(r["skipped"])):
                result.files_indexed += 1
        result.commits += bool(frags)
        pending.clear()
        if progress is not None:
            progress({"files_done": result.files_indexed + result.errors,
                      "files_total": len(todo), "rows": result.rows,
                      "seconds": time.monotonic() - t_start})

    for row in ds.iter_rows():
        pending.append(row)
        if len(pending) >= files_per_commit:
            commit()
            if stop is not None and stop.is_set():
                break
    commit()


__all__ = ["backfill", "BackfillResult", "BackfillError", "expand_inputs", "settings_key"]
