"""SIGHUP reload (pystream watch / pystreamd): the indexer drains and restarts with the new
configuration, keeping the loaded model when the model settings did not change."""

import logging
import os
import signal

import pytest
import yaml

from pystream import cli
from pystream.engine import model_settings
from pystream.config import parse_config


@pytest.fixture(autouse=True)
def _restore_process_state():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigs = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for s, h in sigs.items():
        signal.signal(s, h)


def _write(path, tmp_path, **over):
    d = {"archive": str(tmp_path / "a"), "state_dir": str(tmp_path / "s"),
         "http": {"enabled": False}, "log": {"level": "ERROR", "format": "text"},
         "sources": [{"type": "folder", "name": "nas", "path": str(tmp_path / "in")}]}
    d.update(over)
    path.write_text(yaml.safe_dump(d))


def test_sighup_keeps_the_model_unless_its_settings_change(monkeypatch, tmp_path):
    config = tmp_path / "c.yaml"
    _write(config, tmp_path)
    runs = []  # (model passed in, config) per indexer
    # What each run does before it returns: the config file it leaves and the signal it sends.
    script = [(dict(writer={"batch_rows": 7}), signal.SIGHUP),   # model settings unchanged
              (dict(threads=1), signal.SIGHUP),                  # a model setting changed
              ("broken: [", signal.SIGHUP),                      # rejected: keep the old one
              (None, signal.SIGTERM)]

    class FakeIndexer:
        def __init__(self, cfg, model=None, **kw):
            self.cfg, self.sources, self.model_id = cfg, [], "fake"
            self.model = model if model is not None else object()  # "loading" a new one
            self.batch_latency_observer = None
            runs.append((model, cfg, self.model))

        def start(self):
            pass

        def stop(self):
            pass

        def status(self):
            return {}

        def wait(self):
            over, sig = script[len(runs) - 1]
            if isinstance(over, str):
                config.write_text(over)
            elif over is not None:
                _write(config, tmp_path, **over)
            os.kill(os.getpid(), sig)
            return 0

    monkeypatch.setattr("pystream.pipeline.Indexer", FakeIndexer)
    assert cli.run_service(str(config)) == 0
    assert len(runs) == 4
    assert runs[0][0] is None  # first start loads the model
    assert runs[1][0] is runs[0][2] and runs[1][1].writer.batch_rows == 7  # kept, new config
    assert runs[2][0] is None and runs[2][1].threads == 1  # model settings changed: reloaded
    assert runs[3][0] is runs[2][2] and runs[3][1].threads == 1  # bad config: old one, same model


def test_model_settings():
    a = parse_config({"writer": {"batch_rows": 3}})
    assert model_settings(a) == model_settings(parse_config({}))
    assert model_settings(a) != model_settings(parse_config({"merge": {"preset": "fast"}}))
    assert model_settings(a) != model_settings(parse_config({"device": "cuda"}))
