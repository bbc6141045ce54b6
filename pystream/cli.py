"""Command line: `pystream watch | index | search | status | serve` (also `python -m pystream`).

    pystream watch  -c config.yaml                 run the configured sources (foreground)
    pystream index  PATH... [--archive DIR]        index files / folders once, resumable
    pystream search "white van" [-k 10] [--json]   query the archive
    pystream status [--state-dir DIR] [--json]     per source: state, lag, fps, rows, errors
    pystream serve  -c config.yaml                 HTTP API only (search, status, metrics)

The daemon entry point `pystreamd` (daemon/pystreamd.py) is `run_service` below with the system
config path and systemd notification. Expected failures (bad config, missing archive, a model
that cannot load) print one clear line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .config import Config, ConfigError, load_config

log = logging.getLogger("pystream")

VIDEO_PATTERNS = ("*.mp4", "*.mkv", "*.ts", "*.mov", "*.avi", "*.webm", "*.m4v")


class CliError(Exception):
    """An expected failure: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- logging

class JsonFormatter(logging.Formatter):
    """One JSON object per line: what journald / Loki / jq want."""

    _SKIP = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": round(record.created, 3), "level": record.levelname.lower(),
             "logger": record.name, "msg": record.getMessage(), "thread": record.threadName}
        d.update({k: v for k, v in vars(record).items() if k not in self._SKIP})
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, default=str)


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "urllib3", "watchdog", "transformers", "lance"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


# ----------------------------------------------------------------------------- helpers

def _config(path, **overrides) -> Config:
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return load_config(path, overrides)


def _load_model(cfg: Config):
    from .model.loader import ModelLoadError
    from .pipeline import load_video_model

    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars on every run
        return load_video_model(cfg)
    except ModelLoadError as e:
        raise CliError(str(e)) from None


def _open_archive(cfg: Config, text_encoder=None):
    import pystream

    return pystream.open(cfg.archive, table=cfg.table, text_encoder=text_encoder)


class LazyTextEncoder:
    """Loads the model on the first text query (serve starts fast; search loads once)."""

    def __init__(self, cfg: Config, model=None):
        self.cfg, self._model, self._lock = cfg, model, threading.Lock()

    def __call__(self, texts):
        with self._lock:
            if self._model is None:
                self._model = _load_model(self.cfg)
        import torch

        with torch.no_grad():  # grad mode is per thread: HTTP threads have it on
            return self._model.encode_text(list(texts)).detach().cpu().numpy()


def _expand(paths) -> list[str]:
    import fnmatch

    out = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and any(fnmatch.fnmatch(f.name.lower(), pat) for pat in VIDEO_PATTERNS):
                    out.append(str(f.resolve()))
        elif path.is_file():
            out.append(str(path.resolve()))
        else:
            raise CliError(f"{p}: no such file or directory")
    if not out:
        raise CliError("no video files found in " + ", ".join(map(str, paths)))
    return out


# ----------------------------------------------------------------------------- watch / daemon

def run_service(config_path, overrides: dict | None = None, notify=None) -> int:
    """Run the configured sources until SIGTERM/SIGINT (exit 0 after draining). SIGHUP reloads
    the configuration: the indexer drains and restarts with the new one (a bad new config is
    logged and the old one kept). `notify(str)` is systemd's sd_notify, if any."""
    from .http import create_app, serve_in_thread
    from .metrics import Metrics
    from .pipeline import Indexer
    from .status import StatusReporter

    cfg = _config(config_path, **(overrides or {}))
    setup_logging(cfg.log.level, cfg.log.format)
    if not cfg.enabled_sources():
        raise CliError(f"no sources configured in {config_path or 'the default config'}")
    notify = notify or (lambda msg: None)
    stop, hup = threading.Event(), threading.Event()
    current: dict = {}

    def on_signal(signum, frame):
        if signum == getattr(signal, "SIGHUP", None):
            hup.set()
            log.info("SIGHUP: reloading configuration")
        else:
            stop.set()
            log.info("%s: draining and stopping", signal.Signals(signum).name)
        notify("RELOADING=1" if signum == getattr(signal, "SIGHUP", None) else "STOPPING=1")
        if "ix" in current:
            current["ix"].stop()

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, on_signal)

    get_status = lambda: current["ix"].status() if "ix" in current else None  # noqa: E731
    metrics = Metrics(get_status)
    if cfg.metrics.port:
        metrics.serve(cfg.metrics.port)
    server = None
    code = 0
    while True:
        try:
            ix = Indexer(cfg)
        except Exception as e:
            from .model.loader import ModelLoadError
            if isinstance(e, (ModelLoadError, ValueError, OSError)):
                raise CliError(f"cannot start the indexer: {e}") from None
            raise
        current["ix"] = ix
        ix.batch_latency_observer = metrics.observe_batch
        if stop.is_set():
            ix.stop()
        if server is None and cfg.http.enabled:
            archive = _open_archive(cfg, LazyTextEncoder(cfg, ix.model))
            server = serve_in_thread(create_app(archive, get_status, metrics),
                                     cfg.http.host, cfg.http.port)
            log.info("HTTP API on http://%s:%d", cfg.http.host, cfg.http.port)
        reporter = StatusReporter(cfg.state_dir, ix.status).start()
        log.info("indexing %d source(s) into %s with model %s", len(ix.sources), cfg.archive,
                 ix.model_id)
        ix.start()
        notify("READY=1")
        code = ix.wait()
        reporter.stop()
        log.info("indexer stopped (exit %d)", code)
        if hup.is_set() and not stop.is_set():
            hup.clear()
            try:
                cfg = _config(config_path, **(overrides or {}))
                setup_logging(cfg.log.level, cfg.log.format)
            except ConfigError as e:
                log.error("new configuration rejected, keeping the old one: %s", e)
            continue
        break
    if server is not None:
        server.should_exit = True
    return code


def cmd_watch(args) -> int:
    return run_service(args.config, dict(archive=args.archive, state_dir=args.state_dir))


# ----------------------------------------------------------------------------- index

def cmd_index(args) -> int:
    from .decode import DecodeError, probe
    from .pipeline import Indexer
    from .sources import make_source
    from .status import StatusReporter

    files = _expand(args.paths)
    cfg = _config(args.config, archive=args.archive, model=args.model,
                  state_dir=args.state_dir or _index_state_dir(args), sample_fps=args.fps)
    setup_logging("WARNING" if not args.verbose else "INFO", "text")
    cfg = cfg.model_copy(update={"sources": []})
    model = _load_model(cfg)
    sources = [make_source({"type": "file", "name": args.source, "path": f,
                            "fps": cfg.sample_fps, "size": model.image_size}) for f in files]
    total = 0
    for f in files:
        try:
            d = probe(f).get("duration_s") or 0
            total += int(d * cfg.sample_fps) + 1
        except DecodeError:
            pass
    ix = Indexer(cfg, model=model, sources=sources)
    done_before = ix.stats[args.source].files_done
    reporter = StatusReporter(cfg.state_dir, ix.status).start()  # `pystream status` works too
    signal.signal(signal.SIGINT, lambda *a: ix.stop())
    signal.signal(signal.SIGTERM, lambda *a: ix.stop())
    ix.start()
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]indexing"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TextColumn("{task.fields[rows]} rows"), TimeRemainingColumn(),
                  transient=not sys.stderr.isatty(), disable=args.quiet) as bar:
        task = bar.add_task("index", total=max(total, 1), rows=0)
        while not ix._encoder_done.wait(0.25):
            s = ix.status()["sources"][args.source]
            bar.update(task, completed=s["frames"], rows=s["rows"])
        code = ix.wait()
        reporter.stop()
        s = ix.status()["sources"][args.source]
        bar.update(task, completed=max(total, s["frames"]), rows=s["rows"])
    print(f"indexed {s['files_done'] - done_before} file(s) ({s['files_skipped']} already done), "
          f"{s['rows']} rows in {cfg.archive}; {s['errors']} error(s)")
    for e in s["events"]:
        if e["kind"] == "error" and e.get("message"):
            print(f"  error: {e['message']}", file=sys.stderr)
    return code if not s["errors"] or s["rows"] else 1


def _index_state_dir(args):
    if args.archive:
        return str(Path(args.archive).expanduser()).rstrip("/") + ".state"
    return None


# ----------------------------------------------------------------------------- search

def cmd_search(args) -> int:
    from .archive import ArchiveNotFoundError, NoEncoderError
    from .status import fmt_time

    cfg = _config(args.config, archive=args.archive, model=args.model)
    setup_logging("WARNING", "text")
    arc = _open_archive(cfg, LazyTextEncoder(cfg))
    try:
        arc.table  # noqa: B018 - fail early and clearly on a missing archive, before loading the model
        hits = arc.search(args.query, k=args.k, sources=args.source or None,
                          since=_time_arg(args.since), until=_time_arg(args.until),
                          level=None if args.level < 0 else args.level)
    except ArchiveNotFoundError as e:
        raise CliError(str(e)) from None
    except (NoEncoderError, RuntimeError, ValueError) as e:
        raise CliError(f"search failed: {e}") from None
    if args.json:
        print(json.dumps([dict(id=h.id, source=h.source, uri=h.uri, level=h.level, start=h.start,
                               end=h.end, score=h.score, model=h.model) for h in hits], indent=1))
        return 0
    if not hits:
        print("no results")
    for i, h in enumerate(hits, 1):
        print(f"{i:3d}  {h.score:6.3f}  {h.source:<16} {fmt_time(h.start)} - {fmt_time(h.end)}"
              f"  {h.uri}")
    return 0


def _time_arg(v):
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        from datetime import datetime

        try:
            return datetime.fromisoformat(v).timestamp()
        except ValueError:
            raise CliError(f"bad time {v!r}: give epoch seconds or an ISO time") from None


# ----------------------------------------------------------------------------- status

def cmd_status(args) -> int:
    from .status import fmt_time, read_status, source_rows

    state_dir = args.state_dir or _config(args.config).state_dir
    s = read_status(state_dir)
    if s is None:
        raise CliError(f"no status in {state_dir}: the daemon has not run with this state_dir")
    if args.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    running = ("stale (daemon not running?)" if s.get("stale")
               else "running" if s.get("running") else "stopped")
    print(f"pystream pid {s.get('pid')} {running}, updated {fmt_time(s.get('updated'))}, "
          f"archive {s.get('archive')}, model {s.get('model')}")
    w = s.get("writer") or {}
    print(f"writer: {w.get('rows_written', 0)} rows in {w.get('commits', 0)} commits, "
          f"{w.get('pending', 0)} pending")
    e = s.get("encoder") or {}
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in (e.get("stage_s") or {}).items())
    print(f"encoder: {e.get('precision', '-')}, reuse threshold {e.get('reuse_threshold', 0)}, "
          f"{e.get('queued_chunks', 0)} chunks queued; time per stage: {stages or '-'}")
    rows = source_rows(s)
    if not rows:
        print("no sources")
        return 0
    cols = ["source", "state", "lag", "fps", "reused", "frames", "rows", "files", "errors",
            "last_error"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0


# ----------------------------------------------------------------------------- serve

def cmd_serve(args) -> int:
    import uvicorn

    from .http import create_app
    from .status import read_status

    cfg = _config(args.config, archive=args.archive, state_dir=args.state_dir)
    setup_logging(cfg.log.level, cfg.log.format)
    app = create_app(_open_archive(cfg, LazyTextEncoder(cfg)), lambda: read_status(cfg.state_dir))
    uvicorn.run(app, host=args.host or cfg.http.host, port=args.port or cfg.http.port,
                log_level="warning")
    return 0


# ----------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pystream", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, archive=True):
        sp.add_argument("-c", "--config", help="YAML config (default: the embedded default)")
        if archive:
            sp.add_argument("--archive", help="archive directory / LanceDB URI")

    w = sub.add_parser("watch", help="run the configured sources in the foreground")
    common(w)
    w.add_argument("--state-dir")
    w.set_defaults(fn=cmd_watch)

    i = sub.add_parser("index", help="index video files or folders once (resumable)")
    common(i)
    i.add_argument("paths", nargs="+")
    i.add_argument("--model", help="'shipped', a Hugging Face id or a model directory")
    i.add_argument("--source", default="local", help="source name stored with the rows")
    i.add_argument("--fps", type=float, help="sample rate (default: config sample_fps)")
    i.add_argument("--state-dir", help="checkpoints (default: ARCHIVE.state)")
    i.add_argument("-q", "--quiet", action="store_true")
    i.add_argument("-v", "--verbose", action="store_true")
    i.set_defaults(fn=cmd_index)

    s = sub.add_parser("search", help="text search over the archive")
    common(s)
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--model")
    s.add_argument("--source", action="append", help="only this source (repeatable)")
    s.add_argument("--since", help="epoch seconds or ISO time")
    s.add_argument("--until", help="epoch seconds or ISO time")
    s.add_argument("--level", type=int, default=0, help="0 windows, 1 coarse, -1 all")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_search)

    st = sub.add_parser("status", help="per-source state of the running daemon")
    common(st, archive=False)
    st.add_argument("--state-dir")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    sv = sub.add_parser("serve", help="HTTP API only (search, status, metrics)")
    common(sv)
    sv.add_argument("--state-dir")
    sv.add_argument("--host")
    sv.add_argument("--port", type=int)
    sv.set_defaults(fn=cmd_serve)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (CliError, ConfigError) as e:
        print(f"pystream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def daemon_main(argv=None) -> int:
    """`pystreamd [-c /etc/pystream/config.yaml]`: the system service (see daemon/)."""
    from .config import SYSTEM_CONFIG

    p = argparse.ArgumentParser(prog="pystreamd", description="pystream indexing daemon")
    p.add_argument("-c", "--config", default=os.environ.get("PYSTREAM_CONFIG", str(SYSTEM_CONFIG)))
    args = p.parse_args(argv)
    try:
        return run_service(args.config, notify=sd_notify)
    except (CliError, ConfigError) as e:
        # One JSON line, so journald / log shippers see it like every other record.
        print(json.dumps({"ts": round(time.time(), 3), "level": "error", "logger": "pystreamd",
                          "msg": str(e)}), file=sys.stderr)
        return 2


def sd_notify(message: str) -> None:
    """systemd's notification protocol (Type=notify) without a dependency: one datagram."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    import socket

    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
