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
