"""The `triggers:` and `alerts:` configuration keys (pydantic, validated like the rest of the
config: unknown keys are errors naming the key; see pystream/config.py).

    triggers:
      - name: red-square             # unique
        text: "a red square"         # and/or image: example.jpg (both: the mean of the two)
        threshold: 0.4               # cosine similarity in [-1, 1]
        sources: [cam1]              # default: every source
        level: 0                     # 0 / windows (default) or 1 / coarse
        cooldown_s: 30               # matches this close to the last one are the same event
        actions:
          - webhook: http://127.0.0.1:9000/hook
          - mqtt: {host: 127.0.0.1, port: 1883, topic: pystream/alerts}
    alerts: {base_url: "http://nvr.local:8765", thumbnail: both}
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Dict, List, Literal, Optional, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
LEVEL_WORDS = {"windows": 0, "window": 0, "coarse": 1}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WebhookConfig(_Strict):
    """POST the alert as JSON (header Idempotency-Key: the alert's key); 2xx = delivered."""
    url: str
    timeout_s: float = Field(default=5.0, gt=0)
    headers: Dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v

    def target_id(self) -> str:
        return f"webhook:{self.url}"


class MqttConfig(_Strict):
    """Publish the alert as JSON to `topic`; delivered = acknowledged by the broker (qos 1/2)."""
    host: str = Field(min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    topic: str = Field(min_length=1)
    qos: int = Field(default=1, ge=0, le=2)
    retain: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    client_id: Optional[str] = None  # default: pystream-<pid>-<n>
    tls: bool = False
    timeout_s: float = Field(default=5.0, gt=0)  # connect + publish acknowledgement

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError(f"topic {v!r}: a publish topic cannot contain the wildcards + or #")
        return v

    def target_id(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"mqtt{'s' if self.tls else ''}://{user}{self.host}:{self.port}/{self.topic}"


def _webhook_shorthand(v):
    return {"url": v} if isinstance(v, str) else v


class ActionConfig(_Strict):
    """One action: exactly one of `webhook` (a URL, or {url, timeout_s, headers}) or `mqtt`."""
    webhook: Annotated[Optional[WebhookConfig], BeforeValidator(_webhook_shorthand)] = None
    mqtt: Optional[MqttConfig] = None

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("webhook", "mqtt") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an action is exactly one of `webhook: URL` or "
                             "`mqtt: {host, port, topic}`")
        return self

    @property
    def target(self) -> Union[WebhookConfig, MqttConfig]:
        return self.webhook if self.webhook is not None else self.mqtt

    def target_id(self) -> str:
        return self.target.target_id()


def _level(v):
    if isinstance(v, str) and v.strip().lower() in LEVEL_WORDS:
        return LEVEL_WORDS[v.strip().lower()]
    return v


class TriggerConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    text: Optional[str] = None
    image: Optional[str] = None  # an example picture (JPEG, PNG, ...)
    threshold: float  # cosine similarity, in [-1, 1]
    sources: Optional[List[str]] = None  # None: every source
    level: Annotated[int, BeforeValidator(_level)] = Field(default=0, ge=0)
    cooldown_s: float = Field(default=30.0, ge=0)
    actions: List[ActionConfig] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("text")
    @classmethod
    def _some_text(cls, v):
        if v is not None and not v.strip():
            raise ValueError("text is empty")
        return v

    @field_validator("threshold")
    @classmethod
    def _cosine(cls, v: float) -> float:
        if not -1.0 <= v <= 1.0:
            raise ValueError(f"threshold is a cosine similarity, in [-1, 1]; got {v!r}")
        return v

    @field_validator("image")
    @classmethod
    def _image_exists(cls, v):
        if v is None:
            return v
        p = Path(v).expanduser()
        if not p.is_file():
            raise ValueError(f"image file {v!r} does not exist")
        return str(p.resolve())

    @model_validator(mode="after")
    def _text_or_image(self):
        if self.text is None and self.image is None:
            raise ValueError(f"trigger {self.name!r} needs `text:` or `image:` (or both)")
        return self

    def query_fingerprint(self) -> str:
        """What the trigger's embedding depends on (besides the model): text and image bytes."""
        h = hashlib.sha256()
        h.update((self.text or "").encode())
        h.update(b"\0")
        if self.image is not None:
            h.update(Path(self.image).read_bytes())
        return h.hexdigest()[:24]

    def target_ids(self) -> List[str]:
        return list(dict.fromkeys(a.target_id() for a in self.actions))


class AlertsConfig(_Strict):
    """Settings shared by every trigger."""
    # Prefix of the thumbnail and player links in alerts; default http://{http.host}:{http.port}.
    base_url: Optional[str] = None
    # The thumbnail in the payload: base64 (the JPEG inline), url (/thumb/ID), both, none.
    thumbnail: Literal["base64", "url", "both", "none"] = "both"
    backoff_initial_s: float = Field(default=1.0, gt=0)  # retry delay after a failed delivery
    backoff_max_s: float = Field(default=60.0, gt=0)  # ... doubling up to this
    expire_s: float = Field(default=86400.0, gt=0)  # stop retrying an alert this old
    queue_batches: int = Field(default=256, ge=1)  # committed batches waiting for evaluation
    keep_days: float = Field(default=30.0, gt=0)  # the alert log forgets older alerts

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v):
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{v!r} is not an http:// or https:// URL")
            v = v.rstrip("/")
        return v


def check_triggers(triggers: List[TriggerConfig], source_names: List[str]) -> None:
    """Cross-checks (called by Config's validator): unique names, known sources."""
    seen = set()
    for t in triggers:
        if t.name in seen:
            raise ValueError(f"two triggers are named {t.name!r}; names must be unique")
        seen.add(t.name)
        for s in t.sources or []:
            if s not in source_names:
                raise ValueError(f"trigger {t.name!r} names source {s!r}, which is not "
                                 f"configured (sources: {', '.join(source_names) or 'none'})")
