"""A trained run directory, loaded back: the classifier, its labels and its preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TlzooError, UsageError, WeightsError, one_line
from ..specs import Preprocessing
from .runfiles import CLASSIFIER, ClassifierMeta, RunFiles


@dataclass
class TrainedRun:
    run_dir: Path
    meta: ClassifierMeta
    model: Any  # the framework's own classifier, as its adapter loaded it
    device: str = "cpu"  # where it runs, as its framework names it

    @property
    def provider(self) -> str:
        """What runs it, for a user (an exported file's runtime says its execution provider)."""
        return f"{self.framework} ({self.device})"

    @property
    def framework(self) -> str:
        return self.meta.framework

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.run_dir)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.meta.input_size

    @property
    def thresholds(self) -> list[float] | None:
        """A multi-label run's per-label thresholds (None: single-label)."""
        return self.meta.thresholds

    @property
    def preprocessing(self) -> Preprocessing:
        return self.meta.preprocessing

    @property
    def adapter(self) -> Any:
        from ..adapters import adapter_for

        return adapter_for(self.framework)

    def image_decoder(self, choice: str) -> Any:
        """The GPU decoder for this run's JPEGs under ``--decoder choice`` (auto, cpu, gpu), where it computes on
        a CUDA device and its framework offers one; None: Pillow (see :mod:`tlzoo.images.decoders`)."""
        from ..adapters import gpu_decoder
        from ..images.decoders import resolve

        return resolve(choice, gpu_decoder(self.framework), self.device)

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Logits for RGB uint8 images (N, H, W, 3) at the input size."""
        from ..images.normalize import normalize

        adapter = self.adapter
        out = []
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size], self.preprocessing)
            out.append(np.asarray(adapter.classifier_logits(self.model, x)))
        return np.concatenate(out)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from ..heads import probabilities

        return probabilities(self.logits(images, batch_size), self.meta.output)

    def predict(self, images: Any, *, top_k: int | None = None, batch_size: int = 32, strict: bool = False,
                threshold: float | None = None) -> list[Any]:  # fmt: skip
        """Top-k labels (default 5) for image files, folders, uint8 arrays or PIL images (unreadable files
        skipped); a multi-label run's labels over its thresholds (``threshold``: one for every label)."""
        from .inference import predict_stream

        sources = images if isinstance(images, list) else [images]
        return list(predict_stream(self, sources, top_k=top_k, batch_size=batch_size, strict=strict, threshold=threshold))


def load_run(run_dir: Path | str, device: str = "cpu") -> TrainedRun:
    """A finished run directory, its classifier loaded by its framework's adapter (no code from its files) and
    placed on ``device`` (a ``--device`` value: auto, cpu, cuda, cuda:N, N, mps)."""
    from ..adapters import adapter_for

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a run directory")
    meta = RunFiles(run_dir).read_meta()
    model_file = run_dir / meta.model_file
    if not model_file.is_file():
        raise UsageError(f"{run_dir} has no checkpoint ({meta.model_file})")
    adapter = adapter_for(meta.framework)
    where = adapter.inference_device(device)  # before loading: a framework may fix its devices when it starts
    try:
        model = _rebuild(run_dir, meta) if meta.head_only else adapter.load_classifier(run_dir, meta)
    except TlzooError:
        raise
    except Exception as exc:  # a checkpoint or classifier.json that was edited, truncated or swapped
        why = one_line(exc)
        raise UsageError(f"{run_dir}: the trained model does not load ({type(exc).__name__}: {why}); "
                         f"its files were edited or are corrupt: train it again") from None  # fmt: skip
    run = TrainedRun(run_dir=run_dir, meta=meta, model=adapter.classifier_to(model, where), device=where)
    h, w = run.input_size
    outputs = run.predict_proba(np.zeros((1, h, w, 3), np.uint8)).shape[1]
    if outputs != len(run.classes):
        raise UsageError(f"{run_dir}: the model has {outputs} outputs but {CLASSIFIER} names {len(run.classes)} classes; "
                         f"the run's files were edited or mixed up")  # fmt: skip
    return run


def _rebuild(run_dir: Path, meta: ClassifierMeta) -> Any:
    """A head-only run's classifier: its backbone from the weights it names (checked against the sha256 the
    run recorded), then its head."""
    from ..adapters import adapter_for
    from ..backbone import get_backbone
    from ..registry import get_registry
    from ..weights import file_digest, resolve

    head = RunFiles(run_dir).read_head(meta)
    try:
        spec = get_registry().resolve(meta.backbone, meta.framework)
    except UsageError:
        raise UsageError(f"{run_dir} was trained on {meta.backbone}, which no installed plugin provides "
                         f"(plugin: {meta.plugin.get('name', '?')}); install it to load this run") from None  # fmt: skip
    weights = resolve(spec, meta.weights)
    assert weights is not None and meta.weights_sha256 is not None
    if file_digest(weights.path, "sha256") != meta.weights_sha256:
        raise WeightsError(f"{run_dir} keeps only its head: its backbone is {meta.backbone} with the weights file of "
                           f"sha256 {meta.weights_sha256[:16]}..., but {weights.path} is a different file. Put the "
                           f"file it was trained with back, or train the run again")  # fmt: skip
    backbone = get_backbone(spec, pretrained=weights, input_size=meta.input_size)
    backbone.freeze("all")
    return adapter_for(meta.framework).classifier_from_head(backbone, meta.tap, head)
