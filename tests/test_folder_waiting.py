"""A watched folder that does not exist yet (an unmounted NAS share) is a runtime state: the
daemon starts, `pystream status` shows "waiting: folder missing", and indexing starts when the
folder appears."""

import os
import shutil
import time


from pystream import cli
from pystream.config import load_config
from pystream.pipeline import Indexer
from pystream.status import StatusReporter, read_status
from test_pipeline_fixtures import make_model_dir, write_config, write_video


def _wait(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_missing_folder_waits_then_indexes(tmp_path, capsys):
    model = make_model_dir(tmp_path / "model")
    share = tmp_path / "nas" / "recordings"
    cfg = load_config(write_config(tmp_path / "c.yaml", archive=tmp_path / "arc",
                                   state_dir=tmp_path / "state", model=model, folder=share))
    ix = Indexer(cfg)
    reporter = StatusReporter(cfg.state_dir, ix.status, interval_s=0.2).start()
    ix.start()
    try:
        state = lambda: ix.status()["sources"]["cams"]["state"]  # noqa: E731
        _wait(lambda: state() == "waiting: folder missing", 10, "the waiting state")
        _wait(lambda: (read_status(cfg.state_dir) or {}).get("sources", {}).get("cams", {})
              .get("state") == "waiting: folder missing", 5, "the status file")
        assert cli.main(["status", "--state-dir", cfg.state_dir]) == 0
        out = capsys.readouterr().out
        assert "waiting: folder missing" in out
        s = ix.status()["sources"]["cams"]
        assert "does not exist" in s["last_error"] and ix.status()["running"]

        # The share is mounted: the file is indexed without a restart.
        tmp_video = write_video(tmp_path / "a.mp4", 24, fps=4, seed=5)
        share.mkdir(parents=True)
        shutil.move(tmp_video, share / "a.mp4")
        _wait(lambda: ix.status()["sources"]["cams"]["files_done"] == 1, 60, "the file indexed")
        assert state() != "waiting: folder missing"
        assert ix.status()["sources"]["cams"]["rows"] > 0
    finally:
        ix.stop()
        assert ix.wait() == 0
        reporter.stop()
    assert os.path.isdir(cfg.archive)
