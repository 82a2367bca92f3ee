"""Which process of a data-parallel job this is, from the launcher's environment (torchrun sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``). Plain data: the framework's engine starts the process group.

Rank 0 alone prints, creates the run directory and writes files; every rank trains on its own shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # the processes on this node

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    try:
        return World(rank=int(os.environ.get("RANK", "0")), size=int(os.environ.get("WORLD_SIZE", "1")),
                     local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                     local_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # fmt: skip
    except ValueError:
        return World()


def launch_command(nproc: int, argv: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m tlzoo ARGV``: torch's own elastic
    launcher on a free local port (never a fixed one)."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "tlzoo", *argv]  # fmt: skip
