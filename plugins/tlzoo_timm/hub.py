"""timm weights: from the Hugging Face hub (at the revision timm names), or a user's file, stored as one
safetensors file per tag in tlzoo's timm weights folder."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

from tlzoo.errors import WeightsError, one_line
from tlzoo.files import atomic_copy, atomic_write
from tlzoo.weights import offline

HUB = "hf-hub:"
FILENAME = "model.safetensors"


def respect_tlzoo_offline() -> None:
    """``TLZOO_OFFLINE=1`` means ``HF_HUB_OFFLINE=1``, which huggingface_hub reads when it is imported: call this
    before importing it (or timm), so an offline machine fails at once instead of retrying for 46 s."""
    if offline():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _hub(weights: Any) -> tuple[str, str | None]:
    repo, _, revision = weights.url[len(HUB):].partition("@")
    return repo, revision or None


def find_local(weights: Any, dest: Path) -> bool:
    """The tag's ``model.safetensors`` from a Hugging Face cache that already holds it (``HF_HOME``), linked or
    copied to ``dest``; False when there is none (or the tag is not on the hub)."""
    if not weights.url.startswith(HUB):
        return False
    respect_tlzoo_offline()
    from huggingface_hub import try_to_load_from_cache

    repo, revision = _hub(weights)
    cached = try_to_load_from_cache(repo, FILENAME, revision=revision)
    if not isinstance(cached, str):
        return False
    _link_or_copy(Path(cached), dest)
    return True


def download(weights: Any, dest: Path) -> None:
    """The tag's ``model.safetensors`` from the hub, at the revision timm names (into the Hugging Face cache,
    then linked to ``dest``)."""
    if not weights.url.startswith(HUB):
        raise WeightsError(f"timm publishes {weights.tag} only at {weights.url or 'no address'}, not on the Hugging "
                           f"Face hub: fetch it yourself, then `tlzoo weights import FILE --backbone "
                           f"timm/{dest.name.split('.')[0]}.{weights.tag}`")  # fmt: skip
    from huggingface_hub import hf_hub_download

    repo, revision = _hub(weights)
    _link_or_copy(Path(hf_hub_download(repo, FILENAME, revision=revision)), dest)


def _link_or_copy(source: Path, dest: Path) -> None:
    def place(tmp: Path) -> None:
        try:
            tmp.unlink()
            os.link(os.path.realpath(source), tmp)  # the hub cache's blob, without a second copy
        except OSError:
            shutil.copyfile(source, tmp)

    atomic_write(dest, place)


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes); raises for anything else."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if not 2 <= size <= min(100 << 20, max(os.path.getsize(path) - 8, 0)):
            raise WeightsError(f"{path} is not a safetensors file (no valid header)")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise WeightsError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict) or not any(k != "__metadata__" for k in header):
        raise WeightsError(f"{path} is a safetensors file without tensors")
    return header


def import_file(source: Path, dest: Path) -> None:
    """A ``.safetensors`` file is checked and stored as it is; a ``.pth``/``.pt``/``.bin`` checkpoint is read
    with ``torch.load(weights_only=True)`` (timm's own reader: it unwraps ``state_dict``/``model`` and prefers
    EMA weights) and stored as safetensors."""
    if source.suffix == ".safetensors":
        safetensors_header(source)
        atomic_copy(source, dest)
        return
    if source.suffix not in (".pth", ".pt", ".bin"):
        raise WeightsError(f"{source}: give a .safetensors file, or a .pth/.pt/.bin state dict")
    from safetensors.torch import save_file
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(source), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a pickle with code, or not a checkpoint at all
        raise WeightsError(f"{source} could not be read as a state dict without running code "
                           f"({type(exc).__name__}: {one_line(exc, 200)})") from exc  # fmt: skip
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items() if hasattr(v, "detach")}
    if not tensors:
        raise WeightsError(f"{source} holds no tensors")
    atomic_write(dest, lambda tmp: save_file(tensors, str(tmp)))
