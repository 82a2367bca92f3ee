"""The input path: from a user's files to batches on a device, for every framework.

    files --scan--> ImageList --split--> train / val / test --decode--> store --batches--> device
    folders.py      sets.py    split.py                       decode.py   feed.py, order.py,
                                                              decoders.py augment.py
                                                              store.py, aliases.py, locks.py

- ``folders``: an ImageFolder tree or a ``path,label`` CSV to labelled files (:class:`ImageList`), with odd layouts
  reported; ``datasets``: the embedded digits when no data is given.
- ``split``: seeded, stratified train / val / test planned on the files alone (:class:`Sources`), then decoded
  (:class:`Reading`) into the store or into memory (:class:`ImageSet`).
- ``decode``: one image to RGB uint8 at the input size (EXIF upright, the weights' resize policy, Pillow's
  reduced-size JPEG decoding); ``decoders``: whether a framework's GPU decoder takes the JPEGs;
  ``batches``: many images decoded on a pool of threads ahead of whoever consumes them; ``normalize``: uint8
  to the backbone's float input.
- ``store``: decoded pixels kept on disk (memory-mapped segments) so the next run decodes nothing; ``aliases``:
  each file's content hash, remembered by its path and times; ``locks``: who fills the store and who reads it.
- ``order``: each epoch's order (block-wise when the store is larger than memory); ``feed``: training batches
  gathered ahead on threads (:class:`Prefetcher`); ``augment``: augmentation parameters, drawn on the host,
  applied by the framework on its device.

A framework plugin receives its batches through ``feed.Prefetcher`` (rows of ``images``, an array or the store's
``StoreImages``, in the order the engine gives) and ``augment``; it never opens the store itself. Nothing in
this package imports a framework, the training loop or the run directory: it sits below all of them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The package's public names, each loaded from its module on first use (numpy and Pillow are not on the path
# of `tlzoo --help`).
_API = {
    "Sample": "sets", "ImageList": "sets", "ImageSet": "sets", "labelled": "sets", "check_classes": "sets",
    "fingerprint": "sets",
    "scan": "folders", "image_files": "folders", "ignored_text": "folders", "layout_warnings": "folders",
    "same_files_in_two_classes": "folders",
    "DecodedBatch": "batches", "decode_batches": "batches", "decode_all": "batches", "load": "batches",
    "ImageDecoder": "decode", "load_image": "decode", "Jpeg": "decode",
    "Sources": "split", "Reading": "split", "Splits": "split", "plan": "split",
    "stratified_split": "split",
    "Prefetcher": "feed",
}  # fmt: skip

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
