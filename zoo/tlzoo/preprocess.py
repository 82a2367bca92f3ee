"""Image decoding and the backbones' input normalization, shared by every framework.

Images travel as RGB uint8 arrays (N, H, W, 3) until the last step, where
:func:`normalize` applies the backbone's :class:`~tlzoo.specs.Preprocessing`.
The same arithmetic is written into exported ONNX graphs (``--raw-input``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .specs import Preprocessing

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def normalize(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """RGB uint8 NHWC -> float32 NHWC in the backbone's channel order, range and statistics."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB uint8 images shaped (N, H, W, 3), got {images.dtype} {images.shape}")
    x = images.astype(np.float32)
    if prep.channel_order == "BGR":
        x = x[..., ::-1]
    if prep.value_range != 255.0:
        x *= np.float32(prep.value_range / 255.0)
    x -= np.asarray(prep.mean, dtype=np.float32)
    x /= np.asarray(prep.std, dtype=np.float32)
    return np.ascontiguousarray(x)


def to_rgb(image):  # type: ignore[no-untyped-def]
    """Any PIL image (grayscale, RGBA, palette, 16-bit) as 8-bit RGB."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (and 32-bit integer) images: the full 0..65535 range maps onto 0..255.
        arr = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(arr.round().clip(0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = Image.fromarray(((arr - lo) * scale).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Decode, convert to RGB and resize (bilinear) to ``size`` = (H, W); uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        rgb = to_rgb(image)
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
