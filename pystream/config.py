"""The daemon's YAML configuration: pydantic models, validated with messages that name the file
and the key (unknown keys are errors, not silently ignored: a typo like `stabel_s` would
otherwise quietly run with the default).

    from pystream.config import load_config

    cfg = load_config("config/default.yaml")           # raises ConfigError, naming file and key
    cfg = load_config(None)                             # the embedded config/default.yaml
    print(cfg.model, cfg.merge.preset, cfg.archive)

Relative paths (archive, state_dir, folder paths) are taken relative to the current directory;
the systemd unit uses absolute paths.

YAML 1.1 (PyYAML) reads unquoted off / on / no / yes as booleans, so every choice whose
spellings include one of them takes the boolean too (`merge: {preset: off}` works unquoted).
A watched folder that does not exist (yet) is not an error here: an unmounted share is a
runtime state ("waiting: folder missing" in `pystream status`), indexed once it appears.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

def _default_config_path() -> Path:
    """config/default.yaml: the copy packaged into the wheel (setup.py's build_py puts it at
    pystream/_data/default.yaml) when installed, else the source checkout's own file."""
    here = Path(__file__).resolve().parent
    packaged = here / "_data" / "default.yaml"
    return packaged if packaged.is_file() else here.parent / "config" / "default.yaml"


DEFAULT_CONFIG = _default_config_path()
SYSTEM_CONFIG = Path("/etc/pystream/config.yaml")


# The one definition of the video files pystream picks up (folders, `pystream index DIR`).
VIDEO_PATTERNS = ("*.mp4", "*.mkv", "*.ts", "*.mov", "*.avi", "*.webm", "*.m4v")

# How YAML 1.1 spells booleans (PyYAML's resolver): what an unquoted enum value can turn into.
YAML_BOOL_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


def _yaml_bool_to_choice(choices: tuple):
    """A before-validator: a bool that YAML made of one of `choices` becomes that choice."""
    by_bool = {}
    for flag, words in YAML_BOOL_WORDS.items():
        hits = [c for c in choices if isinstance(c, str) and c.lower() in words]
        if len(hits) == 1:
            by_bool[flag] = hits[0]

    def convert(value):
        if isinstance(value, bool) and value in by_bool:
            return by_bool[value]
        return value

    return convert


def Choice(*choices: str):  # noqa: N802 - used like a type: Choice("default", "fast", "off")
    """Literal[choices], also accepting the boolean YAML reads an unquoted choice as."""
    return Annotated[Literal[choices], BeforeValidator(_yaml_bool_to_choice(choices))]


def _option_value(value):
    """libav option values are strings; YAML gives numbers and booleans for unquoted ones."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- sources

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"  # no '|': it separates the fields of row ids


def _duration(value):
    if value is None:
        return None
    from .retention import parse_duration

    return parse_duration(value)


def _size(value):
    if value is None:
        return None
    from .retention import parse_size

    return parse_size(value)


# A duration: seconds, or a number with a unit s/m/h/d/w ("30d", "36h"); a size: bytes, or a
# number with KB/MB/GB/TB ("500GB"). Stored as seconds / bytes.
Duration = Annotated[Optional[float], BeforeValidator(_duration)]
Size = Annotated[Optional[int], BeforeValidator(_size)]


class SourceRetentionConfig(_Strict):
    """A source's own age limit (overrides the top-level retention.max_age for its rows)."""
    max_age: Duration = None

    @property
    def max_age_s(self) -> Optional[float]:
        return self.max_age


class _SourceBase(_Strict):
    name: str = Field(pattern=_NAME_PATTERN, max_length=128)
    fps: Optional[float] = Field(default=None, gt=0, le=60,
                                 description="sample rate; default: the top-level sample_fps")
    enabled: bool = True
    retention: Optional[SourceRetentionConfig] = None


class FolderSourceConfig(_SourceBase):
    type: Literal["folder"]
    path: str
    patterns: List[str] = Field(default_factory=lambda: list(VIDEO_PATTERNS))
    recursive: bool = True
    poll: bool = False  # polling observer, for network filesystems (no inotify there)
    stable_s: float = Field(default=2.0, ge=0)  # size unchanged this long = file complete
    scan_interval_s: float = Field(default=30.0, gt=0)  # reconciliation scan period
    poll_interval_s: float = Field(default=1.0, gt=0)  # polling observer period (poll: true)
    ignore_hidden: bool = True  # dot-files: rsync/ffmpeg temp names
    # Start time of a recording: its container creation_time; without one, "zero"
    # (file-relative seconds) or "mtime" (mtime minus duration: it ended when last written).
    fallback_start: Choice("zero", "mtime") = "zero"

    @field_validator("path")
    @classmethod
    def _folder_path(cls, v: str) -> str:
        # A folder that does not exist yet (an unmounted share) is a runtime state, not a
        # config error; something else at that path is.
        if not v.strip():
            raise ValueError("folder path is empty")
        p = Path(v).expanduser()
        if p.exists() and not p.is_dir():
            raise ValueError(f"{v!r} is not a folder")
        return str(p.resolve())

    @field_validator("patterns")
    @classmethod
    def _some_patterns(cls, v: List[str]) -> List[str]:
        if not v or not all(isinstance(p, str) and p.strip() for p in v):
            raise ValueError("patterns must be a non-empty list of glob patterns, e.g. ['*.mp4']")
        return v


class RecordConfig(_Strict):
    """A live stream's recording (pystream/sources/recorder.py): the packets it receives,
    remuxed without re-encoding into rolling segment files DIR/SOURCE/<UTC time>.ts."""
    dir: str
    segment_s: float = Field(default=60.0, ge=1, le=3600)  # a new file at the first keyframe after
    max_age_h: Optional[float] = Field(default=24.0, gt=0)  # delete segments older than this
    max_size_mb: Optional[float] = Field(default=None, gt=0)  # ... and the oldest past this total

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("record dir is empty")
        p = Path(v).expanduser()
        if p.exists() and not p.is_dir():
            raise ValueError(f"{v!r} is not a folder")
        return str(p.resolve())


class StreamSourceConfig(_SourceBase):
    type: Literal["stream"]
    url: str
    # libav options, e.g. rtsp_transport: tcp (unquoted numbers / booleans become strings)
    options: Dict[str, Annotated[str, BeforeValidator(_option_value)]] = Field(default_factory=dict)
    open_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    stall_timeout_s: float = Field(default=15.0, gt=0)  # no frame this long = dead, reconnect
    resync_s: float = Field(default=5.0, gt=0)  # re-anchor pts to the wall clock past this drift
    queue_frames: int = Field(default=256, ge=1)
    realtime: Optional[bool] = None  # pace reads to pts (default: only for file:// URLs)
    # A low-resolution substream to index instead of `url` (rows still point at `url`).
    index_url: Optional[str] = None
    # auto: skip non-key frames in the decoder when keyframes come at least as often as
    # samples; all: decode every frame; keyframes: always keyframes only.
    decode: Literal["auto", "all", "keyframes"] = "auto"
    decode_threads: int = Field(default=1, ge=0)  # libav threads per camera; 0 = libav's choice
    decode_nice: int = Field(default=10, ge=0, le=19)  # reader threads' niceness (sources/stream.py)
    record: Optional[RecordConfig] = None  # keep the stream's video in rolling segment files

    @field_validator("url", "index_url")
    @classmethod
    def _has_scheme(cls, v):
        if v is not None and "://" not in v:
            raise ValueError(f"{v!r} is not a URL (rtsp://, rtmp://, http(s)://, udp://, srt://, file://)")
        return v


class FileSourceConfig(_SourceBase):
    type: Literal["file"]
    path: str
    start_time: Optional[float] = None  # seconds since the epoch; default: metadata / fallback
    fallback_start: Choice("zero", "mtime") = "zero"

    @field_validator("path")
    @classmethod
    def _file_exists(cls, v: str) -> str:
        p = Path(v).expanduser()
        if not p.is_file():
            raise ValueError(f"file {v!r} does not exist")
        return str(p.resolve())


SourceConfig = Annotated[Union[FolderSourceConfig, StreamSourceConfig, FileSourceConfig],
                         Field(discriminator="type")]


# ----------------------------------------------------------------------------- the rest

from .alerts.config import AlertsConfig, TriggerConfig, check_triggers  # noqa: E402

class MergeConfig(_Strict):
    """TempMe merge schedule: a preset plus optional overrides (see pystream.model.schedule)."""
    preset: Choice("default", "fast", "off") = "default"
    imgme_r: Optional[int] = Field(default=None, ge=0)
    clip_groups: Optional[List[int]] = None
    cross_pct: Optional[int] = Field(default=None, ge=0, lt=100)
    intra_pct: Optional[int] = Field(default=None, ge=0, lt=100)
    final_pct: Optional[int] = Field(default=None, ge=0, lt=100)
    proportional_attention: Optional[bool] = None

    def schedule_dict(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ReuseConfig(_Strict):
    """Static-patch reuse (pystream/model/reuse.py): a patch whose input embedding moved less
    than ``threshold`` (relative L2) since it was last computed reuses its cached keys, values
    and outputs in the per-frame layers. 0 turns it off (exact TempMe)."""
    threshold: float = Field(default=0.1, ge=0, le=10)
    refresh_chunks: int = Field(default=8, ge=1)  # recompute every patch this often

    def settings(self):
        from .model.reuse import ReuseSettings

        return ReuseSettings(self.threshold, self.refresh_chunks)


class BatchingConfig(_Strict):
    max_batch_chunks: int = Field(default=16, ge=1)
    # A lone quiet source waits at most this long for other sources' chunks to batch with.
    max_wait_s: float = Field(default=0.1, ge=0)
    queue_chunks: int = Field(default=64, ge=1)  # backpressure on decoders


class WriterConfig(_Strict):
    batch_rows: int = Field(default=256, ge=1)
    # upsert: every commit is a merge_insert on the row id (one writer per archive); append: a
    # plain Append (what several nodes on one archive need), replayed rows after a crash are
    # checked and dropped; auto: append when node.id is set, else upsert.
    mode: Literal["auto", "upsert", "append"] = "auto"
    flush_interval_s: float = Field(default=0.5, gt=0)
    optimize_interval_s: float = Field(default=60.0, gt=0)
    index_min_rows: int = Field(default=4096, ge=256)
    # Rows waiting for a commit before the encoder (then the sources) is held back; 0 = no bound.
    max_pending_rows: int = Field(default=4096, ge=0)
    retry_max_s: float = Field(default=30.0, gt=0)  # a failing commit's retry backoff cap
    keep_versions_s: float = Field(default=3600.0, ge=0)  # old LanceDB versions kept for readers


class NodeConfig(_Strict):
    """Several daemons writing one archive (pystream/nodes.py). ``id`` null: a single node."""
    id: Optional[str] = Field(default=None, pattern=_NAME_PATTERN, max_length=128)
    # This node runs maintenance (optimize/compaction, index refresh, version cleanup,
    # retention): exactly one node of an archive should (the others only append).
    maintenance: bool = True
    heartbeat_s: float = Field(default=5.0, gt=0)  # status published next to the archive
    stale_s: float = Field(default=30.0, gt=0)  # a node silent this long is not live


class RetentionConfig(_Strict):
    """How long rows stay (pystream.retention): max_age for every source without its own
    (sources[].retention.max_age), max_size for the whole table; null = no limit."""
    max_age: Duration = None
    max_size: Size = None
    interval_s: float = Field(default=600.0, gt=0)  # how often the writer applies it

    @property
    def max_age_s(self) -> Optional[float]:
        return self.max_age

    @property
    def max_size_bytes(self) -> Optional[int]:
        return self.max_size


class DiskConfig(_Strict):
    # Warn (log, status, /healthz, /metrics) when the archive's or state_dir's filesystem has
    # less free space than this.
    warn_free_mb: float = Field(default=1024.0, ge=0)


class HttpConfig(_Strict):
    enabled: bool = True
    # Any address but a loopback one needs a token (the server refuses to start without one).
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    # Every route but /healthz then needs it (Authorization: Bearer TOKEN, or the login form's
    # cookie). Also from $PYSTREAM_HTTP_TOKEN, a file (token_file, $PYSTREAM_HTTP_TOKEN_FILE) or
    # systemd's credential `http-token` ($CREDENTIALS_DIRECTORY/http-token).
    token: Optional[str] = Field(default=None, min_length=16, max_length=256)
    token_file: Optional[str] = None


class MetricsConfig(_Strict):
    port: Optional[int] = Field(default=None, ge=0, le=65535)  # separate exporter; /metrics on http too


class LogConfig(_Strict):
    level: Choice("DEBUG", "INFO", "WARNING", "ERROR") = "INFO"
    format: Choice("json", "text") = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.upper() if isinstance(v, str) else v


class Config(_Strict):
    archive: str = "./pystream-data/archive"  # LanceDB directory or URI
    table: str = "clips"
    # Object store options for an s3:// (gs://, az://) archive, passed to LanceDB/Lance:
    # aws_endpoint, aws_access_key_id, aws_secret_access_key, aws_region, allow_http, ...
    storage_options: Dict[str, Annotated[str, BeforeValidator(_option_value)]] = Field(
        default_factory=dict)
    node: NodeConfig = Field(default_factory=NodeConfig)
    state_dir: str = "./pystream-data/state"  # checkpoints + status.json
    # 'shipped-tempme' (tiny-clip + its TempMe adapter: knows which way things move),
    # 'shipped' (alias 'shipped-base': tiny-clip alone, training-free TempMe), a Hugging Face
    # id, a local model directory, an adapter directory (pystream finetune --out), or a mapping
    # {base: ..., adapter: DIR}; stored as one string (a mapping as canonical JSON).
    model: str = "shipped-tempme"
    device: str = "cpu"
    threads: Optional[int] = Field(default=None, ge=1)  # torch intra-op threads
    merge: MergeConfig = Field(default_factory=MergeConfig)
    # Dense layers in bf16 (fp32 accumulation) where the hardware has it: auto | fp32 | bf16.
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    reuse: ReuseConfig = Field(default_factory=ReuseConfig)
    sample_fps: float = Field(default=1.0, gt=0, le=60)
    hop_chunks: int = Field(default=1, ge=1)
    coarse_windows: int = Field(default=15, ge=0)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    writer: WriterConfig = Field(default_factory=WriterConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    disk: DiskConfig = Field(default_factory=DiskConfig)
    sources: List[SourceConfig] = Field(default_factory=list)
    http: HttpConfig = Field(default_factory=HttpConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    # Standing queries: alerts when a committed window matches (pystream/alerts/).
    triggers: List[TriggerConfig] = Field(default_factory=list)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _model_ref(cls, v):
        from .model.adapter import model_ref_string

        return model_ref_string(v)

    @field_validator("merge", mode="before")
    @classmethod
    def _preset_string(cls, v):
        if v is False:  # `merge: off`, unquoted
            return {"preset": "off"}
        return {"preset": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _unique_names(self):
        seen = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"two sources are named {s.name!r}; names must be unique")
            seen.add(s.name)
        check_triggers(self.triggers, [s.name for s in self.sources])
        return self

    def writer_append(self) -> bool:
        return self.writer.mode == "append" or (self.writer.mode == "auto"
                                                and self.node.id is not None)

    def source_fps(self, source) -> float:
        return source.fps or self.sample_fps

    def enabled_sources(self):
        return [s for s in self.sources if s.enabled]


# ----------------------------------------------------------------------------- loading

def _format_errors(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in
                                                          ("folder", "stream", "file")))
        if e["type"] == "extra_forbidden":
            key = e["loc"][-1]
            parent = ".".join(str(p) for p in e["loc"][:-1]) or "top level"
            lines.append(f"  unknown key {key!r} in {parent}")
        elif e["type"] == "union_tag_invalid" or e["type"] == "union_tag_not_found":
            lines.append(f"  {loc}: source 'type' must be one of folder, stream, file")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            value = e.get("input")
            if isinstance(value, bool):
                words = "/".join(YAML_BOOL_WORDS[value])
                msg += (f" (got {str(value).lower()}: YAML reads an unquoted {words} as a "
                        "boolean; quote the value)")
            elif e["type"] in ("literal_error", "string_type", "float_parsing", "int_parsing",
                               "bool_parsing") and value is not None and not isinstance(value, (dict, list)):
                msg += f" (got {value!r})"
            lines.append(f"  {loc or 'top level'}: {msg}")
    return f"invalid configuration in {where}:\n" + "\n".join(lines)


def parse_config(data: Any, where: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {where}: expected a mapping at the top level, "
                          f"got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, where)) from None


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> Config:
    """Load and validate a YAML config (None = the embedded default). `overrides` are applied
    on top of the file's top-level keys (CLI flags)."""
    where = str(path) if path is not None else str(DEFAULT_CONFIG)
    p = Path(where).expanduser()
    if not p.is_file():
        raise ConfigError(f"configuration file {where} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None
    if overrides:
        data = dict(data or {}, **overrides)
    return parse_config(data, where)
