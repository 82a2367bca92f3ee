"""Training augmentation as data: one affine matrix per image, drawn on the CPU, applied on the device.

fastai's approach: a random resized crop and a horizontal flip are both affine maps of the output grid onto the
input image, so a batch is augmented by one batched resample (``affine_grid`` + ``grid_sample`` in torch) with
a matrix per image, on whatever device trains, with no per-image Python. torchvision's ``transforms.v2``
applied to a batch would draw one set of parameters for the whole batch.

The parameters come from a numpy generator seeded by (seed, epoch, rank): a resumed run draws exactly what the
uninterrupted one would have, and the ranks of a data-parallel job draw differently.

The crop follows torchvision's ``RandomResizedCrop.get_params``: an area fraction in :data:`CROP_SCALE`, a log-
uniform aspect ratio in :data:`CROP_RATIO`, ten tries to fit, then the whole image (ratio clamped) centred.
"""

from __future__ import annotations

import math

import numpy as np

CROP_SCALE = (0.6, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
TRIES = 10


def generator(seed: int, epoch: int, rank: int = 0, step: int | None = None) -> np.random.Generator:
    """The generator of (seed, epoch, rank), or of one step of that epoch: a batch's draws then depend on its
    position in the epoch only, so the feed's threads may draw the batches in any order."""
    return np.random.default_rng([seed, epoch, rank, 0xA7] if step is None else [seed, epoch, rank, 0xA7, step])


def crop_boxes(n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` boxes (top, left, h, w) in pixels, drawn as torchvision's RandomResizedCrop draws them, for the
    whole batch at once (the first of each image's tries that fits)."""
    area = height * width
    scale = rng.uniform(*CROP_SCALE, size=(n, TRIES)) * area
    ratio = np.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), size=(n, TRIES)))
    w = np.round(np.sqrt(scale * ratio))
    h = np.round(np.sqrt(scale / ratio))
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    u = rng.random(size=(n, TRIES, 2))
    first = fits.argmax(axis=1)  # the first try that fits (0 where none does: replaced below)
    rows = np.arange(n)
    bh, bw = h[rows, first], w[rows, first]
    top = np.floor(u[rows, first, 0] * (height - bh + 1))
    left = np.floor(u[rows, first, 1] * (width - bw + 1))
    boxes = np.stack([top, left, bh, bw], axis=1)
    missed = ~fits.any(axis=1)
    if missed.any():  # torchvision's fallback: the whole image, its ratio clamped into the range, centred
        in_ratio = width / height
        if in_ratio < CROP_RATIO[0]:
            fw, fh = width, round(width / CROP_RATIO[0])
        elif in_ratio > CROP_RATIO[1]:
            fh, fw = height, round(height * CROP_RATIO[1])
        else:
            fw, fh = width, height
        boxes[missed] = ((height - fh) // 2, (width - fw) // 2, fh, fw)
    return boxes


def affine(n: int, size: tuple[int, int], augment: list[str], rng: np.random.Generator) -> np.ndarray | None:
    """(n, 2, 3) float32 matrices mapping each output's normalized coordinates (-1..1, ``align_corners=False``)
    onto its input's, for ``augment`` (``crop``, ``flip``); None when there is nothing to do."""
    if not ({"crop", "flip"} & set(augment)) or n == 0:
        return None
    height, width = size
    theta = np.zeros((n, 2, 3), np.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if "crop" in augment:
        top, left, bh, bw = crop_boxes(n, height, width, rng).T
        theta[:, 0, 0] = bw / width
        theta[:, 1, 1] = bh / height
        theta[:, 0, 2] = (2 * left + bw) / width - 1  # the box's centre, in normalized coordinates
        theta[:, 1, 2] = (2 * top + bh) / height - 1
    if "flip" in augment:
        theta[:, 0, 0] *= np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return theta.astype(np.float32)
