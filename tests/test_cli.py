"""The `pystream` command line, run as a subprocess (`python -m pystream ...`)."""

import json
import subprocess
import sys

import pytest

from test_pipeline_fixtures import REPO, env_for_subprocess, make_model_dir, write_config, write_video


def run(*args, timeout=240):
    p = subprocess.run([sys.executable, "-m", "pystream", *map(str, args)], capture_output=True,
                       text=True, env=env_for_subprocess(), cwd=str(REPO), timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = make_model_dir(d / "model")
    vids = d / "videos"
    vids.mkdir()
    write_video(vids / "a.mp4", 64, seed=1)
    write_video(vids / "b.ts", 40, seed=2)
    (vids / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3 not really matroska")
    return d, model, vids


def test_index_search_status(setup):
    d, model, vids = setup
    arc = d / "arc"
    rc, out, err = run("index", vids, "--archive", arc, "--model", model, "--source", "disk")
    assert rc == 0, err
    assert "indexed 2 file(s)" in out and "1 error(s)" in out
    assert "broken.mkv" in err and "Traceback" not in err
    # Resumable / idempotent: a second run indexes nothing new.
    rc, out, err = run("index", vids, "--archive", arc, "--model", model, "--source", "disk")
    assert rc == 0 and "indexed 0 file(s) (2 already done)" in out, out + err

    rc, out, err = run("search", "a red circle", "--archive", arc, "--model", model, "-k", "3",
                       "--json")
    assert rc == 0, err
    hits = json.loads(out)
    assert len(hits) == 3 and all(h["source"] == "disk" for h in hits)
    assert all(h["end"] > h["start"] for h in hits)
    rc, out, _ = run("search", "a red circle", "--archive", arc, "--model", model, "-k", "2",
                     "--source", "other")
    assert rc == 0 and "no results" in out
    rc, out, _ = run("search", "red", "--archive", arc, "--model", model, "-k", "2")
    assert rc == 0 and "disk" in out and (".mp4" in out or ".ts" in out)

    rc, out, err = run("status", "--state-dir", f"{arc}.state", "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["sources"]["disk"]["rows"] > 0 and s["sources"]["disk"]["errors"] == 1
    rc, out, _ = run("status", "--state-dir", f"{arc}.state")
    assert rc == 0 and "disk" in out and "ROWS" in out


def test_clear_errors_without_traceback(setup, tmp_path):
    d, model, vids = setup
    rc, _, err = run("search", "x", "--archive", tmp_path / "missing", "--model", model)
    assert rc == 2 and "no pystream archive" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("archive: x\nsorces: []\n")
    rc, _, err = run("watch", "-c", bad)
    assert rc == 2 and "unknown key 'sorces'" in err and str(bad) in err and "Traceback" not in err
    rc, _, err = run("status", "--state-dir", tmp_path / "nostate")
    assert rc == 2 and "has not run" in err
    rc, _, err = run("index", tmp_path / "nothing-here", "--archive", tmp_path / "a")
    assert rc == 2 and "no such file" in err
    rc, _, err = run("index", vids, "--archive", tmp_path / "a", "--model", tmp_path / "nomodel")
    assert rc == 2 and "does not exist" in err and "Traceback" not in err
    cfg = write_config(tmp_path / "c.yaml", archive=tmp_path / "a", state_dir=tmp_path / "s",
                       model=model)
    rc, _, err = run("watch", "-c", cfg)
    assert rc == 2 and "no sources" in err
