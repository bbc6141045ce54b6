"""Load CLIP models through Hugging Face transformers: a hub id or a local directory.

No model hub is reachable on air-gapped machines, so a hub id first tries the local cache and
then the network, and fails fast with a message that says how to point at a local directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Tuple

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
# CLIP's own pixel statistics; used when a model directory has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do.

    transient: True when trying again later may work (the hub was unreachable while online
    access is allowed); False for a model that is missing, broken or not a CLIP model.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def shipped_model_dir() -> Path:
    """The small CLIP trained by this project on synthetic videos (the offline default)."""
    return Path(__file__).resolve().parent.parent / "assets" / "tiny-clip"


def shipped_adapter_dir() -> Path:
    """The shipped model's TempMe adapter (LoRA + temporal embeddings, adapter.py):
    'shipped-tempme' is tiny-clip with it; 'shipped' (alias 'shipped-base') is tiny-clip alone."""
    return shipped_model_dir() / "adapter"


def resolve_model(name_or_path: str | os.PathLike | None) -> str:
    """'shipped' / 'shipped-base' / 'shipped-tempme' (or None) mean the bundled checkpoint
    (ClipVideoModel.from_pretrained applies shipped-tempme's adapter); anything else is returned
    as given."""
    if name_or_path in (None, "", "shipped", "shipped-base", "shipped-tempme"):
        return str(shipped_model_dir())
    return str(name_or_path)


def load_clip(name_or_path: str | os.PathLike | None = DEFAULT_MODEL) -> Tuple[object, object, dict]:
    """Return (CLIPModel in eval mode, tokenizer or None, pixel stats dict with mean/std).

    ``name_or_path`` is a hub id (e.g. openai/clip-vit-base-patch32), a local directory with
    config.json + weights (+ tokenizer files), or 'shipped' for the bundled model.
    """
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    ref = resolve_model(name_or_path)
    path = Path(ref).expanduser()
    is_local = path.exists() or ref.startswith((".", "/", "~"))
    if is_local:
        if not path.is_dir():
            raise ModelLoadError(f"model directory {path} does not exist")
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} has no config.json: not a Hugging Face model directory")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ModelLoadError(f"{path} has no weights (*.safetensors or *.bin)")
        kwargs = dict(local_files_only=True)
        source = str(path)
    else:
        source = ref
        kwargs = {}
        if _in_hf_cache(ref):
            kwargs = dict(local_files_only=True)
        elif not _hub_reachable():
            raise ModelLoadError(_offline_message(ref, ConnectionError("the hub is not reachable")),
                                 transient=not _offline_env())

    try:
        config = CLIPConfig.from_pretrained(source, **_hub_kwargs(kwargs))
    except ValueError as e:  # a config of another architecture
        raise ModelLoadError(f"{ref}: not a CLIP model ({e}); pystream supports CLIPModel checkpoints") from e
    except Exception as e:
        raise ModelLoadError(_offline_message(ref, e), transient=_network_error(e, is_local)) from e
    if getattr(config, "model_type", "clip") != "clip":
        raise ModelLoadError(
            f"{ref} is a {config.model_type!r} model; pystream's TempMe encoder supports CLIPModel "
            "checkpoints (CLS token, pre-LN ViT)"
        )
    try:
        model = CLIPModel.from_pretrained(source, **_hub_kwargs(kwargs))
    except Exception as e:
        raise ModelLoadError(_offline_message(ref, e), transient=_network_error(e, is_local)) from e
    model.eval()
    tokenizer = None  # vision-only use still works; text queries will say so
    # transformers builds an empty 2-token tokenizer when the files are missing: check first.
    if not is_local or any((path / f).exists() for f in TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **_hub_kwargs(kwargs))
        except Exception:
            tokenizer = None
    return model, tokenizer, _pixel_stats(path if is_local else None)


WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_fingerprints: dict = {}  # (path, size, mtime) -> sha256 of the file: hash each file once


def weights_fingerprint(*dirs) -> str | None:
    """A short content hash of the weight files in ``dirs`` (a checkpoint, then its adapter),
    or None when there are none. The same weights give the same fingerprint wherever they are
    copied, retrained ones another: the archive records it so that a model whose name stayed
    the same but whose weights changed (the shipped model, retrained) is noticed instead of
    silently ranking badly (store.check_fingerprint)."""
    h = hashlib.sha256()
    found = False
    for d in dirs:
        if d is None:
            continue
        # The format transformers loads: safetensors when there are any (a hub snapshot may
        # also hold the same weights as .bin, which a copy need not carry), else .bin.
        files = next((sorted(Path(d).glob(p)) for p in WEIGHT_PATTERNS if any(Path(d).glob(p))),
                     [])
        for f in files:
            found = True
            h.update(f.name.encode() + b"\0" + _file_sha256(f).encode() + b"\n")
    return h.hexdigest()[:16] if found else None


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _fingerprints:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _fingerprints[key] = h.hexdigest()
    return _fingerprints[key]


def weights_dir(ref: str) -> Path | None:
    """The directory holding the weights ``load_clip(ref)`` loads: the directory itself, or the
    hub cache's snapshot of a hub id (None when it is not cached)."""
    path = Path(resolve_model(ref)).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(ref), "config.json")
    except Exception:
        return None
    return Path(found).parent if isinstance(found, str) else None


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _network_error(err: Exception, is_local: bool) -> bool:
    """A failure a later retry may not repeat: the hub, online, unreachable or timing out (not
    a repository that does not exist)."""
    if is_local or _offline_env():
        return False
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, (ConnectionError, TimeoutError)) or any(
                word in type(err).__name__ for word in ("Connect", "Timeout")):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect instead of huggingface_hub's retries (about 30 s offline)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_kwargs(kwargs: dict) -> dict:
    if kwargs.get("local_files_only"):
        return kwargs
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    return dict(kwargs, local_files_only=offline) if offline else kwargs


def _offline_message(ref: str, err: Exception) -> str:
    return (
        f"could not load model {ref!r} from the Hugging Face hub or its cache ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}). On a machine without internet, download "
        "the model elsewhere (e.g. `huggingface-cli download openai/clip-vit-base-patch32 "
        "--local-dir ./clip-b32`), copy the directory here and pass its path instead "
        "(model: /path/to/clip-b32), or use the bundled model with model: shipped."
    )


def _pixel_stats(path: Path | None) -> dict:
    import json

    stats = {"mean": CLIP_MEAN, "std": CLIP_STD}
    if path is not None and (path / "preprocessor_config.json").exists():
        cfg = json.loads((path / "preprocessor_config.json").read_text())
        stats["mean"] = tuple(cfg.get("image_mean", CLIP_MEAN))
        stats["std"] = tuple(cfg.get("image_std", CLIP_STD))
    return stats
