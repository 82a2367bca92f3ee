"""Feature extraction speed: tlzoo's torch path (batch norms folded into the convolutions, then on the CPU one
TorchScript graph rewritten by oneDNN for inference, checked against the eager model) and its onnxruntime feature engine (a checked, cached ONNX export of the frozen backbone) against
onnxruntime on the exported classifier of the same backbone, and against the paths tlzoo used before (folded
and eager in channels_last; channels_last without folding; NCHW), alternated in one process. ``--feature-engine auto`` (the default) is timed as a run makes
it, once per call, with the onnxruntime export already cached: its measuring batches and its choice included.

    python benchmarks/feature_speed.py [--rounds 3] [--images 576]

MobileNetV2 at 224 px, batch 32, RGB uint8 images in; images/s of the whole call (normalization included).
The goal (issue 11): tlzoo's extraction >= 0.8x the images/s onnxruntime reaches on the exported classifier.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
from _common import import_offline_weights, write


def _rate(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=576)  # 18 batches: the fewest auto measures on
    args = parser.parse_args()

    import torch  # noqa: F401  (before anything else that loads LLVM)

    import tlzoo
    from tlzoo.images.datasets import ensure_digits
    from tlzoo.images.split import default_data_root

    import_offline_weights()
    digits = ensure_digits(default_data_root())
    work = Path(tempfile.mkdtemp(prefix="tlzoo-bench-features-"))
    data = work / "data"
    for class_dir in sorted(digits.iterdir()):
        (data / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:10]:
            (data / class_dir.name / f.name).symlink_to(f)
    run = tlzoo.train(backbone="torch/mobilenet_v2", data=str(data), out_dir=str(work / "runs"), name="fe",
                      verbose=False).run_dir  # fmt: skip
    exported = tlzoo.export(run, out=work / "fe.onnx", check=False)
    predictor = tlzoo.Predictor(exported["path"], provider="cpu")

    backbone = tlzoo.get_backbone("torch/mobilenet_v2", pretrained=True)
    from tlzoo import feature_engines

    t0 = time.perf_counter()
    engine = feature_engines.runner(backbone, None, "onnxruntime", work / "engines")  # export + check, once
    prepare_s = time.perf_counter() - t0
    old = tlzoo.get_backbone("torch/mobilenet_v2", pretrained=True)  # the NCHW-contiguous path, as before
    from tlzoo_torch.backend import fold_batch_norms

    unfolded = backbone.feature_model(None)  # channels_last and inference_mode, batch norms kept (tlzoo earlier)
    folded = fold_batch_norms(backbone.feature_model(None))  # folded, eager, channels_last (tlzoo before)
    images = np.random.default_rng(0).integers(0, 256, (args.images, 224, 224, 3), dtype=np.uint8)

    def nchw() -> None:
        import torch

        with torch.inference_mode():
            for i in range(0, len(images), 32):
                x = torch.from_numpy(np.ascontiguousarray(old.preprocess(images[i : i + 32]).transpose(0, 3, 1, 2)))
                old.model.eval()(x)

    choices: list[str] = []

    def auto() -> None:
        run = feature_engines.runner(backbone, None, "auto", work / "engines", images=len(images), batch_size=32)
        backbone.extract_features(images, batch_size=32, run=run)
        choices.append(run.choice.engine)  # type: ignore[attr-defined]

    runners = {
        "tlzoo torch (folded, oneDNN graph)": lambda: backbone.extract_features(images, batch_size=32),
        "tlzoo --feature-engine auto (export cached)": auto,
        "tlzoo --feature-engine onnxruntime": lambda: backbone.extract_features(images, batch_size=32, run=engine),
        "torch folded, eager, channels_last (tlzoo before)": lambda: backbone.extract_features(
            images, batch_size=32, run=lambda batch: backbone._run(folded, batch)),
        "torch channels_last, batch norms kept (tlzoo earlier)": lambda: backbone.extract_features(
            images, batch_size=32, run=lambda batch: backbone._run(unfolded, batch)),
        "torch NCHW (tlzoo earlier)": nchw,
        "onnxruntime, exported classifier": lambda: predictor.predict_proba(images, batch_size=32),
    }
    for fn in runners.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
            samples[name].append(_rate(runners[name], len(images)))
    rates = {k: round(median(v), 1) for k, v in samples.items()}
    ours, ort = rates["tlzoo torch (folded, oneDNN graph)"], rates["onnxruntime, exported classifier"]
    result = {
        "what": f"MobileNetV2 (IMAGENET1K_V1) at 224 px, batch 32, {args.images} random uint8 images, median of "
                f"{args.rounds} alternated rounds",
        "images_per_second": rates, "tlzoo_vs_onnxruntime": round(ours / ort, 2),
        "onnxruntime_engine_vs_onnxruntime": round(rates["tlzoo --feature-engine onnxruntime"] / ort, 2),
        "onnxruntime_engine_prepare_s": round(prepare_s, 1), "auto_chose": choices[1:],  # the warm-up's left out
        "tlzoo_vs_before": round(ours / rates["torch folded, eager, channels_last (tlzoo before)"], 2),
        "tlzoo_vs_unfolded": round(ours / rates["torch channels_last, batch norms kept (tlzoo earlier)"], 2),
        "tlzoo_vs_nchw": round(ours / rates["torch NCHW (tlzoo earlier)"], 2), "goal": ">= 0.8x onnxruntime",
    }  # fmt: skip
    print(result)
    write("feature_speed", result)


if __name__ == "__main__":
    main()
