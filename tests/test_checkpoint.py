"""CheckpointStore: round trips, folder bookkeeping, and atomicity under kill -9."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pystream.checkpoint import CheckpointStore

CHECKPOINT_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "pystream", "checkpoint.py")


def state_for(seq: int) -> bytes:
    """Deterministic, large-ish state (256 KB) so a kill often lands mid-write."""
    return hashlib.sha256(str(seq).encode()).digest() * 8192


def test_round_trip_and_reopen(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.get("cam1") is None and store.get_state("cam1") is None
    store.put("cam1", {"window_end": 12.5, "chunk_seq": 3}, state_bytes=b"\x00state")
    store.put("cam2", {"window_end": 1.0})
    store.close()

    store = CheckpointStore(tmp_path)
    assert store.get("cam1") == {"window_end": 12.5, "chunk_seq": 3}
    assert store.get_state("cam1") == b"\x00state"
    assert store.get_with_state("cam2") == ({"window_end": 1.0}, None)
    assert store.sources() == ["cam1", "cam2"]
    # A put without state clears the old state: progress and state always match.
    store.put("cam1", {"window_end": 16.5, "chunk_seq": 4})
    assert store.get_state("cam1") is None


def test_unserialisable_progress_leaves_old_value(tmp_path):
    store = CheckpointStore(tmp_path)
    store.put("cam1", {"seq": 1})
    with pytest.raises(TypeError):
        store.put("cam1", {"seq": object()})
    assert store.get("cam1") == {"seq": 1}


def test_files_done(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.files_done("folder") == set()
    store.mark_file_done("folder", "/rec/a.mp4", 1000, 1700000000.5)
    store.mark_file_done("folder", "/rec/b.mp4", 2000, 1700000001.0)
    store.mark_file_done("other", "/rec/a.mp4", 1000, 1700000000.5)
    assert store.files_done("folder") == {("/rec/a.mp4", 1000, 1700000000.5),
                                          ("/rec/b.mp4", 2000, 1700000001.0)}
    assert store.is_file_done("folder", "/rec/a.mp4", 1000, 1700000000.5)
    # The file grew (a recorder appended to it): it is not done under its new identity.
    assert not store.is_file_done("folder", "/rec/a.mp4", 5000, 1700000009.0)
    store.mark_file_done("folder", "/rec/a.mp4", 5000, 1700000009.0)
    assert ("/rec/a.mp4", 5000, 1700000009.0) in store.files_done("folder")
    assert len(store.files_done("folder")) == 2


# The child loads checkpoint.py directly so the test does not pay for the package's imports.
CHILD = textwrap.dedent("""
    import hashlib, importlib.util, sys
    spec = importlib.util.spec_from_file_location("checkpoint", {module!r})
    checkpoint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checkpoint)
    store = checkpoint.CheckpointStore({dir!r})
    previous = store.get("cam")
    seq = 0 if previous is None else previous["seq"] + 1
    if previous is not None:  # recovery: redo the step after the last put (idempotent)
        store.mark_file_done("cam", "/rec/%d.mp4" % previous["seq"], previous["seq"],
                             float(previous["seq"]))
    print("ready", flush=True)
    while True:
        state = hashlib.sha256(str(seq).encode()).digest() * 8192
        store.put("cam", {{"seq": seq, "digest": hashlib.sha256(state).hexdigest()}}, state)
        store.mark_file_done("cam", "/rec/%d.mp4" % seq, seq, float(seq))
        seq += 1
""")


def test_survives_kill_9_mid_write(tmp_path):
    last_seq = -1
    for attempt in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(module=CHECKPOINT_PY, dir=str(tmp_path))],
            stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.07 * attempt)  # land the kill at different points of the loop
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()

        store = CheckpointStore(tmp_path)
        progress, state = store.get_with_state("cam")
        assert progress is not None, "no checkpoint survived"
        # Progress and state come from the same put: never torn, never mismatched.
        assert state == state_for(progress["seq"])
        assert progress["digest"] == hashlib.sha256(state).hexdigest()
        assert progress["seq"] > last_seq  # each run made progress and none was lost
        done = store.files_done("cam")
        # Files are marked after the put, so at most the last file lags the progress.
        assert {("/rec/%d.mp4" % s, s, float(s)) for s in range(progress["seq"])} <= done
        last_seq = progress["seq"]
        store.close()
