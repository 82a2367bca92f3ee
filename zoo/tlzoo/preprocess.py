"""The backbones' input normalization, shared by every framework (decoding is :mod:`tlzoo.decode`).

Images travel as RGB uint8 arrays (N, H, W, 3) until the last step, where
:func:`normalize` applies the backbone's :class:`~tlzoo.specs.Preprocessing`.
The same arithmetic is written into exported ONNX graphs (``--raw-input``).
"""

from __future__ import annotations

import numpy as np

from .decode import is_image_file, load_image, to_rgb  # noqa: F401  (decoding lives in tlzoo.decode)
from .specs import Preprocessing


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
