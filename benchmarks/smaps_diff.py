"""Which memory mappings grew between two ``/proc/PID/smaps`` snapshots (issue 12)?

    python benchmarks/smaps_diff.py A B [--top 25]

``benchmarks/soak.py --smaps-dumps DIR`` writes the snapshots. A heap profile sees only what
goes through malloc; this sees every mapping: glibc's heaps and per-thread arenas, other
allocators' mmap'd regions (Python's object arenas, Rust crates'), thread stacks, JIT code,
mmap'd files. Prints RSS by kind in both snapshots and the mappings whose RSS grew most.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def read_smaps(path: Path) -> dict:
    """{start address: dict(size_kb, rss_kb, lazyfree_kb, perms, name)}"""
    maps, cur = {}, None
    for line in path.read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            cur = dict(size_kb=(hi - lo) // 1024, rss_kb=0, lazyfree_kb=0, perms=head[1],
                       name=" ".join(head[5:]) if len(head) > 5 else "")
            maps[lo] = cur
        elif cur is not None and head and head[0] in ("Rss:", "LazyFree:"):
            cur[head[0][:-1].lower() + "_kb"] = int(head[1])
    return maps


def kind(lo: int, m: dict) -> str:
    name = m["name"]
    if name.startswith("/"):
        return "file " + ("(library)" if ".so" in name else name.rsplit("/", 1)[-1][:40])
    if name:
        return name  # [heap], [stack], [vdso], ...
    if lo % (64 << 20) == 0 and m["size_kb"] <= 65536:
        return "anon (glibc per-thread arena: 64 MB-aligned heap)"
    if m["size_kb"] in (8192, 8192 + 4):
        return "anon (8 MB: thread stack)"
    return "anon (other mmap)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    a, b = read_smaps(args.a), read_smaps(args.b)
    by_kind = collections.defaultdict(lambda: [0, 0, 0, 0])
    for i, maps in enumerate((a, b)):
        for lo, m in maps.items():
            k = by_kind[kind(lo, m)]
            k[i] += m["rss_kb"]
            k[2 + i] += 1
    print(f"{'kind':60s} {'rss A MB':>9s} {'rss B MB':>9s} {'grew':>8s} {'maps A':>6s} {'B':>5s}")
    for name, (ra, rb, na, nb) in sorted(by_kind.items(), key=lambda kv: kv[1][0] - kv[1][1]):
        print(f"{name[:60]:60s} {ra / 1024:9.1f} {rb / 1024:9.1f} {(rb - ra) / 1024:+8.1f} "
              f"{na:6d} {nb:5d}")
    ta, tb = (sum(m["rss_kb"] for m in x.values()) / 1024 for x in (a, b))
    print(f"{'total':60s} {ta:9.1f} {tb:9.1f} {tb - ta:+8.1f}")
    print(f"\nmappings whose RSS grew most (B vs the mapping at the same address in A):")
    grew = sorted(((m["rss_kb"] - a.get(lo, {}).get("rss_kb", 0), lo, m) for lo, m in b.items()),
                  key=lambda x: -x[0])
    for d, lo, m in grew[:args.top]:
        new = "" if lo in a else " (new)"
        print(f"  {lo:#014x} {m['size_kb'] / 1024:8.1f} MB {m['perms']} rss {m['rss_kb'] / 1024:7.1f} "
              f"MB {d / 1024:+7.1f}{new}  lazyfree {m['lazyfree_kb'] / 1024:.1f}  {kind(lo, m)}")


if __name__ == "__main__":
    main()
