"""The input path, as ratios measured in one run (the machine's speed drifts; only ratios are compared):

1. decoding 4000x3000 JPEGs to 224 px: tlzoo's draft-scaled, upright decode against Pillow's full decode and
   resize, interleaved;
2. feature extraction end to end: the main job (MobileNetV2 IMAGENET1K_V1, 224 px, the digits) with an empty
   feature cache, minus the same run with every feature cached, per image, against onnxruntime's batch-32 rate
   on the same run's exported classifier (goal >= 0.8x; the fixed costs count), for the first run on a machine
   and for a run where auto's earlier choice is remembered (see feature_extraction);

3. peak anonymous memory (RssAnon summed over the process tree, sampled from /proc every 50 ms; the decoded-pixel
   store's page-cache pages do not count) of a one-epoch fine-tune at 224 px over N and 8N JPEGs (N = 400 and
   1,000), through the store (goal: ratio <= 1.2 for both) and decoded into memory as before (``--no-cache``);
4. decodes counted (each run's ``images_decoded``) across a compare of four strategies and a second run.

    python benchmarks/input_pipeline.py [--images 8] [--rounds 5] [--no-features] [--feature-rounds 2]
                                        [--no-memory] [--memory-n 400 1000]

A part skipped (--no-features, --no-memory) keeps its last result, with the day it was measured.

Writes benchmarks/results/input_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import RESULTS, machine, write


def photos(folder: Path, n: int) -> list[Path]:
    """``n`` 4000x3000 baseline JPEGs (quality 90) made from scikit-image's sample photographs."""
    from skimage import data

    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    paths = []
    for i in range(n):
        image = Image.fromarray(sources[i % len(sources)]).resize((4000, 3000), Image.Resampling.BICUBIC)
        path = folder / f"photo{i}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def full_decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    """What tlzoo did before: decode at full size, convert, resize (bilinear)."""
    with Image.open(path) as image:
        image.load()
        rgb = image.convert("RGB")
    return np.asarray(rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-features", action="store_true", help="skip feature extraction end to end")
    parser.add_argument("--feature-rounds", type=int, default=2, help="alternated rounds of the end-to-end part")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory and the decode counts")
    parser.add_argument("--memory-n", type=int, nargs="+", default=[400, 1000],
                        help="N of the peak-memory part, one or more (N and 8N images each)")
    args = parser.parse_args()
    from tlzoo.images.decode import load_image
    from tlzoo.specs import TORCHVISION_IMAGENET

    size = (224, 224)
    times: dict[str, list[float]] = {"full decode + resize": [], "tlzoo squash": [], "tlzoo crop 0.875": []}
    runs = {"full decode + resize": lambda p: full_decode(p, size),
            "tlzoo squash": lambda p: load_image(p, size),
            "tlzoo crop 0.875": lambda p: load_image(p, size, TORCHVISION_IMAGENET.with_resize("crop", crop_fraction=0.875))}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        paths = photos(Path(tmp), args.images)
        for name, run in runs.items():  # warm-up: imports, file cache
            run(paths[0])
        for _ in range(args.rounds):
            for name, run in runs.items():  # interleaved rounds
                started = time.perf_counter()
                for path in paths:
                    run(path)
                times[name].append((time.perf_counter() - started) / len(paths) * 1000)
        diff = float(np.abs(load_image(paths[0], size).astype(int) - full_decode(paths[0], size)).mean())
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "machine": machine(), "images": args.images, "rounds": args.rounds, "photo": "4000x3000 baseline JPEG, quality 90",
        "ms_per_image": {k: round(v, 2) for k, v in median.items()},
        "speedup_vs_full_decode": {k: round(median["full decode + resize"] / v, 2) for k, v in median.items()},
        "squash_mean_abs_diff_vs_full_decode": round(diff, 3),
        "command": "python benchmarks/input_pipeline.py",
    }  # fmt: skip
    # A part skipped keeps its last measurement from the results file, marked with the day it was made.
    last = RESULTS / "input_pipeline.json"
    previous = json.loads(last.read_text()) if last.exists() else {}
    if not args.no_features:
        result["feature_extraction"] = feature_extraction(args.feature_rounds)
    if not args.no_memory:
        result["peak_memory"] = peak_memory(sorted(set(args.memory_n)))
        result["decodes"] = decode_counts()
    for part in ("feature_extraction", "peak_memory", "decodes"):
        if part not in result and isinstance(previous.get(part), dict):
            result[part] = {"measured": previous.get("date"), **previous[part]}
    write("input_pipeline", result)
    for name in times:
        print(f"{name:>22}: {median[name]:7.2f} ms/image ({result['speedup_vs_full_decode'][name]:.2f}x)")
    print(f"squash against the full decode: mean |diff| {diff:.3f} grey levels")
    if "feature_extraction" in result:
        for name, fe in result["feature_extraction"].get("rows", {}).items():
            print(f"feature extraction end to end, {name}: {fe['end_to_end_images_per_s']} images/s against "
                  f"onnxruntime batch 32 {fe['onnxruntime_b32_images_per_s']} ({fe['ratio']}x)")
    if "peak_memory" in result:
        for mode, row in result["peak_memory"]["runs"].items():
            ratios = ", ".join(f"{k}: {v}x" for k, v in row.get("ratios", {"8N vs N": row["ratio"]}).items())
            print(f"peak RssAnon, {mode}: " + ", ".join(f"{n} images {mb} MiB" for n, mb in row["peak_mib"].items())
                  + f" (ratios {ratios})")
        print("images decoded: " + ", ".join(f"{k} {v}" for k, v in result["decodes"]["images_decoded"].items()))


FIRST = "first run on this machine"
REMEMBERED = "auto, its choice remembered"


def feature_extraction(rounds: int = 2) -> dict:
    """Cold minus cached wall time of the main job, per image, against onnxruntime at batch 32 on its export,
    in alternated rounds, each round's ratios from its own runs. Two cold runs a round:

    - the first run on this machine: ``--feature-engine auto`` with nothing prepared (no export, nothing
      remembered), which is the framework's own engine;
    - auto on a machine where an earlier run measured it (the export and auto's memory kept in the engines'
      cache folder, features and decoded pixels emptied): it reopens the export without importing the framework.
    """
    import json
    import os
    import shutil
    import subprocess

    from _common import import_offline_weights, tlzoo_cmd

    work = Path(tempfile.mkdtemp(prefix="tlzoo-input-"))
    cache = work / "cache"
    env = {**os.environ, "TLZOO_CACHE": str(cache)}
    import_offline_weights(env)

    def train(*extra: str) -> list[str]:
        return tlzoo_cmd("train", "--backbone", "mobilenet_v2", "--test-split", "0.2", "--json", "--quiet",
                         "--out-dir", str(work / "runs"), "--name", "r", "--exist-ok", *extra)  # fmt: skip

    def timed(*extra: str) -> tuple[float, dict]:
        started = time.perf_counter()
        done = subprocess.run(train(*extra), capture_output=True, text=True, env=env, check=True)
        return time.perf_counter() - started, json.loads(done.stdout)

    def cold(*, keep_engines: bool) -> None:
        """Empty everything a run could reuse (the weights kept; the engines' folder kept when asked)."""
        shutil.rmtree(cache / "store", ignore_errors=True)
        features = cache / "features"
        for entry in (features.iterdir() if features.is_dir() else []):
            if not (keep_engines and entry.name == "engines"):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    # The remembered row's preparation: an export, then an auto run that measures it and remembers the winner.
    cold(keep_engines=False)
    timed("--feature-engine", "onnxruntime")
    cold(keep_engines=True)
    _, measured = timed()
    subprocess.run(tlzoo_cmd("export", "onnx", str(work / "runs" / "r")), env=env, check=True, capture_output=True)
    from tlzoo.images.decode import load_image
    from tlzoo_onnx.predictor import Predictor

    # the classifier is exported to a folder of its own: the runs below write over runs/r
    shutil.copytree(work / "runs" / "r", work / "exported")
    predictor = Predictor(work / "exported" / "model.onnx", provider="cpu")
    rows = [line.split(",")[0] for line in (work / "exported" / "split.csv").read_text().splitlines()[1:]]
    n = len(rows)
    images = np.stack([load_image(p, predictor.input_size, predictor.preprocessing) for p in rows[:256]])
    predictor.predict_proba(images[:32], batch_size=32)  # warm-up

    def ort_rate() -> float:
        started = time.perf_counter()
        predictor.predict_proba(images, batch_size=32)
        return len(images) / (time.perf_counter() - started)

    out: dict[str, list[dict]] = {FIRST: [], REMEMBERED: []}
    for _ in range(rounds):
        engines = cache / "features" / "engines"
        shutil.move(engines, work / "engines-aside")  # the first run's machine has none
        cold(keep_engines=False)
        first_s, first = timed()
        cold(keep_engines=False)
        shutil.move(work / "engines-aside", engines)
        remembered_s, remembered = timed()
        cached_s, cached = timed()
        ort = ort_rate()
        assert first["feature_cache"] == remembered["feature_cache"] == "miss" and cached["feature_cache"] == "hit"
        assert "remembered" in remembered["feature_engine_auto"], remembered["feature_engine_auto"]
        for name, cold_s, run in ((FIRST, first_s, first), (REMEMBERED, remembered_s, remembered)):
            e2e = n / (cold_s - cached_s)
            out[name].append({"cold_s": round(cold_s, 2), "cached_s": round(cached_s, 2),
                              "feature_seconds": run["feature_seconds"], "feature_engine": run["feature_engine"],
                              "end_to_end_images_per_s": round(e2e, 1), "onnxruntime_b32_images_per_s": round(ort, 1),
                              "ratio": round(e2e / ort, 2)})  # fmt: skip
    mid = statistics.median
    return {"images": n, "goal": ">= 0.8",
            "remembered_from": measured.get("feature_engine_auto"),
            "rows": {name: {"rounds": r, "end_to_end_images_per_s": round(mid(x["end_to_end_images_per_s"] for x in r), 1),
                            "onnxruntime_b32_images_per_s": round(mid(x["onnxruntime_b32_images_per_s"] for x in r), 1),
                            "ratio": round(mid(x["ratio"] for x in r), 2)} for name, r in out.items()}}  # fmt: skip


def _tree_rss_anon(pid: int) -> int:
    """RssAnon (bytes) of ``pid`` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def _peak_rss_anon(cmd: list[str], env: dict[str, str]) -> tuple[int, float, dict]:
    """Run ``cmd``; its tree's peak RssAnon, its wall time and its JSON output."""
    import json
    import subprocess

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_anon(proc.pid))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return peak, time.perf_counter() - started, json.loads(out)


def _jpeg_folder(folder: Path, n: int, classes: int = 10) -> Path:
    """``n`` 320x240 JPEGs in ``classes`` class folders: crops of scikit-image's photographs, tinted per class."""
    from skimage import data

    rng = np.random.default_rng(0)
    sources = [np.asarray(Image.fromarray(a).resize((640, 480))) for a in
               (data.chelsea(), data.coffee(), data.astronaut(), data.rocket())]  # fmt: skip
    for i in range(n):
        c = i % classes
        src = sources[i % len(sources)]
        y, x = rng.integers(0, 240), rng.integers(0, 320)
        crop = src[y : y + 240, x : x + 320].astype(np.float32) * (0.6 + 0.04 * c)
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(folder / f"c{c}" / f"{i:05d}.jpg", quality=85)
    return folder


def peak_memory(ns: list[int]) -> dict:
    """Peak RssAnon of a one-epoch fine-tune at 224 px over ``n`` and ``8 n`` images for each ``n``: through the
    decoded-pixel store (a cold store: the fill is part of the run) and decoded into memory (``--no-cache``),
    interleaved. The final evaluation runs at the training batch, from the store: its memory does not grow with
    the validation split (it did at a fixed batch of 64, 1.51x at 100 against 800 images)."""
    import os

    from _common import tlzoo_cmd

    work = Path(tempfile.mkdtemp(prefix="tlzoo-memory-"))
    sizes = sorted({m for n in ns for m in (n, 8 * n)})
    folders = {m: _jpeg_folder(work / f"data{m}", m) for m in sizes}
    runs: dict[str, dict] = {"store": {"peak_mib": {}, "wall_s": {}}, "in memory (--no-cache)": {"peak_mib": {}, "wall_s": {}}}
    for m in sizes:
        for mode, extra in (("store", []), ("in memory (--no-cache)", ["--no-cache"])):
            env = {**os.environ, "TLZOO_CACHE": str(work / f"cache-{m}-{len(extra)}")}
            cmd = tlzoo_cmd("train", "--data", str(folders[m]), "--backbone", "mobilenet_v2", "--weights", "none",
                            "--strategy", "fine-tune", "--freeze", "48", "--epochs", "1", "--image-size", "224",
                            "--batch-size", "32", "--json", "--quiet", "--out-dir", str(work / "runs"),
                            "--name", f"r{m}{len(extra)}", *extra)  # fmt: skip
            peak, wall, summary = _peak_rss_anon(cmd, env)
            runs[mode]["peak_mib"][str(m)] = round(peak / 2**20)
            runs[mode]["wall_s"][str(m)] = round(wall, 1)
            print(f"  {mode}, {m} images: peak RssAnon {peak / 2**20:.0f} MiB, {wall:.0f} s, "
                  f"{summary.get('images_decoded')} decoded")  # fmt: skip
    for row in runs.values():
        row["ratios"] = {f"{8 * n} vs {n}": round(row["peak_mib"][str(8 * n)] / row["peak_mib"][str(n)], 2) for n in ns}
        row["ratio"] = max(row["ratios"].values())
    shutil.rmtree(work, ignore_errors=True)
    return {"backbone": "mobilenet_v2 (random weights, --freeze 48)", "image_size": 224, "epochs": 1,
            "images": sizes, "runs": runs, "goal": "store ratio <= 1.2 for every N"}  # fmt: skip


def decode_counts() -> dict:
    """Each run's images_decoded: a compare of four strategies on the digits at 64 px, then one more run."""
    import json
    import os
    import subprocess

    from _common import tlzoo_cmd

    work = Path(tempfile.mkdtemp(prefix="tlzoo-decodes-"))
    env = {**os.environ, "TLZOO_CACHE": str(work / "cache")}
    common = ["--image-size", "64", "--epochs", "1", "--weights", "none"]
    done = subprocess.run(tlzoo_cmd("compare", "--backbones", "mobilenet_v2", "--strategies",
                                    "feature-extract,fine-tune,two-stage,scratch", "--no-onnx", "--json",
                                    "--out", str(work / "cmp"), *common), capture_output=True, text=True, env=env)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"compare failed: {done.stderr[-2000:]}")
    counts = {f"compare {r['strategy']}": r["images_decoded"] for r in json.loads(done.stdout)}
    again = subprocess.run(tlzoo_cmd("train", "--strategy", "fine-tune", "--json", "--quiet", "--out-dir",
                                     str(work / "runs"), *common), capture_output=True, text=True, env=env, check=True)  # fmt: skip
    counts["a second fine-tune run"] = json.loads(again.stdout)["images_decoded"]
    return {"data": "the embedded digits (1,797 images), 64 px, mobilenet_v2", "images_decoded": counts}


if __name__ == "__main__":
    main()
