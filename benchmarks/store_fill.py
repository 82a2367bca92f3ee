"""The decoded-pixel store's own cost of filling, at any size: synthetic pixels through its API, no decoding.

    python benchmarks/store_fill.py [--images 200000] [--size 112] [--repeats 3] [--window 10000]

Each image is a real (empty) file, so the names map (the append-only alias log, :mod:`tlzoo.images.aliases`) is
exercised as a training fill exercises it: ``Writer.add(path, digest, pixels)`` per image, a segment published
every 256 MiB with its aliases. At 112 px, 200,000 images are 7.5 GB of segments. Each repeat fills a new store
from empty and times every ``--window`` images.

Goals (the issue "The GPU kept busy"):
- the marginal cost of the last 10,000 images into a 190,000-image store within 1.2x of the first 10,000
  (median over the repeats);
- alias-log bytes written per image at most 1.5x one entry;
- exactly one segment table read per flush.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from _common import write


def fill(root: Path, n: int, size: int, window: int) -> dict[str, Any]:
    from tlzoo.images import aliases, store
    from tlzoo.images.aliases import Names
    from tlzoo.specs import TORCHVISION_IMAGENET

    files = root / "files"
    files.mkdir(parents=True)
    cache = root / "cache"
    bucket = store.Bucket(cache, TORCHVISION_IMAGENET, (size, size), None)
    names = Names(store.store_root(cache))
    writer = store.Writer(bucket, names, n * bucket.sample_bytes())
    counts = {"alias_bytes": 0, "alias_writes": 0, "tables": 0, "flushes": 0, "compactions": 0}
    real_write, real_read, real_flush = aliases._write_all, store._read_segment, store.Writer.flush
    real_compact = aliases.Names.compact

    def compact(self: Any) -> int:  # a compaction's rewrite counts as alias bytes written too
        kept = real_compact(self)
        counts["alias_bytes"] += self.path.stat().st_size
        counts["compactions"] += 1
        return kept

    def write_all(fd: int, data: bytes) -> None:
        counts["alias_bytes"] += len(data)
        counts["alias_writes"] += 1
        real_write(fd, data)

    def read_segment(path: Path, hw: Any) -> Any:
        counts["tables"] += 1
        return real_read(path, hw)

    def flush(self: Any) -> None:
        counts["flushes"] += int(self.file is not None)
        real_flush(self)

    aliases._write_all, store._read_segment, store.Writer.flush = write_all, read_segment, flush  # type: ignore[method-assign]
    aliases.Names.compact = compact  # type: ignore[method-assign]
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
    seconds: list[float] = []
    try:
        t0 = time.perf_counter()
        for i in range(n):
            path = files / f"{i:07d}.jpg"
            path.touch()
            writer.add(str(path), hashlib.sha256(i.to_bytes(8, "little")).hexdigest(), pixels)
            if (i + 1) % window == 0:
                now = time.perf_counter()
                seconds.append(now - t0)
                t0 = now
        writer.flush()
        names.save()
    finally:
        aliases._write_all, store._read_segment, store.Writer.flush = real_write, real_read, real_flush  # type: ignore[method-assign]
        aliases.Names.compact = real_compact  # type: ignore[method-assign]
    lines = Path(names.path).read_bytes().splitlines()
    entry = int(np.median([len(line) + 1 for line in lines if line.startswith(b"[")]))  # one entry, its newline
    segments = len(list(bucket.path.glob("seg-*.u8")))
    return {"seconds_per_window": [round(s, 3) for s in seconds], "entry_bytes": entry, "segments": segments,
            "store_bytes": sum(p.stat().st_size for p in bucket.path.glob("seg-*.u8")), **counts}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores are made (default: a temporary folder)")
    args = parser.parse_args()
    runs = []
    for r in range(args.repeats):
        root = Path(tempfile.mkdtemp(prefix="tlzoo-store-fill-", dir=args.dir))
        try:
            got = fill(root, args.images, args.size, args.window)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        windows = got["seconds_per_window"]
        got["last_over_first"] = round(windows[-1] / windows[0], 3)
        runs.append(got)
        print(f"repeat {r}: {args.images} images in {sum(windows):.1f} s, windows of {args.window}: first "
              f"{windows[0]:.2f} s, last {windows[-1]:.2f} s ({got['last_over_first']}x); {got['segments']} segments, "
              f"{got['flushes']} flushes, {got['tables']} tables read, {got['compactions']} compactions, {got['alias_bytes'] / args.images:.1f} alias "
              f"bytes an image (an entry is {got['entry_bytes']})", flush=True)  # fmt: skip
    ratio = median(r["last_over_first"] for r in runs)
    per_image = median(r["alias_bytes"] / args.images for r in runs)
    entry = runs[0]["entry_bytes"]
    result = {
        "settings": {"images": args.images, "size": args.size, "repeats": args.repeats, "window": args.window},
        "runs": runs,
        "last_over_first_median": ratio,
        "alias_bytes_per_image": round(per_image, 2),
        "entry_bytes": entry,
        "tables_per_flush": [r["tables"] / max(r["flushes"], 1) for r in runs],
        "goals": {"last 10k within 1.2x of first": ratio <= 1.2, "alias bytes <= 1.5 entries": per_image <= 1.5 * entry,
                  "one table per flush": all(r["tables"] == r["flushes"] for r in runs)},
    }  # fmt: skip
    write("store_fill", result)
    print({k: result[k] for k in ("last_over_first_median", "alias_bytes_per_image", "entry_bytes", "tables_per_flush",
                                   "goals")})  # fmt: skip


if __name__ == "__main__":
    main()
