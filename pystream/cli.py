"""Command line: `pystream watch | index | search | thumbnail | status | triggers | serve |
prune` (also `python -m pystream`).

    pystream index videos --archive pystream-data/archive      # files / folders, once, resumable
    pystream search "a red circle" --archive pystream-data/archive -k 3 --json
    pystream watch -c config.yaml                 # run the configured sources (foreground)
    pystream status --state-dir pystream-data/state --json   # per source: state, lag, rows, errors
    pystream serve -c config.yaml                 # HTTP only: the web page and the API
    pystream prune -c config-longrun.yaml --dry-run   # rows past the retention settings

Search loads the model recorded with the archive (the one that indexed it); --model overrides.
The daemon entry point `pystreamd` (daemon/pystreamd.py) is `run_service` below with the system
config path and systemd notification.

Exit status: 0 done; 2 a problem a retry cannot fix (bad configuration or arguments, missing
archive, a model that cannot load), printed as one clear line without a traceback; 1 anything
else, including transient I/O errors (a disk, a network share, S3), so that systemd restarts
the daemon (daemon/pystream.service: Restart=on-failure, RestartPreventExitStatus=2).
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

EXIT_CONFIG = 2  # a restart cannot fix it (systemd: RestartPreventExitStatus=2)
EXIT_TRANSIENT = 1  # a restart may fix it (I/O, network): systemd restarts


class CliError(Exception):
    """An expected failure: printed as one line, without a traceback. `code` is the exit
    status: 2 for what a retry cannot fix, 1 for a transient failure."""

    def __init__(self, message: str, code: int = EXIT_CONFIG):
        super().__init__(message)
        self.code = code


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
        raise CliError(str(e), EXIT_TRANSIENT if e.transient else EXIT_CONFIG) from None


def _open_archive(cfg: Config, model=None):
    """The archive for search / serve. model=None: the model recorded with the archive."""
    import pystream

    return pystream.open(cfg.archive, table=cfg.table, model=model, device=cfg.device,
                         storage_options=cfg.storage_options or None)


def startup_error(e: BaseException) -> CliError | None:
    """Classify a failure to start the indexer: CliError(code 2) for what a restart cannot fix
    (configuration, a model that cannot load, an archive made by another model), CliError(code 1)
    for transient I/O (disk, network share, S3), None for a bug (shown with its traceback)."""
    from .model.loader import ModelLoadError

    if isinstance(e, ModelLoadError):
        return CliError(f"cannot start the indexer: {e}",
                        EXIT_TRANSIENT if e.transient else EXIT_CONFIG)
    if isinstance(e, OSError):  # before ValueError: some I/O errors are both
        return CliError(f"cannot start the indexer (will be retried): {type(e).__name__}: {e}",
                        EXIT_TRANSIENT)
    if isinstance(e, ValueError):
        return CliError(f"cannot start the indexer: {e}", EXIT_CONFIG)
    return None


# ----------------------------------------------------------------------------- watch / daemon

def _http_token(cfg: Config, host: str | None = None) -> str | None:
    """The HTTP token (config, env, file, systemd credential); CliError (exit 2) when there is
    none and the server would listen off loopback, or it cannot be read."""
    from .http.auth import TokenError, check_exposure, resolve_token

    try:
        token = resolve_token(cfg.http)
        check_exposure(host or cfg.http.host, token)
    except TokenError as e:
        raise CliError(str(e)) from None
    return token


def run_service(config_path, overrides: dict | None = None, notify=None) -> int:
    """Run the configured sources until SIGTERM/SIGINT (exit 0 after draining). SIGHUP reloads
    the configuration: the indexer drains and restarts with the new one (a bad new config is
    logged and the old one kept). `notify(str)` is systemd's sd_notify, if any."""
    from .http import create_app, serve_in_thread
    from .metrics import Metrics
    from .pipeline import Indexer
    from .engine import model_settings
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

    token = _http_token(cfg) if cfg.http.enabled else None
    get_status = lambda: current["ix"].status() if "ix" in current else None  # noqa: E731
    metrics = Metrics(get_status)
    if cfg.metrics.port:
        metrics.serve(cfg.metrics.port)
    server = None
    code = 0
    model = None  # kept across a SIGHUP reload whose model settings did not change
    publisher = None  # several nodes on one archive: this node's claim and heartbeats
    if cfg.node.id is not None:
        from .nodes import NodeConflictError, claim

        try:
            publisher = claim(cfg)
        except NodeConflictError as e:
            raise CliError(str(e)) from None
        except (OSError, ValueError) as e:
            raise CliError(f"cannot publish node status next to {cfg.archive}: {e}",
                           EXIT_TRANSIENT) from None
    while True:
        try:
            ix = Indexer(cfg, model=model)
        except Exception as e:
            error = startup_error(e)
            if error is None:
                raise
            raise error from None
        current["ix"] = ix
        ix.batch_latency_observer = metrics.observe_batch
        if stop.is_set():
            ix.stop()
        if server is None and cfg.http.enabled:
            archive = _open_archive(cfg, model=ix.model)  # text queries share the loaded model
            server = serve_in_thread(create_app(archive, get_status, metrics, config=cfg,
                                                token=token, host=cfg.http.host),
                                     cfg.http.host, cfg.http.port)
            log.info("HTTP API and web page on http://%s:%d%s", cfg.http.host, cfg.http.port,
                     " (token required)" if token else "")
        reporter = StatusReporter(cfg.state_dir, ix.status, on_status=publisher).start()
        log.info("indexing %d source(s) into %s with model %s", len(ix.sources), cfg.archive,
                 ix.model_id)
        ix.start()
        notify("READY=1")
        code = ix.wait()
        reporter.stop()
        if publisher is not None and not (hup.is_set() and not stop.is_set()):
            publisher.stopped(ix.status())
        log.info("indexer stopped (exit %d)", code)
        if hup.is_set() and not stop.is_set():
            hup.clear()
            try:
                new = _config(config_path, **(overrides or {}))
                setup_logging(new.log.level, new.log.format)
            except ConfigError as e:
                log.error("new configuration rejected, keeping the old one: %s", e)
                new = cfg
            if model_settings(new) == model_settings(cfg):
                model = ix.model
                log.info("model settings unchanged: keeping the loaded model")
            else:
                model = None
                log.info("model settings changed: loading the model again")
            cfg = new
            continue
        break
    if server is not None:
        server.should_exit = True
    return code


def cmd_watch(args) -> int:
    return run_service(args.config, dict(archive=args.archive, state_dir=args.state_dir))


# ----------------------------------------------------------------------------- index

def _report(result) -> int:
    """Prints an index/backfill result and its per-file errors; returns its exit code."""
    print(result)
    for message in result.error_messages:
        print(f"  error: {message}", file=sys.stderr)
    return result.exit_code


def _batch_job(args, list_files, inputs):
    """Set-up shared by index and backfill: the input files (a bad path is a CliError), logging,
    and an Event that Ctrl-C / SIGTERM set so the job stops cleanly."""
    try:
        files = list_files(inputs)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    setup_logging("WARNING" if not args.verbose else "INFO", "text")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    return files, stop


def cmd_index(args) -> int:
    from .indexing import index, video_files

    files, stop = _batch_job(args, video_files, args.paths)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]indexing"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} frames"),
                  TextColumn("{task.fields[rows]} rows"), TimeRemainingColumn(),
                  transient=not sys.stderr.isatty(), disable=args.quiet) as bar:
        task = bar.add_task("index", total=None, rows=0)

        def progress(done, total, rows):
            bar.update(task, completed=done, total=total, rows=rows)

        try:
            result = index(files, args.archive, model=args.model, source=args.source,
                           fps=args.fps, state_dir=args.state_dir, config=args.config,
                           progress=progress, stop=stop)
        except ConfigError:
            raise
        except Exception as e:
            error = startup_error(e)
            if error is None:
                raise
            raise error from None
    return _report(result)


# ----------------------------------------------------------------------------- backfill

def cmd_backfill(args) -> int:
    from .backfill import BackfillError, backfill, expand_inputs

    files, stop = _batch_job(args, expand_inputs, args.inputs)

    def progress(p):
        if not args.quiet:
            rate = p["files_done"] / max(p["seconds"], 1e-9)
            print(f"backfill: {p['files_done']}/{p['files_total']} files, {p['rows']} rows, "
                  f"{p['seconds']:.0f} s ({rate:.2f} files/s)", file=sys.stderr, flush=True)

    try:
        result = backfill(files, args.archive, ray_address=args.ray, source=args.source,
                          config=args.config, model=args.model, fps=args.fps,
                          workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                          files_per_commit=args.files_per_commit,
                          progress=progress, stop=stop)
    except ConfigError:
        raise
    except BackfillError as e:
        raise CliError(str(e), EXIT_TRANSIENT) from None
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    except Exception as e:
        error = startup_error(e)
        if error is None:
            raise
        raise error from None
    return _report(result)


# ----------------------------------------------------------------------------- search

def cmd_search(args) -> int:
    from .archive import ArchiveNotFoundError, NoEncoderError
    from .model.loader import ModelLoadError
    from .status import fmt_time

    cfg = _config(args.config, archive=args.archive)
    setup_logging("WARNING", "text")
    arc = _open_archive(cfg, model=args.model)
    try:
        if args.model is None and arc.recorded_model is None:
            arc = _open_archive(cfg, model=cfg.model)  # an archive that does not say: the config's
        hits = arc.search(args.query, k=args.k, sources=args.source or None,
                          since=_time_arg(args.since), until=_time_arg(args.until),
                          level=None if args.level < 0 else args.level)
    except ArchiveNotFoundError as e:
        raise CliError(str(e)) from None
    except ModelLoadError as e:
        raise CliError(f"search failed: {e}", EXIT_TRANSIENT if e.transient else EXIT_CONFIG) from None
    except (NoEncoderError, RuntimeError, ValueError, TypeError) as e:
        raise CliError(f"search failed: {e}") from None
    if args.json:
        print(json.dumps([h.to_dict(thumbnail=False) for h in hits], indent=1))
        return 0
    if not hits:
        print("no results")
    for i, h in enumerate(hits, 1):
        print(f"{i:3d}  {h.score:6.3f}  {h.source:<16} {fmt_time(h.start)} - {fmt_time(h.end)}"
              f"  {h.uri}  {h.id}")
    return 0


def cmd_thumbnail(args) -> int:
    from .archive import ArchiveNotFoundError, ClipNotFoundError

    cfg = _config(args.config, archive=args.archive)
    try:
        jpeg = _open_archive(cfg).thumbnail(args.id)
    except (ArchiveNotFoundError, ClipNotFoundError) as e:
        raise CliError(str(e)) from None
    if not jpeg:
        raise CliError(f"clip {args.id!r} has no thumbnail")
    out = args.output or (args.id.replace("|", "_").replace("/", "_") + ".jpg")
    if out == "-":
        sys.stdout.buffer.write(jpeg)
    else:
        Path(out).write_bytes(jpeg)
        print(f"{out} ({len(jpeg)} bytes)")
    return 0


def _time_arg(v):
    from .archive import to_timestamp

    if v is None:
        return None
    try:
        return to_timestamp(v)
    except ValueError as e:
        raise CliError(f"bad time: {e}") from None


# ----------------------------------------------------------------------------- status

def cmd_status(args) -> int:
    from .status import fmt_duration, fmt_time, read_status, source_rows

    if args.nodes or args.archive:
        from .nodes import NodeRegistry, format_nodes

        cfg = _config(args.config, archive=args.archive)
        try:
            docs = NodeRegistry(cfg.archive, cfg.storage_options or None).nodes()
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read the nodes of {cfg.archive}: {e}", EXIT_TRANSIENT) from None
        if args.json:
            print(json.dumps(docs, indent=1, default=str))
        else:
            format_nodes(docs)
        return 0
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
    pending = f"{w.get('pending', 0)} pending"
    if w.get("max_pending"):
        pending += f" (max {w['max_pending']}{', sources held back' if w.get('backpressure') else ''})"
    print(f"writer: {w.get('state', 'ok')}, {w.get('rows_written', 0)} rows in "
          f"{w.get('commits', 0)} commits, {pending}, {w.get('errors', 0)} errors")
    if w.get("state") == "stalled":
        since = w.get("since")
        print(f"  STALLED since {fmt_time(since)}"
              f"{f' ({fmt_duration(time.time() - since)})' if since else ''}: {w.get('error')}")
    for what, d in (s.get("disk") or {}).items():
        if d.get("low"):
            print(f"  warning: low disk space: {what} ({d.get('path')}) has "
                  f"{d.get('free_bytes', 0) / 2**20:.0f} MB free")
    e = s.get("encoder") or {}
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in (e.get("stage_s") or {}).items())
    print(f"encoder: {e.get('precision', '-')}, reuse threshold {e.get('reuse_threshold', 0)}, "
          f"{e.get('queued_chunks', 0)} chunks queued; time per stage: {stages or '-'}")
    rows = source_rows(s)
    if not rows:
        print("no sources")
    else:
        cols = ["source", "state", "lag", "fps", "reused", "frames", "dropped", "rows", "files",
                "errors", "last_error"]
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
        print("  ".join(c.upper().ljust(widths[c]) for c in cols))
        for r in rows:
            print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    from .alerts.report import status_lines

    for line in status_lines(s, fmt_time):  # triggers: fired, failures, target health
        print(line)
    return 0


# ----------------------------------------------------------------------------- triggers

def cmd_triggers_test(args) -> int:
    """What a configured trigger would have fired over the archive (alerts/calibrate.py)."""
    import tempfile

    from .alerts.calibrate import parse_since, run_trigger
    from .archive import ArchiveNotFoundError, NoEncoderError
    from .model.loader import ModelLoadError
    from .status import fmt_time

    cfg = _config(args.config, archive=args.archive)
    setup_logging("WARNING", "text")
    trig = next((t for t in cfg.triggers if t.name == args.name), None)
    if trig is None:
        names = ", ".join(t.name for t in cfg.triggers) or "none"
        raise CliError(f"no trigger named {args.name!r} in {args.config or 'the default config'} "
                       f"(triggers: {names})")
    try:
        since = parse_since(args.since)
    except (ValueError, TypeError) as e:
        raise CliError(f"bad --since: {e}") from None
    until = _time_arg(args.until)
    thumbs = None if args.no_thumbnails else (
        args.thumbnails or tempfile.mkdtemp(prefix=f"pystream-trigger-{trig.name}-"))
    arc = _open_archive(cfg, model=args.model)
    try:
        if args.model is None and arc.recorded_model is None:
            arc = _open_archive(cfg, model=cfg.model)  # an archive that does not say: the config's
        fired, near, scanned = run_trigger(arc, trig, since=since, until=until,
                                           threshold=args.threshold, thumbnails_dir=thumbs)
    except ArchiveNotFoundError as e:
        raise CliError(str(e)) from None
    except ModelLoadError as e:
        raise CliError(f"triggers test failed: {e}",
                       EXIT_TRANSIENT if e.transient else EXIT_CONFIG) from None
    except (NoEncoderError, RuntimeError, ValueError, TypeError, OSError) as e:
        raise CliError(f"triggers test failed: {e}") from None
    thr = trig.threshold if args.threshold is None else args.threshold
    if args.json:
        print(json.dumps({"trigger": trig.name, "threshold": thr, "since": since, "until": until,
                          "scanned": scanned, "alerts": [e.to_dict() for e in fired],
                          "near": [vars(n) for n in near]}, indent=1))
        return 0
    what = " + ".join(x for x in (f"text {trig.text!r}" if trig.text else "",
                                  f"image {trig.image}" if trig.image else "") if x)
    print(f"trigger {trig.name} ({what}, threshold {thr:.3f}, level {trig.level}, cooldown "
          f"{trig.cooldown_s:g} s): {len(fired)} alert(s) from "
          f"{sum(e.rows for e in fired)} matching window(s) of {scanned} scanned"
          f"{'' if since is None else ' since ' + fmt_time(since)}")
    if fired:
        rows = [[str(i), fmt_time(e.start), e.source, f"{e.score:.3f}", f"{e.peak:.3f}",
                 str(e.rows), e.clip_id, e.thumbnail or "-"] for i, e in enumerate(fired, 1)]
        head = ["#", "fires at", "source", "score", "peak", "windows", "clip", "thumbnail"]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.upper().ljust(w) for h, w in zip(head, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if near:
        print("closest below the threshold: " + ", ".join(
            f"{n.score:.3f} ({n.source} {fmt_time(n.start)})" for n in near))
    return 0


# ----------------------------------------------------------------------------- serve

def cmd_serve(args) -> int:
    import uvicorn

    from .http import create_app
    from .status import read_status

    cfg = _config(args.config, archive=args.archive, state_dir=args.state_dir)
    setup_logging(cfg.log.level, cfg.log.format)
    host = args.host or cfg.http.host
    token = _http_token(cfg, host)
    app = create_app(_open_archive(cfg, model=args.model), lambda: read_status(cfg.state_dir),
                     config=cfg, token=token, host=host)
    # uvicorn shuts down gracefully on SIGTERM / Ctrl-C, then re-raises the signal to the
    # handler that was installed before it: make that one a no-op so a stop exits 0, as
    # `watch` does (not "killed by SIGTERM").
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: None)
    uvicorn.run(app, host=host, port=args.port or cfg.http.port, log_level="warning")
    return 0


# ----------------------------------------------------------------------------- prune

def cmd_prune(args) -> int:
    """Apply the configured retention now (the daemon does it every retention.interval_s), or
    with --dry-run show what it would delete."""
    from . import retention
    from .archive import ArchiveNotFoundError
    from .status import fmt_time

    cfg = _config(args.config, archive=args.archive)
    setup_logging("WARNING", "text")
    policy = retention.RetentionPolicy.from_config(cfg)
    if not policy.active:
        raise CliError("no retention configured: set retention.max_age / retention.max_size "
                       "(or a source's retention.max_age) in the configuration")
    try:
        table = _open_archive(cfg).table
    except ArchiveNotFoundError as e:
        raise CliError(str(e)) from None
    now = time.time()
    plan = retention.plan(table, policy, now)
    verb = "would delete" if args.dry_run else "deleting"
    print(f"{cfg.archive}: {table.count_rows()} rows; {verb} {plan['rows']}")
    for name, p in sorted(plan["sources"].items()):
        print(f"  {name:<20} {p['rows']:>8} rows  {fmt_time(p['oldest'])} .. {fmt_time(p['newest'])}")
    if args.dry_run or not plan["rows"]:
        return 0
    try:
        deleted = retention.apply(table, policy, now)
        from datetime import timedelta

        table.optimize(cleanup_older_than=timedelta(seconds=cfg.writer.keep_versions_s))
    except Exception as e:  # e.g. a commit conflict with the running daemon: retry later
        raise CliError(f"prune failed: {type(e).__name__}: {e}", EXIT_TRANSIENT) from None
    print(f"deleted {deleted} rows; space comes back once versions older than "
          f"{cfg.writer.keep_versions_s:g} s are cleaned up")
    return 0


def cmd_finetune(args) -> int:
    """TempMe fine-tuning (LoRA + temporal embeddings) on (video, caption) pairs: see
    pystream/finetune.py."""
    from . import finetune

    argv = [a for a in (args.finetune_argv or [])]
    args.argv = argv
    try:
        finetune.run(args)
    except (ValueError, FileNotFoundError) as e:
        raise CliError(f"finetune: {e}", EXIT_CONFIG) from None
    except RuntimeError as e:
        if "peft" in str(e):
            raise CliError(str(e), EXIT_CONFIG) from None
        raise
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

    b = sub.add_parser("backfill", help="index many recordings on a Ray cluster (resumable; "
                       "pip install pystream[ray])")
    common(b)
    b.add_argument("inputs", nargs="+", metavar="PATH_OR_GLOB",
                   help="video files, folders (recursive) or glob patterns ('/srv/rec/**/*.mp4')")
    b.add_argument("--ray", metavar="ADDRESS",
                   help="Ray cluster (HOST:PORT of `ray start --head`, ray://HOST:PORT or auto; "
                   "default: a local Ray instance)")
    b.add_argument("--model", help="'shipped', a Hugging Face id or a model directory")
    b.add_argument("--source", default="local", help="source name stored with the rows")
    b.add_argument("--fps", type=float, help="sample rate (default: config sample_fps)")
    b.add_argument("--workers", type=int, help="encoder actors (default: one per GPU, else one "
                   "per 2 CPUs)")
    b.add_argument("--cpus-per-worker", type=float, default=1,
                   help="CPUs (torch threads) per encoder actor on CPU nodes (default 1)")
    b.add_argument("--files-per-commit", type=int, default=16,
                   help="files per archive commit (default 16)")
    b.add_argument("-q", "--quiet", action="store_true")
    b.add_argument("-v", "--verbose", action="store_true")
    b.set_defaults(fn=cmd_backfill)

    s = sub.add_parser("search", help="text search over the archive")
    common(s)
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--model", help="model for the query (default: the one that indexed the "
                   "archive): 'shipped', a Hugging Face id or a model directory")
    s.add_argument("--source", action="append", help="only this source (repeatable)")
    s.add_argument("--since", help="epoch seconds or ISO time")
    s.add_argument("--until", help="epoch seconds or ISO time")
    s.add_argument("--level", type=int, default=0, help="0 windows, 1 coarse, -1 all")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_search)

    t = sub.add_parser("thumbnail", help="write the JPEG thumbnail of a clip (id from search)")
    common(t)
    t.add_argument("id")
    t.add_argument("-o", "--output", help="file to write ('-': stdout; default: ID.jpg)")
    t.set_defaults(fn=cmd_thumbnail)

    st = sub.add_parser("status", help="per-source state of the running daemon")
    common(st, archive=False)
    st.add_argument("--state-dir")
    st.add_argument("--archive", help="show every node writing this archive (its "
                    "_pystream_nodes documents) instead of this machine's daemon")
    st.add_argument("--nodes", action="store_true", help="every node of the config's archive")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    tr = sub.add_parser("triggers", help="standing queries (alerts): try one on the archive")
    trs = tr.add_subparsers(dest="triggers_cmd", required=True)
    tt = trs.add_parser("test", help="what a configured trigger would have fired over the "
                        "archive (score, time, thumbnail), to pick its threshold")
    common(tt)
    tt.add_argument("name", help="the trigger's name in the config")
    tt.add_argument("--since", default="24h",
                    help="24h, 30m, 7d, an ISO time or epoch seconds; 'all': the whole archive "
                    "(default 24h)")
    tt.add_argument("--until", help="epoch seconds or ISO time")
    tt.add_argument("--threshold", type=float, help="try another threshold than the config's")
    tt.add_argument("--model", help="model for the trigger's text / image (default: the one "
                    "that indexed the archive)")
    tt.add_argument("--thumbnails", help="folder for the thumbnails (default: a new temp folder)")
    tt.add_argument("--no-thumbnails", action="store_true")
    tt.add_argument("--json", action="store_true")
    tt.set_defaults(fn=cmd_triggers_test)

    sv = sub.add_parser("serve", help="HTTP only: the web page and the API (search, play, "
                        "status, metrics)")
    common(sv)
    sv.add_argument("--state-dir")
    sv.add_argument("--host")
    sv.add_argument("--port", type=int)
    sv.add_argument("--model", help="model for text queries (default: the one that indexed "
                    "the archive)")
    sv.set_defaults(fn=cmd_serve)

    pr = sub.add_parser("prune", help="delete rows past the configured retention "
                        "(--dry-run: only show them)")
    common(pr)
    pr.add_argument("--dry-run", action="store_true", help="show what would go, delete nothing")
    pr.set_defaults(fn=cmd_prune)
    ft = sub.add_parser("finetune", help="train a TempMe adapter (LoRA + temporal embeddings) "
                        "on (video, caption) pairs; model: DIR then uses it")
    from .finetune import add_arguments

    add_arguments(ft)
    ft.set_defaults(fn=cmd_finetune)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.finetune_argv = argv[1:] if argv and argv[0] == "finetune" else None
    try:
        return int(args.fn(args) or 0)
    except CliError as e:
        print(f"pystream: error: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        print(f"pystream: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
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
        return e.code if isinstance(e, CliError) else EXIT_CONFIG


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
