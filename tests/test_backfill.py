"""Ray backfill (issue 13): a two-node local Ray cluster on 127.0.0.1 indexes real encoded files;
the rows equal `pystream index` of the same files (ids, times, vectors); a worker node removed
mid-job and a re-run give the same rows, no duplicates; a crash between a commit and its
manifest entries is harmless; bad input gives clear errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import lancedb
import numpy as np
import pytest

from streams import Server, free_port, make_video, wait_tcp

ray = pytest.importorskip("ray")
pytest.importorskip("lance")

from pystream.backfill import BackfillError, backfill  # noqa: E402

N_FILES = 6


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("backfill-videos")
    for i in range(N_FILES):
        make_video(d / f"cam{i}.mp4", seconds=14 + 4 * i, fps=4, size=(96, 72))
    (d / "broken.mp4").write_bytes(b"not a video at all" * 100)  # an unreadable file
    return d


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    """`pystream index` of the same files: what backfill must reproduce."""
    import pystream

    out = tmp_path_factory.mktemp("reference") / "archive"
    result = pystream.index([str(videos)], archive=str(out))
    assert result.rows > 0 and result.errors == 1  # broken.mp4, named in the message
    assert any("broken.mp4" in m for m in result.error_messages)
    return rows_of(out)


def rows_of(archive) -> dict:
    t = lancedb.connect(str(archive)).open_table("clips").to_arrow()
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate ids"
    vectors = t.column("vector").to_numpy(zero_copy_only=False)
    return {i: dict(uri=u, level=lv, start=s, end=e, vector=np.asarray(v))
            for i, u, lv, s, e, v in zip(ids, t.column("uri").to_pylist(),
                                         t.column("level").to_pylist(),
                                         t.column("start").to_pylist(),
                                         t.column("end").to_pylist(), vectors)}


def assert_same_rows(got: dict, want: dict):
    assert sorted(got) == sorted(want)  # the same deterministic ids, none missing, none extra
    worst = 0.0
    for k, w in want.items():
        g = got[k]
        assert (g["uri"], g["level"], g["start"], g["end"]) == (w["uri"], w["level"], w["start"],
                                                                 w["end"])
        worst = max(worst, float(np.abs(g["vector"] - w["vector"]).max()))
    # Same code path; `pystream index` batches chunks of several files into one forward, the
    # backfill one file per actor call, so float sums may differ in the last bits (measured:
    # about 5e-8).
    assert worst < 1e-5, worst


# Ray 2.60 turns token authentication on for a `ray start --head` cluster (the token in
# ~/.ray/auth_token); a local test cluster on 127.0.0.1 opts out, for its nodes and this driver.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module", autouse=True)
def _ray_no_auth():
    mp = pytest.MonkeyPatch()
    for k, v in NO_AUTH.items():
        mp.setenv(k, v)
    yield
    mp.undo()


class RayNode(Server):
    """`ray start --block` in its own process group: stop() kills that node (and only it)."""

    def __init__(self, head_port: int, head: bool, log: Path):
        argv = [str(Path(sys.executable).parent / "ray"), "start", "--block",
                "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
                f"--object-store-memory={300 * 2**20}", "--disable-usage-stats"]
        if head:
            argv += ["--head", f"--port={head_port}", "--include-dashboard=false"]
        else:
            argv += [f"--address=127.0.0.1:{head_port}"]
        super().__init__(argv, log)

    def start(self) -> "RayNode":
        import os

        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=dict(os.environ, **NO_AUTH))
        out.close()
        return self


def wait_nodes(address: str, n: int, timeout: float = 90.0):
    """Block until the cluster at ``address`` has ``n`` live nodes (asked in a subprocess, so
    this process stays unconnected, like a user's shell)."""
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True,
                             text=True, timeout=60, env=dict(__import__("os").environ, **NO_AUTH))
        if out.stdout.strip().isdigit() and int(out.stdout.strip()) >= n:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {n} nodes")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes on 127.0.0.1 (`ray start --head` + `ray start --address`), two logical
    CPUs each; yields the address and the list of started nodes (head first)."""
    logs = tmp_path_factory.mktemp("ray-logs")
    port = free_port()
    nodes = [RayNode(port, True, logs / "head.log").start()]
    try:
        if not wait_tcp(port, 60):
            raise RuntimeError("ray head did not start: " + (logs / "head.log").read_text()[-2000:])
        nodes.append(RayNode(port, False, logs / "worker1.log").start())
        address = f"127.0.0.1:{port}"
        wait_nodes(address, 2)
        yield {"address": address, "nodes": nodes, "port": port, "logs": logs}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for n in reversed(nodes):
            n.stop()


@pytest.mark.slow
def test_two_node_cluster_equals_index_and_resumes(cluster, videos, reference, tmp_path):
    archive = tmp_path / "archive"
    commits = []
    result = backfill([str(videos)], archive=str(archive), ray_address=cluster["address"],
                      workers=2, files_per_commit=2, progress=commits.append)
    assert ray.is_initialized() is False  # it connected, so it disconnected
    assert result.files_indexed == N_FILES and result.errors == 1
    assert any("broken.mp4" in m for m in result.error_messages)
    assert result.commits >= 2 and len(commits) >= 3  # committed per batch of files
    assert commits[-1]["files_done"] == N_FILES + 1
    assert_same_rows(rows_of(archive), reference)

    # A re-run skips every file (same model and settings) and adds nothing.
    again = backfill([str(videos)], archive=str(archive), ray_address=cluster["address"])
    assert again.files_skipped == N_FILES and again.rows == 0 and again.commits == 0

    # A crash after a commit but before its manifest entries: the re-run re-encodes those files
    # and drops the rows already there (same ids), so nothing is duplicated.
    manifest = lancedb.connect(str(archive)).open_table("clips_backfill")
    manifest.delete("path LIKE '%cam1.mp4' OR path LIKE '%cam4.mp4'")
    third = backfill([str(videos)], archive=str(archive), ray_address=cluster["address"],
                     workers=1)
    assert third.files_indexed == 2 and third.rows == 0 and third.rows_skipped > 0
    assert_same_rows(rows_of(archive), reference)


@pytest.mark.slow
def test_worker_node_removed_mid_job_then_rerun(cluster, videos, reference, tmp_path):
    archive = tmp_path / "archive"
    extra = RayNode(cluster["port"], False, cluster["logs"] / "worker2.log").start()
    cluster["nodes"].append(extra)
    wait_nodes(cluster["address"], 3)
    removed = threading.Event()

    def kill_a_node(progress):
        if not removed.is_set():  # after the first commit: the job is half-way
            removed.set()
            extra.stop()  # SIGKILL to the node's process group

    first_error = None
    try:
        first = backfill([str(videos)], archive=str(archive), ray_address=cluster["address"],
                         workers=2, files_per_commit=1, progress=kill_a_node)
    except Exception as e:  # the job may fail with the node, or Ray may retry elsewhere
        first_error = e
        first = None
    assert removed.is_set()
    partial = rows_of(archive)  # no duplicates even in a cut-short run
    assert set(partial) <= set(reference)

    print(f"first run: {first or first_error!r}; rows kept: {len(partial)}")
    second = backfill([str(videos)], archive=str(archive), ray_address=cluster["address"],
                      workers=1)
    print(f"re-run: {second}")
    done_first = first.files_indexed if first is not None else 0
    assert second.files_skipped + second.files_indexed == N_FILES, (first_error, second)
    assert second.files_skipped >= min(done_first, 1)
    assert_same_rows(rows_of(archive), reference)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        backfill([str(tmp_path / "nope.mp4")], archive=str(tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        backfill([str(tmp_path / "*.mkv")], archive=str(tmp_path / "a"))


def test_unreachable_ray_address_is_named(videos, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(BackfillError, match="127.0.0.1:1"):
        backfill([str(videos)], archive=str(tmp_path / "a"), ray_address="127.0.0.1:1")
    assert time.monotonic() - t0 < 30
    with pytest.raises(ValueError, match="HOST:PORT"):
        backfill([str(videos)], archive=str(tmp_path / "a"), ray_address="nonsense")
    assert not (tmp_path / "a").exists()  # nothing created before the address was checked


def test_bad_archive_uri_is_named(videos):
    with pytest.raises(ValueError, match="ftp://"):
        backfill([str(videos)], archive="ftp://host/archive")
    with pytest.raises(ValueError, match="names no bucket"):
        backfill([str(videos)], archive="s3://")


def test_cli_backfill_errors(videos, tmp_path, capsys):
    from pystream.cli import main

    assert main(["backfill", str(tmp_path / "missing.mp4"), "--archive", str(tmp_path)]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    code = main(["backfill", str(videos), "--archive", str(tmp_path / "a"), "--ray",
                 "127.0.0.1:1"])
    assert code == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in capsys.readouterr().err
