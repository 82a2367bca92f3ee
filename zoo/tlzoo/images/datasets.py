"""Real sample data that ships with installed packages, written out as image folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..files import reclaim_temp_files, temp_prefix

EMBEDDED = {
    "digits": "UCI handwritten digits (scikit-learn): 1,797 8x8 grayscale images, 10 classes",
}


def write_digits(out: Path, size: int = 32) -> int:
    """scikit-learn's bundled UCI digits as ``out/<digit>/<n>.png`` (upscaled to ``size`` px)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(out)
    for i, (image, target) in enumerate(zip(digits.images, digits.target)):
        folder = out / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.asarray(image) * (255.0 / 16.0)).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST).save(folder / f"{i:04d}.png")
    return len(digits.target)


def write(name: str, out: Path) -> int:
    if name != "digits":
        raise UsageError(f"unknown dataset {name!r}; available: {', '.join(EMBEDDED)}")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; choose a new folder")
    return write_digits(out)


def ensure_digits(root: Path) -> Path:
    """The digits folder under ``root``, written on first use (the embedded default data).

    Written into a private temporary folder and renamed into place, so that two processes
    starting at once never see (or delete) each other's half-written folder.
    """
    import shutil
    import tempfile

    target = Path(root) / "digits"
    if not (target / "9").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        reclaim_temp_files(target.parent)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{temp_prefix()}digits-"))
        try:
            write_digits(tmp)
            tmp.rename(target)
        except OSError:
            if not (target / "9").is_dir():  # not another process winning the race: a real failure
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_data_root() -> Path:
    base = os.environ.get("TLZOO_DATA") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tlzoo", "datasets")
    return Path(base).expanduser()
