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
    assert cfg.model == "shipped-tempme" and cfg.sample_fps == 1.0 and cfg.sources == []
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


def test_missing_folder_is_not_a_config_error(tmp_path):
    # An unmounted share: the daemon starts and shows "waiting: folder missing" in status
    # (tests/test_folder_waiting.py); only something that is not a folder is refused.
    cfg = parse_config({"sources": [{"type": "folder", "name": "a", "path": "/nope/x"}]})
    assert cfg.sources[0].path == "/nope/x"
    (tmp_path / "f.mp4").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"sources\.0\.path: '.*f\.mp4' is not a folder"):
        parse_config({"sources": [{"type": "folder", "name": "a", "path": str(tmp_path / "f.mp4")}]})
    with pytest.raises(ConfigError, match=r"sources\.0\.patterns"):
        parse_config({"sources": [{"type": "folder", "name": "a", "path": "/x", "patterns": []}]})


def test_missing_paths_and_bad_sources(tmp_path):
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


# ----------------------------------------------------------------------------- YAML 1.1 booleans

def _choice_fields(model, prefix=()):
    """(path, model class, field name, choices) for every str choice (Literal) in the config."""
    import typing

    from pydantic import BaseModel

    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        args = [ann]
        while args:
            a = args.pop()
            origin = typing.get_origin(a)
            if origin is typing.Literal:
                choices = typing.get_args(a)
                if name != "type" and all(isinstance(c, str) for c in choices):
                    out.append((prefix + (name,), model, name, choices))
            elif isinstance(a, type) and issubclass(a, BaseModel):
                out.extend(_choice_fields(a, prefix + (name,)))
            else:
                args.extend(typing.get_args(a))
    return out


_MINIMAL = {"FolderSourceConfig": {"type": "folder", "name": "a", "path": "/mnt/share"},
            "StreamSourceConfig": {"type": "stream", "name": "a", "url": "rtsp://x/1"},
            "FileSourceConfig": {"type": "file", "name": "a", "path": __file__}}


def test_every_choice_spelled_like_a_yaml_boolean_works_unquoted():
    from pystream.config import YAML_BOOL_WORDS, Config

    fields = _choice_fields(Config)
    names = {".".join(p) for p, *_ in fields}
    # The walk finds the choices (else this test would check nothing).
    assert {"merge.preset", "log.level", "log.format", "sources.fallback_start"} <= names
    words = {w: flag for flag, ws in YAML_BOOL_WORDS.items() for w in ws}
    checked = []
    for path, model, name, choices in fields:
        for choice in choices:
            for spelling in {choice, choice.lower(), choice.upper(), choice.capitalize()}:
                loaded = yaml.safe_load(f"v: {spelling}")["v"]  # what YAML makes of it, unquoted
                if not isinstance(loaded, bool):
                    continue
                assert words[choice.lower()] is loaded
                data = dict(_MINIMAL.get(model.__name__, {}), **{name: loaded})
                assert getattr(model.model_validate(data), name) == choice, (path, spelling)
                checked.append((".".join(path), spelling))
    assert ("merge.preset", "off") in checked


def test_preset_off_unquoted_in_a_yaml_file(tmp_path):
    for text in ("merge: {preset: off}\n", "merge:\n  preset: off\n", "merge: off\n",
                 "merge: {preset: Off, imgme_r: 1}\n"):
        cfg = load_config(_write(tmp_path, text))
        assert cfg.merge.preset == "off", text
    assert load_config(_write(tmp_path, "merge: {preset: 'off'}\n")).merge.preset == "off"


def test_a_yaml_boolean_that_is_no_choice_names_the_problem(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "merge: {preset: yes}\n"))
    msg = str(e.value)
    assert "merge.preset" in msg and "'default', 'fast' or 'off'" in msg and "quote" in msg
    with pytest.raises(ConfigError, match=r"log\.format.*YAML reads an unquoted"):
        load_config(_write(tmp_path, "log: {format: no}\n"))


def test_stream_options_take_unquoted_numbers_and_booleans(tmp_path):
    p = _write(tmp_path, "sources:\n- {type: stream, name: cam, url: 'rtsp://x/1',\n"
                         "   options: {rtsp_transport: tcp, stimeout: 5000000, rtsp_flags: on,"
                         " probesize: 1.5}}\n")
    assert load_config(p).sources[0].options == {"rtsp_transport": "tcp", "stimeout": "5000000",
                                                 "rtsp_flags": "1", "probesize": "1.5"}


def test_video_patterns_have_one_definition():
    from pystream.config import VIDEO_PATTERNS, FolderSourceConfig
    from pystream.sources.folder import DEFAULT_PATTERNS, FolderSource

    assert DEFAULT_PATTERNS is VIDEO_PATTERNS
    assert FolderSourceConfig(type="folder", name="a", path="/x").patterns == list(VIDEO_PATTERNS)
    assert FolderSource("a", "/x").patterns == VIDEO_PATTERNS
