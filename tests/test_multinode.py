"""One archive, many writers (issue 13): two pystreamd nodes, each owning one real live UDP
stream, append to one archive concurrently while a reader queries it throughout; no lost rows,
no duplicates, no reader errors. On a shared directory and on S3 (a local moto server, with
LanceDB storage_options). A third node claiming a live node's source refuses to start; every
node's sources show in `pystream status --archive`; moto's conditional put is checked.

Duration: MULTINODE_S seconds of concurrent writing (default 30; the issue asks for about a
minute: PYSTREAM_MULTINODE_S=60). This box has 2 cores shared with other work; each node's
stream gives a window every 2 s (2 fps, 4-frame chunks), so 30 s is about 17 commits per node
(measured: 26 rows in 17 commits each, the reader 88-144 query rounds) interleaved with the other
node's, with node-a's maintenance (compaction every 5 s) running under them several times; a
longer run repeats the same interleavings.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

import pystream
from streams import ffmpeg_udp, free_port, have, make_video
from test_pipeline_fixtures import REPO, env_for_subprocess, make_model_dir

MULTINODE_S = float(os.environ.get("PYSTREAM_MULTINODE_S", "30"))

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg for the live streams")


def node_config(tmp_path, node, sources, archive, maintenance, model, storage_options=None):
    cfg = {
        "archive": str(archive), "state_dir": str(tmp_path / f"state-{node}"),
        "model": str(model), "threads": 1, "sample_fps": 2.0, "coarse_windows": 2,
        "batching": {"max_batch_chunks": 8, "max_wait_s": 0.05},
        "writer": {"batch_rows": 4, "flush_interval_s": 0.2, "optimize_interval_s": 5},
        "http": {"enabled": False}, "log": {"level": "INFO", "format": "json"},
        "reuse": {"threshold": 0},
        "node": {"id": node, "maintenance": maintenance, "heartbeat_s": 1, "stale_s": 10},
        "sources": [{"type": "stream", "name": name, "url": url, "open_timeout_s": 5,
                     "read_timeout_s": 3, "stall_timeout_s": 4, "backoff_initial_s": 0.3,
                     "backoff_max_s": 2} for name, url in sources],
    }
    if storage_options:
        cfg["storage_options"] = storage_options
    path = tmp_path / f"{node}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, log):
        f = open(log, "ab")
        p = subprocess.Popen(argv, stdout=f, stderr=f, env=env_for_subprocess(),
                             start_new_session=True)
        f.close()
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.stop_all()


def daemon(procs, cfg, log):
    return procs.start([sys.executable, str(REPO / "daemon" / "pystreamd.py"), "-c", cfg], log)


def status(tmp_path, node):
    try:
        return json.loads((tmp_path / f"state-{node}" / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Reader(threading.Thread):
    """Queries the archive the whole time, as a user would: counts, a vector search, a
    filtered search; records every error and every count seen."""

    def __init__(self, archive, storage_options=None):
        super().__init__(daemon=True)
        self.archive, self.storage_options = archive, storage_options
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.counts: list[int] = []
        self.queries = 0

    def run(self):
        arc = pystream.open(self.archive, read_consistency_interval=0,
                            storage_options=self.storage_options)
        rng = np.random.default_rng(0)
        while not self.stop.wait(0.3):
            try:
                tbl = arc.table
            except Exception:  # the table does not exist before the first commit
                continue
            try:
                self.counts.append(tbl.count_rows())
                q = rng.standard_normal(tbl.schema.field("vector").type.list_size)
                tbl.search(q.astype(np.float32)).limit(5).to_list()
                tbl.search(q.astype(np.float32)).where("source = 'cam-a'", prefilter=True) \
                    .limit(3).to_list()
                self.queries += 1
            except Exception as e:  # noqa: BLE001 - any reader error fails the test
                self.errors.append(f"{type(e).__name__}: {e}")


def run_two_nodes(tmp_path, procs, archive, storage_options=None):
    model = make_model_dir(tmp_path / "model")
    clip = make_video(tmp_path / "clip.mp4", seconds=10, fps=10, size=(160, 120))
    ports = [free_port(socket.SOCK_DGRAM) for _ in range(2)]
    urls = [f"udp://127.0.0.1:{p}?overrun_nonfatal=1&fifo_size=1000000" for p in ports]
    cfg_a = node_config(tmp_path, "node-a", [("cam-a", urls[0])], archive, True, model,
                        storage_options)
    cfg_b = node_config(tmp_path, "node-b", [("cam-b", urls[1])], archive, False, model,
                        storage_options)
    servers = [ffmpeg_udp(clip, p, log=tmp_path / f"ffmpeg{i}.log") for i, p in enumerate(ports)]
    for s in servers:
        s.start()
    procs.procs += [s for s in []]
    try:
        a = daemon(procs, cfg_a, tmp_path / "a.log")
        b = daemon(procs, cfg_b, tmp_path / "b.log")
        reader = Reader(str(archive), storage_options)
        reader.start()

        # Both nodes write; then MULTINODE_S seconds of concurrent writing.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sa, sb = status(tmp_path, "node-a"), status(tmp_path, "node-b")
            if (sa and sb and sa["writer"]["rows_written"] > 0
                    and sb["writer"]["rows_written"] > 0):
                break
            assert a.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
            assert b.poll() is None, (tmp_path / "b.log").read_text()[-3000:]
            time.sleep(0.3)
        else:
            pytest.fail("the nodes did not write: " + (tmp_path / "a.log").read_text()[-2000:]
                        + (tmp_path / "b.log").read_text()[-2000:])
        t_both = time.monotonic()

        # A third node claiming node-a's source refuses to start, naming the conflict.
        cfg_c = node_config(tmp_path, "node-c", [("cam-a", urls[0])], archive, False, model,
                            storage_options)
        c = daemon(procs, cfg_c, tmp_path / "c.log")
        assert c.wait(60) == 2
        text = (tmp_path / "c.log").read_text()
        assert "cam-a" in text and "node-a" in text and "belong to" in text, text[-2000:]
        # A second maintainer is refused too.
        cfg_d = node_config(tmp_path, "node-d", [("cam-d", "udp://127.0.0.1:9")], archive, True,
                            model, storage_options)
        d = daemon(procs, cfg_d, tmp_path / "d.log")
        assert d.wait(60) == 2
        assert "maintenance" in (tmp_path / "d.log").read_text()

        # Every node's sources from one command.
        out = subprocess.run([sys.executable, "-m", "pystream", "status", "-c", cfg_b,
                              "--nodes"], capture_output=True, text=True,
                             env=env_for_subprocess(), timeout=60)
        assert out.returncode == 0, out.stderr
        assert "node node-a: live" in out.stdout and "node node-b: live" in out.stdout
        assert "cam-a" in out.stdout and "cam-b" in out.stdout

        time.sleep(max(0.0, MULTINODE_S - (time.monotonic() - t_both)))
        for p in (a, b):
            p.send_signal(signal.SIGTERM)
        assert a.wait(90) == 0, (tmp_path / "a.log").read_text()[-3000:]
        assert b.wait(90) == 0, (tmp_path / "b.log").read_text()[-3000:]
        time.sleep(1.0)
        reader.stop.set()
        reader.join(30)
    finally:
        for s in servers:
            s.stop()

    assert not reader.errors, reader.errors[:5]
    assert reader.queries >= 10
    assert reader.counts == sorted(reader.counts)  # compaction under readers never loses rows

    arc = pystream.open(str(archive), read_consistency_interval=0,
                        storage_options=storage_options)
    rows = arc.table.search().select(["id", "source"]).limit(None).to_arrow().to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate rows"
    final = {n: status(tmp_path, n) for n in ("node-a", "node-b")}
    for node, source in (("node-a", "cam-a"), ("node-b", "cam-b")):
        w = final[node]["writer"]
        assert w["mode"] == "append" and w["state"] == "ok" and w["pending"] == 0, w
        assert w["maintenance"] == (node == "node-a")
        assert w["maintenance_errors"] == 0, w["last_maintenance_error"]
        written = w["rows_written"] - w["replayed_rows"]
        stored = sum(r["source"] == source for r in rows)
        assert stored == written, (node, stored, w)  # no lost rows
        assert stored >= MULTINODE_S / 4, (node, stored)  # about one window per 2 s of stream
    print(f"rows: {len(rows)}; reader: {reader.queries} query rounds, 0 errors; writers: "
          + "; ".join(f"{n} {final[n]['writer']['rows_written']} rows in "
                      f"{final[n]['writer']['commits']} commits" for n in final))
    docs = {d["node"]: d for d in __import__("pystream.nodes", fromlist=["x"]).NodeRegistry(
        str(archive), storage_options).nodes()}
    assert docs["node-a"]["live"] is False and docs["node-b"]["live"] is False  # stopped
    return rows


@pytest.mark.slow
def test_two_nodes_one_directory_archive(tmp_path, procs):
    run_two_nodes(tmp_path, procs, tmp_path / "shared-archive")


# ---------------------------------------------------------------------------- S3 (moto)


@pytest.fixture
def moto_s3():
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    s3.create_bucket(Bucket="pystream")
    options = {"aws_endpoint": endpoint, "aws_access_key_id": "test",
               "aws_secret_access_key": "test", "aws_region": "us-east-1", "allow_http": "true"}
    try:
        yield {"client": s3, "options": options, "endpoint": endpoint}
    finally:
        server.stop()


def test_moto_conditional_put_rejects_a_racing_commit(moto_s3, tmp_path):
    """Lance's S3 commits rely on conditional put (If-None-Match: *) to refuse a second writer
    of the same manifest version. moto's server honours it: the raw put is refused with 412,
    and two Lance commits from the same read version both land (the second one is refused,
    rebased and written as the next version) instead of one overwriting the other."""
    import lance
    import pyarrow as pa
    from botocore.exceptions import ClientError

    s3 = moto_s3["client"]
    s3.put_object(Bucket="pystream", Key="probe", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="pystream", Key="probe", Body=b"2", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket="pystream", Key="probe")["Body"].read() == b"1"

    uri = "s3://pystream/race.lance"
    opts = moto_s3["options"]
    lance.write_dataset(pa.table({"x": [0]}), uri, storage_options=opts)
    v = lance.dataset(uri, storage_options=opts).version
    frags = [lance.fragment.write_fragments(pa.table({"x": [i]}), uri, storage_options=opts)
             for i in (1, 2)]
    for f in frags:  # both from read version v: the second must not overwrite the first
        lance.LanceDataset.commit(uri, lance.LanceOperation.Append(f), read_version=v,
                                  storage_options=opts)
    ds = lance.dataset(uri, storage_options=opts)
    assert sorted(ds.to_table().column("x").to_pylist()) == [0, 1, 2]
    assert ds.version == v + 2


@pytest.mark.slow
def test_two_nodes_one_s3_archive(tmp_path, procs, moto_s3):
    run_two_nodes(tmp_path, procs, "s3://pystream/archive", moto_s3["options"])


# ---------------------------------------------------------------------------- units


def _rows(n, source="cam", uri="/v/a.mp4", recording=True, start0=0.0, dim=8):
    from pystream.store import ClipRow

    rng = np.random.default_rng(int(start0))
    return [ClipRow(source=source, uri=uri, level=0, start=start0 + 4 * i, end=start0 + 4 * i + 12,
                    vector=rng.standard_normal(dim).astype(np.float32), recording=recording)
            for i in range(n)]


def test_append_mode_drops_only_replayed_file_rows(tmp_path):
    import lancedb

    from pystream.writer import ClipWriter

    w = ClipWriter(tmp_path, dim=8, model_id="m", batch_rows=4, append=True,
                   optimize_every_s=1e9)
    first = _rows(6)
    w.write(first)
    w.write(_rows(3, source="live", uri="udp://x", recording=False, start0=1e9))
    w.close(optimize=False)
    assert w.stats()["mode"] == "append"
    # A restart replays the file's last rows (committed, not yet checkpointed), then new ones.
    w = ClipWriter(tmp_path, dim=8, model_id="m", batch_rows=3, append=True,
                   optimize_every_s=1e9)
    w.write(first[3:] + _rows(4, start0=24.0))
    w.close(optimize=False)
    assert w.replayed_rows == 3
    t = lancedb.connect(str(tmp_path)).open_table("clips").to_arrow()
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 6 + 3 + 4
    # The normal path is a plain Append: each commit's operation in the table's history.
    ops = [v for v in lancedb.connect(str(tmp_path)).open_table("clips").list_versions()]
    assert len(ops) >= 4


def test_maintenance_only_where_configured(tmp_path):
    import lancedb

    from pystream.writer import ClipWriter

    w = ClipWriter(tmp_path, dim=8, model_id="m", append=True, maintenance=False,
                   optimize_every_s=1e9, table_wait_s=0.5)  # no maintenance node: creates it
    w.write(_rows(10))
    w.close(optimize=True)  # would compact and index on a maintaining node
    tbl = lancedb.connect(str(tmp_path)).open_table("clips")
    assert tbl.list_indices() == []
    w = ClipWriter(tmp_path, dim=8, model_id="m", append=True, maintenance=True,
                   optimize_every_s=1e9)
    w.write(_rows(2, start0=100.0))
    w.close(optimize=True)
    assert {i.name for i in lancedb.connect(str(tmp_path)).open_table("clips").list_indices()}


def test_claims_and_conflicts(tmp_path):
    from pystream.config import parse_config
    from pystream.nodes import NodeConflictError, NodeRegistry, claim, conflicts

    def cfg(node, sources, maintenance):
        return parse_config({"archive": str(tmp_path / "arc"), "node": {
            "id": node, "maintenance": maintenance, "stale_s": 5},
            "sources": [{"type": "stream", "name": s, "url": "udp://127.0.0.1:9"}
                        for s in sources]})

    reg = NodeRegistry(str(tmp_path / "arc"))
    pub = claim(cfg("a", ["s1", "s2"], True), reg, settle_s=0)
    pub({"sources": {"s1": {"state": "running", "rows": 3}}}, force=True)
    claim(cfg("b", ["s3"], False), reg, settle_s=0)  # disjoint, not maintaining: fine
    with pytest.raises(NodeConflictError, match="'s2' already belong to node 'a'"):
        claim(cfg("c", ["s2"], False), reg, settle_s=0)
    with pytest.raises(NodeConflictError, match="already runs maintenance"):
        claim(cfg("d", ["s4"], True), reg, settle_s=0)
    pub.stopped()  # a stopped (or silent for stale_s) node no longer holds its sources
    claim(cfg("c", ["s2"], False), reg, settle_s=0)
    docs = {d["node"]: d for d in reg.nodes()}
    assert docs["a"]["live"] is False and docs["b"]["live"] and docs["c"]["live"]
    # Two nodes starting together: the later one (start time, then id) yields.
    me = {"node": "x", "sources": ["s"], "started": 10.0, "maintenance": False}
    assert conflicts(me, [{"node": "y", "sources": ["s"], "started": 9.0, "live": True}])
    assert not conflicts(me, [{"node": "y", "sources": ["s"], "started": 11.0, "live": True}])


def test_bad_storage_options_and_uri_are_named(tmp_path):
    from pystream.nodes import NodeRegistry

    with pytest.raises(ValueError, match="ftp://"):
        NodeRegistry("ftp://host/arc")
