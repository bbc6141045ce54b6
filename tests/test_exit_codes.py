"""Exit status: 2 only for what a restart cannot fix (systemd's RestartPreventExitStatus=2);
transient failures (disk, network share, S3, an unreachable hub) exit 1 so systemd restarts."""

import errno
import logging
import signal

import pytest
import yaml

from pystream import cli
from pystream.model.loader import ModelLoadError
from test_pipeline_fixtures import REPO


@pytest.fixture(autouse=True)
def _restore_process_state():
    """run_service installs signal handlers and replaces the root log handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigs = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for s, h in sigs.items():
        signal.signal(s, h)


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({
        "archive": str(tmp_path / "a"), "state_dir": str(tmp_path / "s"),
        "http": {"enabled": False}, "log": {"level": "ERROR", "format": "text"},
        # A share that is not mounted yet is fine for the config (runtime state).
        "sources": [{"type": "folder", "name": "nas", "path": str(tmp_path / "not-mounted")}],
    }))
    return str(p)


def test_unit_file_matches_the_exit_codes():
    unit = (REPO / "daemon" / "pystream.service").read_text()
    assert "\nRestartPreventExitStatus=2\n" in unit and "\nRestart=on-failure\n" in unit
    assert cli.EXIT_CONFIG == 2 and cli.EXIT_TRANSIENT == 1


@pytest.mark.parametrize("error,code,words", [
    (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left"),
    (OSError(errno.EIO, "LanceError(IO): s3 request failed"), 1, "retried"),
    (PermissionError(errno.EACCES, "Permission denied"), 1, "Permission denied"),
    (ModelLoadError("hub not reachable", transient=True), 1, "hub not reachable"),
    (ModelLoadError("model directory /x does not exist"), 2, "does not exist"),
    (ValueError("table 'clips' stores vectors of dimension 16, but ..."), 2, "dimension 16"),
])
def test_startup_failures(monkeypatch, capsys, config, error, code, words):
    def broken_indexer(*args, **kwargs):
        raise error

    monkeypatch.setattr("pystream.pipeline.Indexer", broken_indexer)
    assert cli.main(["watch", "-c", config]) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    monkeypatch.setattr(cli, "sd_notify", lambda msg: None)
    assert cli.daemon_main(["-c", config]) == code  # pystreamd: one JSON line, same status
    assert words in capsys.readouterr().err


def test_a_bug_is_not_status_2(monkeypatch, config):
    def broken_indexer(*args, **kwargs):
        raise RuntimeError("internal error")

    monkeypatch.setattr("pystream.pipeline.Indexer", broken_indexer)
    with pytest.raises(RuntimeError):  # a traceback and exit status 1 from the interpreter
        cli.main(["watch", "-c", config])


def test_configuration_errors_are_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge: {preset: turbo}\n")
    assert cli.main(["watch", "-c", str(bad)]) == 2
    assert "merge.preset" in capsys.readouterr().err
    assert cli.daemon_main(["-c", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
