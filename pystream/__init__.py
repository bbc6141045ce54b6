"""pystream: index folders and live video streams for text search (CLIP + TempMe merging).

    import pystream
    arc = pystream.open("/var/lib/pystream/archive", model="shipped")
    for hit in arc.search("a red circle moves to the left", k=5):
        print(hit.source, hit.start, hit.end, hit.score)
"""

__version__ = "0.1.0"


def open(path, **kwargs):  # noqa: A001 - mirrors lancedb.connect / pystream.open in the docs
    """Open an archive for search; see :func:`pystream.archive.open`."""
    from .archive import open as _open

    return _open(path, **kwargs)
