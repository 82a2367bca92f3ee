"""Which decoder takes a run's JPEGs (``--decoder``): Pillow (:func:`tlzoo.images.decode.load_image`), or the
framework's GPU decoder (nvJPEG for torch) when the model computes on a CUDA device. Every other file, and any JPEG
the GPU decoder cannot take, is Pillow's.

The choice is part of the decode recipe, hence of every cache key. A run whose features may all be cached
predicts it without importing the framework (:func:`predicted`); the run that extracts keys what it extracted
by the decoder it really used. The framework's side comes in as a :class:`GpuDecoder` (see
``tlzoo.adapters.gpu_decoder``), so the input path never reaches up to the adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from .decode import ImageDecoder, cuda_driver_present

CHOICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class GpuDecoder:
    """A framework's GPU decoder as the input path sees it: its recipe ``name`` (None: the framework has none,
    told without importing it) and ``open(device)``, the decoder on that device or None where it does not
    decode there."""

    framework: str
    name: str | None
    open: Callable[[str], ImageDecoder | None]


def may_be_cuda(device: str) -> bool:
    """Whether ``--device device`` may compute on CUDA, told without importing a framework (a driver present)."""
    text = device.strip().lower()
    return text.startswith("cuda") or text.isdigit() or "," in text or (text == "auto" and cuda_driver_present())


def predicted(choice: str, device: str, gpu: GpuDecoder) -> str | None:
    """The decoder a run with ``--decoder choice`` and ``--device device`` will use (its recipe name; None:
    Pillow), told without importing the framework: a CUDA device is assumed where a driver is present."""
    if choice == "cpu" or not may_be_cuda(device):
        return None
    return gpu.name


def check(choice: str) -> None:
    if choice not in CHOICES:
        raise UsageError(f"--decoder {choice!r} is not a decoder: use auto, cpu or gpu")


def resolve(choice: str, gpu: GpuDecoder, device: str | None) -> ImageDecoder | None:
    """The decoder for a model computing on ``device`` (a run's training engine's, or a trained run's for predict
    and evaluate; None: an engine that takes its images from the host, such as a plugin's feature engine).
    ``--decoder gpu`` with none here is refused."""
    check(choice)
    if choice == "cpu":
        return None
    why = None
    if gpu.name is None:
        why = f"the {gpu.framework} framework offers no GPU decoder"
    elif device is None:
        why = "the feature engine takes its images from the host"
    else:
        decoder = gpu.open(device)
        if decoder is not None:
            return decoder
        cuda = device.startswith("cuda")
        why = f"{gpu.name} does not decode on {device} here" if cuda else f"the run computes on {device}, not a CUDA device"
    if choice == "gpu":
        raise UsageError(f"--decoder gpu: {why}; use --decoder auto or cpu")
    return None
