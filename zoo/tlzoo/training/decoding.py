"""Which decoder takes a run's JPEGs (``--decoder``): Pillow (:func:`tlzoo.decode.load_image`), or the
framework's GPU decoder (its adapter's ``image_decoder``: nvJPEG for torch) when the run computes on a CUDA
device. Every other file, and any JPEG the GPU decoder cannot take, is Pillow's.

The choice is part of the decode recipe, hence of every cache key. A run whose features may all be cached
predicts it without importing the framework (:func:`predicted`); the run that extracts keys what it
extracted by the decoder it really used.
"""

from __future__ import annotations

from typing import Any

from ..adapters import adapter_for, framework_spec
from ..decode import ImageDecoder, cuda_driver_present
from ..errors import UsageError
from ..plugins import load_object
from ..specs import BackboneSpec


CHOICES = ("auto", "cpu", "gpu")


def _named(framework: str) -> str | None:
    """The name of ``framework``'s GPU decoder (``FrameworkSpec.gpu_decoder``), None without one."""
    where = framework_spec(framework).gpu_decoder
    if not where:
        return None
    name = load_object(where, f"the {framework} framework's gpu_decoder")()
    return str(name) if name else None


def may_be_cuda(device: str) -> bool:
    """Whether ``--device device`` may compute on CUDA, told without importing a framework (a driver present)."""
    text = device.strip().lower()
    return text.startswith("cuda") or text.isdigit() or "," in text or (text == "auto" and cuda_driver_present())


def predicted(choice: str, spec: BackboneSpec, device: str) -> str | None:
    """The decoder a run with ``--decoder choice`` and ``--device device`` will use (its recipe name; None:
    Pillow), told without importing the framework: a CUDA device is assumed where a driver is present."""
    if choice == "cpu" or not may_be_cuda(device):
        return None
    return _named(spec.framework)


def check(choice: str) -> None:
    if choice not in CHOICES:
        raise UsageError(f"--decoder {choice!r} is not a decoder: use auto, cpu or gpu")


def resolve(choice: str, framework: str, device: str | None) -> ImageDecoder | None:
    """The decoder for a model of ``framework`` computing on ``device`` (a run's training engine's, or a trained
    run's for predict and evaluate; None: an engine that takes its images from the host, such as a plugin's
    feature engine). ``--decoder gpu`` with none here is refused."""
    check(choice)
    if choice == "cpu":
        return None
    name = _named(framework)
    why = None
    if name is None:
        why = f"the {framework} framework offers no GPU decoder"
    elif device is None:
        why = "the feature engine takes its images from the host"
    else:
        decoder: Any = adapter_for(framework).image_decoder(device)
        if decoder is not None:
            return decoder  # type: ignore[no-any-return]
        cuda = device.startswith("cuda")
        why = f"{name} does not decode on {device} here" if cuda else f"the run computes on {device}, not a CUDA device"
    if choice == "gpu":
        raise UsageError(f"--decoder gpu: {why}; use --decoder auto or cpu")
    return None
