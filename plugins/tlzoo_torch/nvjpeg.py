"""JPEGs decoded a batch at a time on the GPU (nvJPEG, through ``torchvision.io.decode_jpeg``), turned upright
and resized there: tlzoo's :class:`tlzoo.images.decode.ImageDecoder` for a torch run on a CUDA device.

The pixels follow :func:`tlzoo.images.decode.resize_plan` (the whole image resized, antialiased as Pillow does, then
cropped or padded), so they differ from Pillow's only by the decoder: nvJPEG's IDCT and chroma upsampling are
not libjpeg-turbo's, and it has no draft (a photo is decoded at full size, which the GPU can afford). The
decoder's name goes into the decode recipe, so a cache never serves one decoder's pixels as the other's.
torchvision's CUDA decoder ignores EXIF orientation: it is read from the header (:class:`tlzoo.images.decode.Jpeg`)
and applied here. The same code decodes with libjpeg-turbo on the CPU (``device="cpu"``), which is how it
is tested on a machine without a GPU.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tlzoo.images.decode import Jpeg, resize_plan
from tlzoo.specs import Preprocessing

from . import gpu_decoder


def _decode_jpeg() -> Any:
    # torchvision >= 0.29 deprecates its image decoders for TorchCodec's (which needs FFmpeg), at every call
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
                            category=DeprecationWarning)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.io import ImageReadMode, decode_jpeg
    return decode_jpeg, ImageReadMode.RGB


# EXIF orientation -> the tensor operation on (C, H, W) that Pillow's transpose does (ImageOps.exif_transpose).
def _upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1).flip(2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(image, -1, (1, 2))
    if orientation == 7:
        return image.transpose(1, 2).flip(1).flip(2)
    if orientation == 8:
        return torch.rot90(image, 1, (1, 2))
    return image


class TorchJpegDecoder:
    """:class:`tlzoo.images.decode.ImageDecoder` on ``device``: nvJPEG on a CUDA device, libjpeg-turbo on the CPU."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        name = gpu_decoder()  # the recipe a cached run predicts (tlzoo_torch.gpu_decoder)
        self.name = name if self.device.type == "cuda" else name.replace("nvjpeg", "libjpeg-turbo", 1)
        self._decode, self._mode = _decode_jpeg()

    def decode(self, jpegs: list[Jpeg], size: tuple[int, int], prep: Preprocessing) -> list[np.ndarray | None]:
        if not jpegs:
            return []
        out, ok = self.decode_on_device(jpegs, size, prep)
        host = out.cpu().numpy()  # one copy to the host for the batch
        return [host[k] if ok[k] else None for k in range(len(jpegs))]

    def decode_on_device(self, jpegs: list[Jpeg], size: tuple[int, int],
                         prep: Preprocessing) -> tuple[torch.Tensor, list[bool]]:  # fmt: skip
        """The batch as (N, H, W, 3) uint8 on the decoder's device (an NHWC view of NCHW memory, which is
        channels_last), and which JPEGs it decoded (the others' rows are left as they were)."""
        data = [torch.frombuffer(bytearray(j.data), dtype=torch.uint8) for j in jpegs]
        try:  # one batched call (nvJPEG decodes the batch together); it fails whole if one file fails
            images: list[torch.Tensor | None] = list(self._decode(data, mode=self._mode, device=self.device))
        except RuntimeError:
            images = [self._one(d) for d in data]
        out = torch.empty((len(jpegs), 3, *size), dtype=torch.uint8, device=self.device)
        ok = [False] * len(jpegs)
        for k, (jpeg, image) in enumerate(zip(jpegs, images)):
            if image is None or image.shape[0] != 3 or tuple(image.shape[1:]) != (jpeg.height, jpeg.width):
                continue
            out[k] = self._resized(_upright(image, jpeg.orientation), size, prep)
            ok[k] = True
        return out.permute(0, 2, 3, 1), ok

    def batch_on_device(self, rows: list[Any], size: tuple[int, int],
                        allocate: Any = None) -> torch.Tensor:  # fmt: skip
        """One (N, H, W, 3) uint8 batch on the device from ``rows``: each a host image (copied up from pinned
        memory, stacked there by ``allocate``) or a :class:`OnDevice` row of a decoded batch (copied on the
        device). A batch whose rows are all one decoded batch's, in order, is that batch (no copy)."""
        devices = [r for r in rows if isinstance(r, OnDevice)]
        if len(devices) == len(rows) and rows:
            source = devices[0].batch
            if all(r.batch is source for r in devices) and [r.row for r in devices] == list(range(len(source))):
                return source
        out = torch.empty((len(rows), *size, 3), dtype=torch.uint8, device=self.device)
        host = [k for k, r in enumerate(rows) if not isinstance(r, OnDevice)]
        if host:
            shape = (len(host), *size, 3)
            staged = np.stack([rows[k] for k in host], out=allocate(shape, np.uint8) if allocate else None)
            up = torch.from_numpy(staged).to(self.device, non_blocking=True)
            for j, k in enumerate(host):
                out[k] = up[j]
        for k, r in enumerate(rows):
            if isinstance(r, OnDevice):
                out[k] = r.batch[r.row]
        return out

    def decode_to_device(self, jpegs: list[Jpeg], size: tuple[int, int], prep: Preprocessing,
                         to_host: bool) -> tuple[list[OnDevice | None], Any]:  # fmt: skip
        """:meth:`decode_on_device`'s rows (None where a JPEG failed: Pillow's), and with ``to_host`` the batch's
        pixels on their way to the host (:meth:`to_host`) for the store."""
        if not jpegs:
            return [], None
        batch, ok = self.decode_on_device(jpegs, size, prep)
        return [OnDevice(batch, k) if ok[k] else None for k in range(len(jpegs))], self.to_host(batch) if to_host else None

    def host_batch(self, batch: torch.Tensor) -> np.ndarray:
        """A batch on the device as a host array (for a feature engine that takes host arrays)."""
        return batch.cpu().numpy()

    def to_host(self, batch: torch.Tensor) -> Any:
        """``batch``'s pixels on their way to pinned host memory (``np.asarray`` waits for them): the store's
        copy of what the GPU decoded, taken off the critical path."""
        from .backend import OnTheWay

        return OnTheWay(batch) if batch.device.type != "cpu" else batch.numpy()

    def _one(self, data: torch.Tensor) -> torch.Tensor | None:
        try:
            return self._decode(data, mode=self._mode, device=self.device)  # type: ignore[no-any-return]
        except RuntimeError:
            return None  # Pillow decodes it (or says why it cannot)

    @staticmethod
    def _resized(image: torch.Tensor, size: tuple[int, int], prep: Preprocessing) -> torch.Tensor:
        """``image`` (3, H, W) uint8, upright, to ``size`` by :func:`tlzoo.images.decode.resize_plan`."""
        h, w = size
        plan = resize_plan(float(image.shape[2]), float(image.shape[1]), size, prep)
        rw, rh = plan.whole
        if (rh, rw) == tuple(image.shape[1:]):
            resized = image
        else:
            mode = "bicubic" if prep.interpolation == "bicubic" else "bilinear"
            x = F.interpolate(image[None].float(), size=(rh, rw), mode=mode, align_corners=False, antialias=True)
            resized = x[0].round_().clamp_(0, 255).to(torch.uint8)
        if prep.resize == "pad":
            canvas = torch.tensor(prep.pad_colour(), dtype=torch.uint8, device=image.device)[:, None, None]
            canvas = canvas.expand(3, h, w).clone()
            x0, y0 = plan.at
            canvas[:, y0 : y0 + rh, x0 : x0 + rw] = resized
            return canvas
        left, top = plan.crop
        return resized[:, top : top + h, left : left + w]


class OnDevice:
    """Row ``row`` of a batch the decoder left on its device."""

    __slots__ = ("batch", "row")

    def __init__(self, batch: torch.Tensor, row: int) -> None:
        self.batch, self.row = batch, row


def working_decoder(device: str) -> TorchJpegDecoder | None:
    """The decoder on ``device`` if it decodes a small JPEG there as it should (torchvision may be built
    without nvJPEG, or the GPU may refuse), else None: every image is then Pillow's."""
    import io

    from PIL import Image

    from tlzoo.images.decode import SQUASH, gpu_decodable

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buf, "JPEG", quality=95)
    jpeg = gpu_decodable(buf.getvalue())
    try:
        decoder = TorchJpegDecoder(device)
        got = decoder.decode([jpeg], (16, 16), SQUASH)[0] if jpeg is not None else None
    except Exception:  # noqa: BLE001 - no CUDA image ops in this torchvision build, a GPU that refuses, ...
        return None
    if got is None or np.abs(got.astype(np.int16) - np.array([200, 40, 40])).max() > 4:
        return None
    return decoder
