"""Tiny generated image datasets: learnable (class = colour and stripe direction), in every file mode."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}


def make_image(cls: str, i: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{cls}/{i}".encode()))  # the same pixels in every process (not hash())
    base = np.array(COLOURS[cls], dtype=np.float64)
    img = np.tile(base, (size, size, 1)) + rng.normal(0, 20, (size, size, 3))
    stripes = (np.arange(size) // 4) % 2 == 0
    if cls == "red":
        img[stripes, :, :] *= 0.6
    elif cls == "green":
        img[:, stripes, :] *= 0.6
    return img.clip(0, 255).astype(np.uint8)


def write_folder(root: Path, per_class: int = 12, size: int = 32, classes: tuple[str, ...] = tuple(COLOURS)) -> Path:
    for cls in classes:
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_image(cls, i, size)).save(d / f"{i:03d}.png")
    return root


MULTI_LABELS = ("Red", "striped", "dark")


def make_tagged(tags: tuple[str, ...], i: int, size: int = 32) -> np.ndarray:
    """An image carrying each of :data:`MULTI_LABELS` it is tagged with, independently: red or blue, horizontal
    stripes or none, dark or bright."""
    rng = np.random.default_rng(zlib.crc32(f"{'+'.join(tags)}/{i}".encode()))
    base = np.array((200, 50, 50) if "Red" in tags else (50, 60, 210), dtype=np.float64)
    img = np.tile(base, (size, size, 1)) + rng.normal(0, 20, (size, size, 3))
    if "striped" in tags:
        img[(np.arange(size) // 4) % 2 == 0, :, :] *= 0.4
    if "dark" in tags:
        img *= 0.45
    return img.clip(0, 255).astype(np.uint8)


def write_multilabel(root: Path, n: int = 48, size: int = 32, form: str = "labels", seed: int = 0) -> Path:
    """``n`` images with any of :data:`MULTI_LABELS` (some with none) under ``root/images`` and the CSV that lists
    them, in ``form``: ``labels`` (``Red;dark``) or ``one-hot`` (a 0/1 column per label). Returns the CSV."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        tags = tuple(t for t in MULTI_LABELS if rng.random() < 0.45)
        name = f"images/{i:03d}.png"
        Image.fromarray(make_tagged(tags, i, size)).save(root / name)
        rows.append((name, tags))
    csv = root / ("labels.csv" if form == "labels" else "onehot.csv")
    if form == "labels":
        csv.write_text("path,labels\n" + "".join(f"{name},{';'.join(tags)}\n" for name, tags in rows))
    else:
        csv.write_text("path," + ",".join(MULTI_LABELS) + "\n"
                       + "".join(f"{name}," + ",".join("1" if t in tags else "0" for t in MULTI_LABELS) + "\n"
                                 for name, tags in rows))  # fmt: skip
    return csv
