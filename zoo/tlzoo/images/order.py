"""The order an epoch visits the training images when they are larger than the memory that could cache them.

A shuffle reads the decoded-pixel store at random: while the store fits in the page cache that costs nothing,
but a store larger than the memory free for it is read from disk a page per image, every epoch. FFCV's
quasi-random order (``OrderOption.QUASI_RANDOM``) fixes that: the images are taken in the store's own file order,
cut into blocks of :data:`BLOCK_BYTES`, the blocks shuffled, and the images shuffled again within each run of
:data:`WINDOW` consecutive blocks. Each batch then reads from a few blocks, every block is read once an epoch,
and the order is still different every epoch (drawn from the run's seed and the epoch, so a resumed run repeats
it). It applies when the training images' store exceeds :data:`MEMORY_SHARE` of the memory available;
otherwise the engines keep their own shuffle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_BYTES = 8 << 20  # FFCV's page size
WINDOW = 16  # blocks whose images are shuffled together: a batch draws from at most this many
MEMORY_SHARE = 0.5  # of MemAvailable: a store larger than this is not expected to stay in the page cache


def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux's MemAvailable: free memory plus reclaimable cache), or None
    where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def plan(images: Any) -> str | None:
    """Why ``images`` are visited in quasi-random order (a line for the user), or None for a plain shuffle: they
    are not in the store, or its pages fit in memory, or the memory available is unknown."""
    physical = getattr(images, "physical_order", None)
    if physical is None:
        return None
    size = int(images.nbytes)
    available = available_memory()
    if available is None or size <= MEMORY_SHARE * available:
        return None
    return (f"training batches in quasi-random order: the {size / 2**30:.1f} GiB of training images in the decoded-pixel "
            f"store exceed half the {available / 2**30:.1f} GiB of memory available, so each batch reads from at most "
            f"{WINDOW} blocks of {BLOCK_BYTES >> 20} MiB, every block once an epoch (FFCV's QUASI_RANDOM)")  # fmt: skip


def quasi_random(physical: np.ndarray, sample_bytes: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the images in quasi-random order; ``physical`` lists the positions in the store's file order."""
    per_block = max(1, BLOCK_BYTES // max(sample_bytes, 1))
    blocks = [physical[i : i + per_block] for i in range(0, len(physical), per_block)]
    shuffled = np.concatenate([blocks[b] for b in rng.permutation(len(blocks))]) if blocks else physical
    span = per_block * WINDOW
    for start in range(0, len(shuffled), span):
        rng.shuffle(shuffled[start : start + span])
    return shuffled


def window(images: Any) -> int:
    """Positions in a run of :data:`WINDOW` blocks of ``images``' store: what an epoch shuffles together."""
    return max(1, BLOCK_BYTES // max(int(np.prod(images.shape[1:])), 1)) * WINDOW


def epoch_order(images: Any, seed: int, epoch: int) -> np.ndarray:
    """``images``' positions in quasi-random order for ``epoch`` (see :func:`plan`)."""
    rng = np.random.default_rng([seed, epoch, 0x0F])
    sample_bytes = int(np.prod(images.shape[1:]))
    return quasi_random(np.asarray(images.physical_order(), np.int64), sample_bytes, rng)


def shard(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of an epoch's order, padded by repeating its start so that every rank takes the same
    number of images (as DDP needs; what ``DistributedSampler`` does with a shuffled order)."""
    total = -(-len(order) // world_size) * world_size
    padded = np.concatenate([order, order[: total - len(order)]]) if total > len(order) else order
    return padded[rank:total:world_size]

