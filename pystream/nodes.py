"""Several indexing nodes, one archive: who owns which source, who maintains, who is alive.

Every ``pystreamd`` with ``node.id`` set publishes a small JSON document next to the archive,
``ARCHIVE/_pystream_nodes/NODE.json`` (a local or shared directory, or the same prefix on S3),
every ``node.heartbeat_s``: its sources, whether it runs maintenance, its host and pid, and its
status (what `pystream status` shows for one node). ``pystream status`` lists every node of an
archive from these files, so one command shows every node's sources.

Rules (checked at start, ``claim``): a source belongs to one node (rows are keyed by source
name, so two nodes indexing one source would write the same ids twice), and exactly one node
maintains the archive (optimize/compaction, index refresh, version cleanup, retention), so
maintenance never races itself. A node that finds another *live* node (heartbeat younger than
``node.stale_s``) claiming one of its sources, or also maintaining, refuses to start with an
error naming both. Two nodes starting at the same moment both publish first, wait a little and
look again; the later one (by start time, then id) yields. A node that died stops being live
after ``stale_s`` and its sources can be taken over.

Writes are whole-object puts (S3) or write-then-rename (a filesystem), so a reader never sees
half a document; no two nodes write the same file.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from typing import Callable, Iterable

log = logging.getLogger("pystream.nodes")

NODES_DIR = "_pystream_nodes"


class NodeConflictError(ValueError):
    """Another live node claims one of this node's sources, or also runs maintenance."""


def _s3_filesystem(storage_options: dict | None):
    """A pyarrow S3FileSystem from LanceDB-style storage options (endpoint, keys, region)."""
    from pyarrow import fs

    o = {k.lower(): v for k, v in (storage_options or {}).items()}
    kwargs = {}
    endpoint = o.get("aws_endpoint") or o.get("endpoint") or o.get("aws_endpoint_url")
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        if rest:
            kwargs["scheme"], endpoint = scheme, rest
        kwargs["endpoint_override"] = endpoint
    if o.get("aws_access_key_id") or o.get("access_key_id"):
        kwargs["access_key"] = o.get("aws_access_key_id") or o.get("access_key_id")
        kwargs["secret_key"] = o.get("aws_secret_access_key") or o.get("secret_access_key")
    if o.get("aws_region") or o.get("region"):
        kwargs["region"] = o.get("aws_region") or o.get("region")
    return fs.S3FileSystem(**kwargs)


class NodeRegistry:
    """The node documents of one archive (see the module docstring)."""

    def __init__(self, archive: str, storage_options: dict | None = None):
        self.archive = os.fspath(archive).rstrip("/")
        scheme = self.archive.split("://", 1)[0] if "://" in self.archive else ""
        if scheme in ("s3", "s3+ddb"):
            self._fs = _s3_filesystem(storage_options)
            self._dir = self.archive.split("://", 1)[1] + "/" + NODES_DIR
        elif scheme in ("", "file"):
            self._fs = None
            self._dir = os.path.join(self.archive.split("://", 1)[-1], NODES_DIR)
        else:
            raise ValueError(f"node status next to {archive!r}: only directories and s3:// "
                             "archives are supported")

    def path(self, node_id: str) -> str:
        return f"{self._dir}/{node_id}.json"

    def publish(self, node_id: str, doc: dict) -> None:
        data = json.dumps(doc, default=str).encode()
        if self._fs is None:
            os.makedirs(self._dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{node_id}.", dir=self._dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path(node_id))
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        else:
            with self._fs.open_output_stream(self.path(node_id)) as f:
                f.write(data)

    def nodes(self, stale_s: float | None = None) -> list[dict]:
        """Every node's last document, with ``live`` (updated within its own stale_s, or
        ``stale_s``) and ``age_s``."""
        docs = []
        if self._fs is None:
            try:
                names = [n for n in os.listdir(self._dir) if n.endswith(".json")]
            except FileNotFoundError:
                return []
            raw = []
            for n in sorted(names):
                try:
                    with open(os.path.join(self._dir, n), "rb") as f:
                        raw.append(f.read())
                except FileNotFoundError:
                    continue
        else:
            from pyarrow import fs

            try:
                infos = self._fs.get_file_info(fs.FileSelector(self._dir, allow_not_found=True))
            except FileNotFoundError:
                return []
            raw = []
            for info in sorted(infos, key=lambda i: i.path):
                if info.path.endswith(".json"):
                    with self._fs.open_input_stream(info.path) as f:
                        raw.append(f.read())
        now = time.time()
        for data in raw:
            try:
                doc = json.loads(data)
            except ValueError:
                continue
            age = now - float(doc.get("updated", 0))
            doc["age_s"] = round(age, 1)
            limit = stale_s if stale_s is not None else float(doc.get("stale_s", 30.0))
            doc["live"] = bool(doc.get("running", True)) and age <= limit
            docs.append(doc)
        return docs


def node_doc(cfg, status: dict | None = None, *, started: float, running: bool = True) -> dict:
    """What a node publishes: identity, claims, and its status (sources' numbers, writer)."""
    doc = {
        "node": cfg.node.id, "host": socket.gethostname(), "pid": os.getpid(),
        "started": started, "updated": time.time(), "running": running,
        "stale_s": cfg.node.stale_s, "maintenance": cfg.node.maintenance,
        "archive": cfg.archive, "sources": [s.name for s in cfg.enabled_sources()],
    }
    if status is not None:
        doc["status"] = {k: status.get(k) for k in ("model", "running", "writer", "sources")}
    return doc


def conflicts(me: dict, others: Iterable[dict]) -> list[str]:
    """Why ``me`` must not run next to the live ``others`` (empty: it may)."""
    problems = []
    mine = set(me["sources"])
    for o in others:
        if o.get("node") == me["node"] or not o.get("live"):
            continue
        # Of two nodes starting together, the later one yields.
        if (float(o.get("started", 0)), str(o.get("node"))) > (float(me["started"]),
                                                                str(me["node"])):
            continue
        where = f"node {o.get('node')!r} (host {o.get('host')}, pid {o.get('pid')}, " \
                f"alive {o.get('age_s', 0):.0f} s ago)"
        shared = sorted(mine & set(o.get("sources") or []))
        if shared:
            problems.append(f"source(s) {', '.join(map(repr, shared))} already belong to {where}: "
                            "a source belongs to one node; remove it from one of the configs")
        if me.get("maintenance") and o.get("maintenance"):
            problems.append(f"{where} already runs maintenance on this archive: set "
                            "node.maintenance: false on all nodes but one")
    return problems


def claim(cfg, registry: NodeRegistry | None = None, settle_s: float = 1.0) -> "NodePublisher":
    """Publish this node's claim and check it against the live nodes (raises
    NodeConflictError naming the conflict); returns the publisher for its heartbeats."""
    registry = registry or NodeRegistry(cfg.archive, cfg.storage_options or None)
    started = time.time()
    me = node_doc(cfg, started=started)
    problems = conflicts(me, registry.nodes())
    if not problems:
        registry.publish(cfg.node.id, me)
        time.sleep(settle_s)  # a node starting at the same moment publishes meanwhile
        problems = conflicts(me, registry.nodes())
    if problems:
        raise NodeConflictError(f"node {cfg.node.id!r} cannot start on archive {cfg.archive}: "
                                + "; ".join(problems))
    return NodePublisher(cfg, registry, started)


class NodePublisher:
    """Publishes this node's document every ``node.heartbeat_s`` (use as StatusReporter's
    ``on_status``: it gets the status once a second and rate-limits itself). Never raises: a
    failed publish is logged once until it works again."""

    def __init__(self, cfg, registry: NodeRegistry, started: float):
        self.cfg, self.registry, self.started = cfg, registry, started
        self._last = 0.0
        self._failing = False

    def __call__(self, status: dict | None, force: bool = False, running: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.cfg.node.heartbeat_s:
            return
        self._last = now
        try:
            self.registry.publish(self.cfg.node.id, node_doc(self.cfg, status,
                                                              started=self.started,
                                                              running=running))
            if self._failing:
                log.info("node status published again")
            self._failing = False
        except Exception as e:  # status is best effort
            if not self._failing:
                log.error("could not publish node status next to %s: %s: %s",
                          self.cfg.archive, type(e).__name__, e)
            self._failing = True

    def stopped(self, status: dict | None = None) -> None:
        self(status, force=True, running=False)


def format_nodes(docs: list[dict], out: Callable[[str], None] = print) -> None:
    """The node table of `pystream status`: one line per node, then its sources."""
    if not docs:
        out("no nodes have published to this archive")
        return
    out(f"{len(docs)} node(s) on this archive:")
    for d in docs:
        state = "live" if d.get("live") else ("stopped" if not d.get("running", True)
                                              else "stale")
        w = (d.get("status") or {}).get("writer") or {}
        out(f"  node {d.get('node')}: {state} ({d.get('age_s', 0):.0f} s ago), host "
            f"{d.get('host')} pid {d.get('pid')}, maintenance "
            f"{'yes' if d.get('maintenance') else 'no'}, writer {w.get('state', '-')} "
            f"{w.get('mode', '')}, {w.get('rows_written', 0)} rows in {w.get('commits', 0)} "
            "commits")
        srcs = (d.get("status") or {}).get("sources") or {}
        for name in d.get("sources") or []:
            s = srcs.get(name) or {}
            out(f"    {name:<20} {s.get('state', '-'):<12} {s.get('rows', 0):>8} rows  "
                f"{(s.get('last_error') or '')[:80]}")


__all__ = ["NodeRegistry", "NodePublisher", "NodeConflictError", "claim", "conflicts",
           "format_nodes", "node_doc"]
