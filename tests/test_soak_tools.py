"""The soak's memory diagnostics (benchmarks/soak.py, benchmarks/smaps_diff.py): smaps parsing
and classification, the RSS split, and the version count that tolerates maintenance's cleanup."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import smaps_diff  # noqa: E402
import soak  # noqa: E402

SMAPS = """\
7f9178000000-7f917a000000 rw-p 00000000 00:00 0 
Size:              32768 kB
Rss:               {arena} kB
LazyFree:              0 kB
7f917a000000-7f917c000000 ---p 00000000 00:00 0 
Size:              32768 kB
Rss:                   0 kB
7f9200001000-7f9200801000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                  24 kB
55d0c0000000-55d0c1000000 rw-p 00000000 00:00 0                          [heap]
Size:              16384 kB
Rss:               {heap} kB
7f9300000000-7f9300100000 r--p 00000000 08:01 42                         /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 512 kB
"""


def test_smaps_diff_attributes_growth_to_the_mapping_and_its_kind(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(SMAPS.format(arena=1024, heap=2048))
    b.write_text(SMAPS.format(arena=9216, heap=2048))
    maps = smaps_diff.read_smaps(b)
    assert len(maps) == 5
    arena = maps[0x7f9178000000]
    assert arena["rss_kb"] == 9216 and arena["perms"] == "rw-p"
    assert smaps_diff.kind(0x7f9178000000, arena).startswith("anon (glibc per-thread arena")
    assert smaps_diff.kind(0x7f9200001000, maps[0x7f9200001000]) == "anon (8 MB: thread stack)"
    assert smaps_diff.kind(0x55d0c0000000, maps[0x55d0c0000000]) == "[heap]"
    assert smaps_diff.kind(0x7f9300000000, maps[0x7f9300000000]) == "file (library)"
    sys.argv = ["smaps_diff", str(a), str(b), "--top", "1"]
    smaps_diff.main()
    out = capsys.readouterr().out
    top = out.split("grew most")[1].splitlines()[1]
    assert "0x7f9178000000" in top and "+8.0" in top  # the arena grew by 8 MB, nothing else
    assert "total" in out and "+8.0" in out.split("total")[1].splitlines()[0]


def test_rss_split_reads_this_process():
    s = soak.rss_split()
    assert s["rss_anon_mb"] > 0 and s["rss_file_mb"] > 0 and s["lazyfree_mb"] >= 0


class _Flaky:
    """A table whose first listings race a cleanup (as LanceDB's do under maintenance)."""

    def __init__(self, failures, error="Not found: /a/_versions/7.manifest"):
        self.failures, self.error = failures, error

    def to_lance(self):
        return self

    def versions(self):
        if self.failures:
            self.failures -= 1
            raise ValueError(self.error)
        return [1, 2, 3]


def test_count_versions_retries_a_manifest_deleted_under_it():
    assert soak.count_versions(_Flaky(2)) == 3
    with pytest.raises(ValueError, match="Not found"):
        soak.count_versions(_Flaky(9), tries=3)
    with pytest.raises(ValueError, match="corrupt"):  # other errors are not hidden
        soak.count_versions(_Flaky(1, "corrupt manifest"))


def test_slope_interval_fits_block_means_and_widens_with_noise():
    import numpy as np

    t = np.arange(0, 120 * 60, 60.0)  # two hours of minute samples
    slope, half, blocks = soak.slope_interval(t, 800 + 5.0 * t / 3600)
    assert blocks == 12 and abs(slope - 5.0) < 1e-9 and half < 1e-9  # a clean line is exact
    rng = np.random.default_rng(0)
    wander = np.repeat(rng.normal(0, 5, 12), 10)  # RSS that wanders for ten minutes at a time
    slope, half, _ = soak.slope_interval(t, 800 + 5.0 * t / 3600 + wander)
    assert half > 1.0 and abs(slope - 5.0) < half  # the interval covers the true slope
    assert np.isnan(soak.slope_interval(t[:15], t[:15])[1])  # two blocks: no interval


def test_shape_census_counts_each_linear_shape_once(monkeypatch):
    import torch
    import torch.nn.functional as F

    monkeypatch.setattr(F, "linear", F.linear)  # restored after the test
    census = soak.ShapeCensus()
    lin = torch.nn.Linear(8, 4)
    bf = torch.nn.Linear(8, 4).to(torch.bfloat16)
    for rows in (3, 5, 3):
        lin(torch.zeros(rows, 8))
    bf(torch.zeros(2, 7, 8, dtype=torch.bfloat16))
    assert census.line() == "linear_shapes=3 bf16=1 new=3"
    lin(torch.zeros(5, 8))
    lin(torch.zeros(6, 8))
    assert census.line() == "linear_shapes=4 bf16=1 new=1"
