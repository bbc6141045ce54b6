"""pystream: index folders and live video streams for text search (CLIP + TempMe merging).

    import pystream

    pystream.index("videos", archive="pystream-data/archive", model="shipped-tempme")
    arc = pystream.open("pystream-data/archive")  # searches with the model that indexed it
    for hit in arc.search("a red circle moves to the left", k=5):
        print(hit.source, hit.start, hit.end, hit.score)

What a user imports is here: open() / Archive / Hit / ClipQuery (search), index() / Indexer
(indexing), ClipVideoModel (the model), load_config / Config. `import pystream` is light:
torch, LanceDB and PyAV load with the first name that needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

# name -> (module, attribute), imported on first use (PEP 562).
_LAZY = {
    "Archive": ("archive", "Archive"),
    "ClipQuery": ("archive", "ClipQuery"),
    "Hit": ("archive", "Hit"),
    "ArchiveNotFoundError": ("archive", "ArchiveNotFoundError"),
    "ClipNotFoundError": ("archive", "ClipNotFoundError"),
    "ModelMismatchError": ("archive", "ModelMismatchError"),
    "NoEncoderError": ("archive", "NoEncoderError"),
    "ClipVideoModel": ("model.tempme", "ClipVideoModel"),
    "ModelLoadError": ("model.loader", "ModelLoadError"),
    "Indexer": ("pipeline", "Indexer"),
    "IndexResult": ("indexing", "IndexResult"),
    "Config": ("config", "Config"),
    "ConfigError": ("config", "ConfigError"),
    "load_config": ("config", "load_config"),
}

__all__ = ["open", "index", "__version__", *_LAZY]


def open(path_or_uri, table: str = "clips", **kwargs):  # noqa: A001 - as lancedb.connect
    """Open an archive for search: ``pystream.open(path).search("white van", k=10)``.

    Keywords (see :class:`pystream.Archive`): ``model`` ("shipped", a Hugging Face id, a model
    directory or a ClipVideoModel; default: the model recorded with the archive, loaded on the
    first text or image query), ``device``, ``read_consistency_interval``, ``text_encoder``,
    ``image_encoder``, ``nprobes``, ``refine_factor``.
    """
    from .archive import open as _open

    return _open(path_or_uri, table, **kwargs)


def index(paths, archive=None, **kwargs):
    """Index video files and folders into an archive, once and resumably (what
    ``pystream index`` runs); returns an :class:`IndexResult`. See
    :func:`pystream.indexing.index` for the keywords (model, source, fps, state_dir, ...)."""
    from .indexing import index as _index

    return _index(paths, archive, **kwargs)


from ._lazy import lazy_attributes  # noqa: E402

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
