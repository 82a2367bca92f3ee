"""Image files to RGB uint8 arrays at the input size: upright as a viewer shows them, decoded no larger than needed.

One file goes: open, read its EXIF orientation, ``draft()`` (JPEG's DCT-domain scaling) to the smallest
scale that still covers what the resize needs, load, turn upright, convert to RGB, resize by the
preprocessing's policy (:class:`~tlzoo.specs.Preprocessing`: ``squash``, ``crop`` or ``pad``) in one
antialiased resample of the region it keeps. Every path that reads an image (training, evaluation,
prediction, advise, export checks) goes through :func:`load_image`; :func:`recipe` names all of this in
every cache key, so features decoded another way are never served.
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from ..limits import max_image_pixels
from ..specs import Preprocessing

# Bump when decoding changes the pixels it gives for the same file and recipe.
DECODE_FORMAT = 3
WHOLE = 1e-3  # float error forgiven when a size is floored to whole pixels (the ONNX front's float32 too)
SQUASH = Preprocessing(mode="raw", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), value_range=255.0)

# EXIF orientation -> (Pillow's transpose, whether it swaps width and height); as ImageOps.exif_transpose.
_ORIENTATIONS = {2: ("FLIP_LEFT_RIGHT", False), 3: ("ROTATE_180", False), 4: ("FLIP_TOP_BOTTOM", False),
                 5: ("TRANSPOSE", True), 6: ("ROTATE_270", True), 7: ("TRANSVERSE", True), 8: ("ROTATE_90", True)}  # fmt: skip
# After turning upright, where a draft's partial last block (stored right and bottom) lies: (x at the far end, y far).
_FAR = {1: (False, False), 2: (True, False), 3: (True, True), 4: (False, True),
        5: (False, False), 6: (True, False), 7: (True, True), 8: (False, True)}  # fmt: skip


class ImageTooLarge(ValueError):
    """An image whose decoded pixels exceed the limit (skipped like an unreadable file)."""


_TOO_LARGE = re.compile(r"(\d+)x(\d+) pixels decoded, over the limit of")


def fits_limit_now(reason: str) -> bool:
    """Whether an image skipped for ``reason`` (an :class:`ImageTooLarge` message) would decode under today's
    ``TLZOO_MAX_IMAGE_PIXELS``: a cache that remembers the skip must not outlive a raised limit."""
    match = _TOO_LARGE.search(reason)
    if match is None:
        return False
    limit = max_image_pixels()
    return limit is None or int(match.group(1)) * int(match.group(2)) <= limit


class ImageWarning(UserWarning):
    """A decoder's warning about one image (corrupt EXIF, say), said again with the file's name."""


_local = threading.local()


@lru_cache(maxsize=1)
def _capture_decoder_warnings() -> None:
    """Route warnings raised while this thread decodes a file to that file (``_local.sink``), so they can be said
    with its name; every other warning goes where it went before."""
    shown = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        sink = getattr(_local, "sink", None)
        if sink is not None:
            sink.append(" ".join(str(message).split()))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@lru_cache(maxsize=1)
def _pil() -> Any:
    from PIL import Image

    Image.init()
    # tlzoo limits the pixels an image decodes to (after draft), not the pixels its header declares: a 108 MP
    # phone photo that draft brings down to 7 MP is fine. A limit the user set themselves is kept.
    if Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3):
        Image.MAX_IMAGE_PIXELS = None
    return Image


@lru_cache(maxsize=1)
def image_suffixes() -> frozenset[str]:
    """The file suffixes of every format Pillow can open here (its registered extensions, as torchvision's
    ImageFolder counts images by suffix)."""
    Image = _pil()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in image_suffixes() and not path.name.startswith(".")


def pillow_version() -> str:
    from PIL import __version__

    return str(__version__)


def recipe(prep: Preprocessing, decoder: str | None = None) -> dict[str, Any]:
    """Everything that decides the pixels decoding gives for a file, beside its bytes and the size: part of
    every cache key, so features decoded another way (sideways, squashed, by another decoder) never hit.
    ``decoder`` names the :class:`ImageDecoder` that takes the JPEGs (a GPU's), when one does."""
    out = {"format": DECODE_FORMAT, "exif": "transpose", "decoder": f"pillow {pillow_version()}", "draft": True,
           "resize": prep.resize, "crop_fraction": prep.crop_fraction, "interpolation": prep.interpolation,
           **({"fill": list(prep.pad_colour())} if prep.resize == "pad" else {})}  # fmt: skip
    if decoder:
        out["jpeg_decoder"] = decoder  # its IDCT and chroma upsampling are not libjpeg-turbo's, and it drafts not
        out["pillow_drafts_from"] = DRAFT_FROM  # JPEGs this many times the size (each side) are Pillow's
    return out


@dataclass(frozen=True)
class Jpeg:
    """A JPEG file's bytes as an :class:`ImageDecoder` takes them, with what its header says."""

    data: bytes
    width: int  # as stored, before the EXIF orientation turns it
    height: int
    orientation: int  # EXIF orientation, 1..8
    digest: str = ""  # the bytes' sha256, where the decoded-pixel store keys them


class ImageDecoder(Protocol):
    """Decodes JPEGs a batch at a time somewhere other than Pillow (a framework's GPU decoder, offered by its
    adapter's ``image_decoder``). Every other file, and every JPEG it gives None for, is decoded by Pillow."""

    #: What the decode recipe records (versions included): pixels it gave are never served as another's.
    name: str

    def decode(self, jpegs: list[Jpeg], size: tuple[int, int], prep: Preprocessing) -> list[np.ndarray | None]:
        """Each JPEG upright, as RGB uint8 (H, W, 3) at ``size`` by :func:`resize_plan` (a whole-image resample
        antialiased as Pillow's, by ``prep.interpolation``), or None for one it cannot decode."""
        ...


# A JPEG at least this many times the input size on each side is decoded by Pillow even where a GPU decoder
# is at hand: Pillow's draft decodes it at 1/4 to 1/8 scale (a 12 MP phone photo at 224 px: a 16th to a 64th
# of its pixels), cheaper on one core than a GPU decoder's full-size decode and resize, which has no draft.
DRAFT_FROM = 4


def gpu_decodable(data: bytes, size: tuple[int, int] | None = None) -> Jpeg | None:
    """``data`` as a :class:`Jpeg` when an :class:`ImageDecoder` may take it: a JPEG in RGB or grey (not CMYK)
    whose full-size pixels are within :func:`max_image_pixels` (a GPU decoder has no draft; Pillow drafts one
    that is over) and, given the input ``size``, not :data:`DRAFT_FROM` times it on both sides (Pillow's
    draft decodes those). Reads the header only."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return None
            width, height = image.size
            limit = max_image_pixels()
            if limit is not None and width * height > limit:
                return None
            if size is not None and min(width, height) >= DRAFT_FROM * max(size):
                return None  # either orientation: a photo turned by its EXIF tag is as large
            return Jpeg(data, width, height, _orientation(image))
    except Exception:  # a header Pillow cannot read: Pillow's own decode says why, file by file
        return None


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def cuda_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver (a CUDA device is likely), looked at without any framework."""
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None or Path("/proc/driver/nvidia/version").exists()


def _cgroup_quota() -> int | None:
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        return None


def _scales(width: float, height: float, size: tuple[int, int], prep: Preprocessing) -> tuple[float, float]:
    """Output pixels per source pixel along x and y for an upright ``width`` x ``height`` image."""
    h, w = size
    if prep.resize == "squash":
        return _whole(w / prep.crop_fraction) / width, _whole(h / prep.crop_fraction) / height
    if prep.resize == "crop":
        if width <= height and w == h:  # a square input: the short side to floor(size / crop fraction)
            return _whole(w / prep.crop_fraction) / width, _whole(w / prep.crop_fraction) / width
        if h == w:
            return _whole(h / prep.crop_fraction) / height, _whole(h / prep.crop_fraction) / height
        s = max(w / width, h / height) / prep.crop_fraction
    else:  # pad
        s = min(w / width, h / height)
    return s, s


def _whole(size: float) -> int:
    """floor(size), as timm computes its resize size, forgiving float error (224 / 0.875 is 256)."""
    return math.floor(size + WHOLE)


@dataclass(frozen=True)
class Resize:
    """How an upright image reaches the input size: resized whole to ``whole`` (w, h), then the input-size
    region at ``crop`` (x, y) kept (squash, crop), or the whole placed at ``at`` (x, y) on the mean colour (pad).
    Any decoder that resizes a whole image (a GPU's) follows it to give the pixels :func:`load_image` gives."""

    whole: tuple[int, int]
    crop: tuple[int, int]
    at: tuple[int, int]


def resize_plan(width: float, height: float, size: tuple[int, int], prep: Preprocessing) -> Resize:
    """The :class:`Resize` of an upright ``width`` x ``height`` image to ``size`` = (H, W) by ``prep``'s policy."""
    h, w = size
    sx, sy = _scales(width, height, size, prep)
    if prep.resize in ("squash", "crop"):
        # As torchvision's and timm's evaluation transforms do it: resize to whole pixels (the short side, or
        # both for squash, to floor(size / crop fraction), the other side truncated), then crop the centre at a
        # whole-pixel offset.
        rw, rh = math.floor(width * sx + WHOLE), math.floor(height * sy + WHOLE)
        return Resize((rw, rh), (round((rw - w) / 2), round((rh - h) / 2)), (0, 0))
    rw, rh = max(1, min(w, round(width * sx))), max(1, min(h, round(height * sy)))
    return Resize((rw, rh), (0, 0), ((w - rw) // 2, (h - rh) // 2))


def _plan(width: float, height: float, size: tuple[int, int],
          prep: Preprocessing) -> tuple[tuple[float, float, float, float], tuple[int, int], tuple[int, int]]:  # fmt: skip
    """(source box, resized size (w, h), where it goes on the output (x, y)) for an upright region: one
    resample of the box gives exactly the pixels of :func:`resize_plan`'s resize then crop."""
    h, w = size
    plan = resize_plan(width, height, size, prep)
    if prep.resize in ("squash", "crop"):
        (rw, rh), (left, top) = plan.whole, plan.crop
        fx, fy = rw / width, rh / height
        return (left / fx, top / fy, (left + w) / fx, (top + h) / fy), (w, h), (0, 0)
    return (0.0, 0.0, width, height), plan.whole, plan.at


def load_image(path: str | Path | IO[bytes], size: tuple[int, int], prep: Preprocessing | None = None, *,
               name: str | None = None) -> np.ndarray:  # fmt: skip
    """Decode one file (a path, or the file's bytes as a binary file object named ``name``) upright, as RGB
    uint8 (H, W, 3) at ``size`` = (H, W) by ``prep``'s resize policy and interpolation (default: squash,
    bilinear). Raises :class:`ImageTooLarge` over :func:`max_image_pixels`."""
    _capture_decoder_warnings()
    _local.sink = []
    try:
        return _load(path, size, prep or SQUASH)
    finally:
        path = name or path
        said, _local.sink = _local.sink, None
        for message in dict.fromkeys(said):
            warnings.warn(f"{path}: {message}", ImageWarning, stacklevel=2)


def _load(path: str | Path | IO[bytes], size: tuple[int, int], prep: Preprocessing) -> np.ndarray:
    Image = _pil()
    with Image.open(path) as image:
        drafted, orientation = None, 0
        if image.format == "JPEG":  # its EXIF comes before the pixels (a PNG's may follow them: read after loading)
            orientation = _orientation(image)
            swapped = _ORIENTATIONS.get(orientation, (None, False))[1]
            stored_w, stored_h = image.size
            upright_w, upright_h = (stored_h, stored_w) if swapped else (stored_w, stored_h)
            sx, sy = _scales(upright_w, upright_h, size, prep)
            want = (max(1, math.ceil(upright_w * min(sx, 1.0))), max(1, math.ceil(upright_h * min(sy, 1.0))))
            drafted = image.draft(None, want[::-1] if swapped else want)
        limit = max_image_pixels()
        if limit is not None and image.size[0] * image.size[1] > limit:
            raise ImageTooLarge(f"{image.size[0]}x{image.size[1]} pixels decoded, over the limit of {limit:,} "
                                f"(TLZOO_MAX_IMAGE_PIXELS raises it)")  # fmt: skip
        image.load()
        # Other formats after loading: some plugins (TIFF) turn the image upright themselves and drop the tag.
        orientation = orientation or _orientation(image)
        method, swapped = _ORIENTATIONS.get(orientation, (None, False))
        if method is not None:
            image = image.transpose(getattr(Image.Transpose, method))
        rgb = _rgb_or_grey(image)
    # A draft's last block row and column may be partial: keep to the region it really covers.
    valid = (drafted[1][2], drafted[1][3]) if drafted else (float(rgb.size[0]), float(rgb.size[1]))
    if drafted and swapped:
        valid = valid[::-1]
    far_x, far_y = _FAR.get(orientation, (False, False)) if drafted else (False, False)
    x0, y0 = (rgb.size[0] - valid[0] if far_x else 0.0), (rgb.size[1] - valid[1] if far_y else 0.0)
    box, resized, at = _plan(valid[0], valid[1], size, prep)
    return _finish(rgb, (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0), resized, at, size, prep)


def _finish(rgb: Any, box: tuple[float, float, float, float], resized: tuple[int, int], at: tuple[int, int],
            size: tuple[int, int], prep: Preprocessing) -> np.ndarray:  # fmt: skip
    """One resample of ``box`` to ``resized``, placed at ``at`` on the mean colour when padding. A greyscale
    image is resampled as one channel, then repeated into three: the same pixels as resampling its RGB
    conversion (Pillow resamples each channel alike), for a third of the work."""
    Image = _pil()
    resample = Image.Resampling.BICUBIC if prep.interpolation == "bicubic" else Image.Resampling.BILINEAR
    whole = box == (0.0, 0.0, float(rgb.size[0]), float(rgb.size[1])) and resized == rgb.size
    out = rgb if whole else rgb.resize(resized, resample, box=box)
    if prep.resize == "pad" and resized != (size[1], size[0]):
        canvas = Image.new("RGB", (size[1], size[0]), prep.pad_colour())
        canvas.paste(out, at)  # Pillow converts a greyscale image to the canvas's RGB as it pastes
        out = canvas
    if out.mode == "L":
        grey = np.asarray(out, dtype=np.uint8)
        return np.stack((grey, grey, grey), axis=-1)
    return np.asarray(out, dtype=np.uint8)


def read_for(decoder: ImageDecoder, size: tuple[int, int],
             prep: Preprocessing | None = None) -> Callable[[str], np.ndarray | Jpeg]:  # fmt: skip
    """A thread's read of one file: its pixels (Pillow), or, for a JPEG ``decoder`` may take, the
    :class:`Jpeg` left for :func:`decode_jpegs` to decode a batch at a time."""

    def read(path: str) -> np.ndarray | Jpeg:
        data = Path(path).read_bytes()
        jpeg = gpu_decodable(data, size)
        return jpeg if jpeg is not None else load_image(io.BytesIO(data), size, prep, name=str(path))

    return read


def decode_jpegs(jpegs: list[tuple[str, Jpeg]], decoder: ImageDecoder, size: tuple[int, int],
                 prep: Preprocessing | None = None) -> list[np.ndarray | Exception]:  # fmt: skip
    """``(path, jpeg)`` pairs decoded by ``decoder`` in one batch; a JPEG it gives None for (or the batch, when
    it fails) by Pillow. Each item is its pixels, or the exception that file raised."""
    prep = prep or SQUASH
    try:
        got: list[np.ndarray | None] = list(decoder.decode([j for _, j in jpegs], size, prep))
    except Exception:  # noqa: BLE001 - a decoder's failure is Pillow's work, file by file
        got = [None] * len(jpegs)
    out: list[np.ndarray | Exception] = []
    for (path, jpeg), pixels in zip(jpegs, got):
        if pixels is not None and pixels.shape == (*size, 3) and pixels.dtype == np.uint8:
            out.append(pixels)
            continue
        try:
            out.append(load_image(io.BytesIO(jpeg.data), size, prep, name=path))
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged file
            out.append(exc)
    return out


def resize_array(pixels: np.ndarray, size: tuple[int, int], prep: Preprocessing | None = None) -> np.ndarray:
    """An in-memory image (uint8 array or PIL image) as RGB uint8 at ``size`` by ``prep``'s policy."""
    Image = _pil()
    prep = prep or SQUASH
    pil = Image.fromarray(pixels) if isinstance(pixels, np.ndarray) else pixels
    rgb = _rgb_or_grey(pil)
    box, resized, at = _plan(float(rgb.size[0]), float(rgb.size[1]), size, prep)
    return _finish(rgb, box, resized, at, size, prep)


def _orientation(image: Any) -> int:
    """The EXIF orientation tag (1..8; 1 when absent or unreadable: a corrupt EXIF block is no reason to drop
    the pixels)."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # Pillow raises several types on malformed EXIF
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(image):  # type: ignore[no-untyped-def]
    """Any PIL image (grayscale, RGBA, palette, 16-bit, float) as 8-bit RGB."""
    grey = _rgb_or_grey(image)
    return grey if grey.mode == "RGB" else grey.convert("RGB")


def _rgb_or_grey(image):  # type: ignore[no-untyped-def]
    """:func:`to_rgb`, except that an image that is 8-bit greyscale once converted is left so (:func:`_finish`
    resamples one channel instead of three)."""
    Image = _pil()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (and 32-bit integer) images: the full 0..65535 range maps onto 0..255.
        arr = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(arr.round().clip(0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        # Float images are stretched over their finite range; NaN and -inf take its low end, +inf its high end.
        arr = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(arr)
        lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
        arr = np.where(np.isposinf(arr), hi, np.where(finite, arr, lo))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = Image.fromarray(((arr - lo) * scale).round().clip(0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode in ("RGB", "L") else image.convert("RGB")
