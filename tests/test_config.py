"""Configuration validation: clear messages naming the file and the key."""

import pytest
import yaml

from pystream.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config


def _write(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_embedded_default_is_valid():
    cfg = load_config(None)
    assert cfg.model == "shipped" and cfg.sample_fps == 1.0 and cfg.sources == []
    assert cfg.merge.schedule_dict() == {"preset": "default"}
    assert str(DEFAULT_CONFIG).endswith("config/default.yaml")


def test_unknown_key_names_key_and_file(tmp_path):
    p = _write(tmp_path, {"archive": "a", "writer": {"batch_rowz": 3}, "colour": "red"})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "'batch_rowz'" in msg and "writer" in msg and "'colour'" in msg


def test_unknown_key_in_a_source(tmp_path):
    p = _write(tmp_path, {"sources": [{"type": "folder", "name": "a", "path": str(tmp_path),
                                       "stabel_s": 1}]})
    with pytest.raises(ConfigError, match=r"unknown key 'stabel_s' in sources\.0"):
        load_config(p)


def test_wrong_types(tmp_path):
    with pytest.raises(ConfigError, match=r"sample_fps.*number"):
        parse_config({"sample_fps": "fast"})
    with pytest.raises(ConfigError, match="batching.max_batch_chunks"):
        parse_config({"batching": {"max_batch_chunks": 0}})
    with pytest.raises(ConfigError, match="merge.preset"):
        parse_config({"merge": "turbo"})
    with pytest.raises(ConfigError, match="top level"):
        load_config(_write(tmp_path, "- just\n- a list\n"))


def test_missing_paths_and_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"sources\.0\.path: folder '/nope/x' does not exist"):
        parse_config({"sources": [{"type": "folder", "name": "a", "path": "/nope/x"}]})
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config({"sources": [{"type": "file", "name": "a", "path": "/nope.mp4"}]})
    with pytest.raises(ConfigError, match="not a URL"):
        parse_config({"sources": [{"type": "stream", "name": "a", "url": "camera-1"}]})
    with pytest.raises(ConfigError, match="type"):
        parse_config({"sources": [{"type": "webcam", "name": "a"}]})
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"sources": [{"type": "folder", "name": "a", "path": str(tmp_path)}] * 2})
    with pytest.raises(ConfigError, match="name"):
        parse_config({"sources": [{"type": "folder", "name": "a|b", "path": str(tmp_path)}]})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [1, 2\n"))


def test_sources_and_overrides(tmp_path):
    p = _write(tmp_path, {"sample_fps": 2, "merge": {"preset": "fast", "cross_pct": 40},
                          "sources": [{"type": "folder", "name": "rec", "path": str(tmp_path),
                                       "poll": True},
                                      {"type": "stream", "name": "gate", "url": "rtsp://x/1",
                                       "fps": 4, "options": {"rtsp_transport": "udp"}}]})
    cfg = load_config(p, {"archive": "/tmp/x"})
    assert cfg.archive == "/tmp/x"
    assert cfg.merge.schedule_dict() == {"preset": "fast", "cross_pct": 40}
    folder, stream = cfg.sources
    assert folder.poll and cfg.source_fps(folder) == 2 and cfg.source_fps(stream) == 4
    assert folder.path == str(tmp_path.resolve())
