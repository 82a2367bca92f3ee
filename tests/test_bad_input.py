"""Bad input, table-driven: every case exits with the right code, one clear line, no traceback, no new files.

Each case runs the real CLI in a subprocess from an empty working folder, with every path it may write
(--out-dir, --out) inside that folder; afterwards the folder must still be empty and the shared fixtures
untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import run_tlzoo
from .datagen import write_folder

# (id, arguments, exit code, words the message must contain). {w} is the shared fixture folder, {o} the case's
# own empty folder. Every case is a distinct kind of bad input.
CASES: list[tuple[str, list[str], int, str]] = [
    # train: strategy-specific options with a strategy they do not fit
    ("freeze-out-of-range", ["train", "-b", "resnet18", "--freeze", "99", "--data", "{w}/data"], 2, "--freeze 99 is out of range"),
    ("freeze-with-feature-extract", ["train", "-s", "feature-extract", "--freeze", "8", "--data", "{w}/data"], 2, "--freeze does not fit --strategy feature-extract"),
    ("freeze-with-scratch", ["train", "-s", "scratch", "--freeze", "8", "--data", "{w}/data"], 2, "--freeze does not fit --strategy scratch"),
    ("freeze-with-two-stage", ["train", "-s", "two-stage", "--freeze", "8", "--data", "{w}/data"], 2, "two-stage takes --unfreeze"),
    ("unfreeze-without-two-stage", ["train", "-s", "fine-tune", "--unfreeze", "3", "--data", "{w}/data"], 2, "--unfreeze does not fit --strategy fine-tune"),
    ("stage1-epochs-without-two-stage", ["train", "--stage1-epochs", "2", "--data", "{w}/data"], 2, "--stage1-epochs does not fit"),
    ("C-with-mlp-head", ["train", "--head", "mlp", "--C", "1", "--data", "{w}/data"], 2, "--C does not fit --strategy feature-extract --head mlp"),
    ("C-with-fine-tune", ["train", "-s", "fine-tune", "--C", "1", "--data", "{w}/data"], 2, "--C does not fit --strategy fine-tune"),
    ("hidden-without-mlp", ["train", "--hidden", "64", "--data", "{w}/data"], 2, "--hidden does not fit"),
    ("dropout-with-sklearn-head", ["train", "--dropout", "0.5", "--data", "{w}/data"], 2, "--dropout does not fit"),
    ("augment-on-feature-extract", ["train", "--augment", "flip", "--data", "{w}/data"], 2, "--augment flip does not fit --strategy feature-extract"),
    ("augment-on-feature-extract-no-cache", ["train", "--augment", "crop", "--no-cache", "--data", "{w}/data"], 2, "does not fit --strategy feature-extract"),
    ("no-augment-and-augment", ["train", "-s", "fine-tune", "--no-augment", "--augment", "flip", "--data", "{w}/data"], 2, "--no-augment contradicts --augment flip"),
    ("head-with-fine-tune", ["train", "-s", "fine-tune", "--head", "mlp", "--data", "{w}/data"], 2, "--head mlp does not fit --strategy fine-tune"),
    ("tap-out-of-range", ["train", "-b", "resnet18", "--tap", "999", "--data", "{w}/data"], 2, "--tap 999 is out of range"),
    ("unfreeze-out-of-range", ["train", "-b", "resnet18", "-s", "two-stage", "--unfreeze", "999", "--data", "{w}/data"], 2, "--unfreeze 999 is out of range"),
    # train: values out of range
    ("val-split-above-1", ["train", "--val-split", "1.5", "--data", "{w}/data"], 2, "--val-split must be in [0, 1)"),
    ("test-split-negative", ["train", "--test-split", "-0.1", "--data", "{w}/data"], 2, "--test-split must be in [0, 1)"),
    ("splits-leave-nothing", ["train", "--val-split", "0.6", "--test-split", "0.5", "--data", "{w}/data"], 2, "leave no training images"),
    ("epochs-zero", ["train", "--epochs", "0", "--data", "{w}/data"], 2, "--epochs must be at least 1"),
    ("batch-size-zero", ["train", "--batch-size", "0", "--data", "{w}/data"], 2, "--batch-size must be at least 1"),
    ("patience-negative", ["train", "--patience", "-1", "--data", "{w}/data"], 2, "--patience must be 0 or more"),
    ("workers-negative", ["train", "--workers", "-1", "--data", "{w}/data"], 2, "--workers must be 0 or more"),
    ("image-size-huge", ["train", "--image-size", "40000", "--data", "{w}/data"], 2, "--image-size must be in [1, 2048], got 40000"),
    ("image-size-below-minimum", ["train", "--image-size", "8", "--data", "{w}/data"], 2, "below torch/mobilenet_v2's minimum"),
    ("lr-nan", ["train", "-s", "fine-tune", "--lr", "nan", "--data", "{w}/data"], 2, "--lr must be positive and finite"),
    ("lr-negative", ["train", "-s", "fine-tune", "--lr", "-1", "--data", "{w}/data"], 2, "--lr must be positive"),
    ("dropout-above-1", ["train", "-s", "fine-tune", "--dropout", "1.5", "--data", "{w}/data"], 2, "--dropout must be in [0, 1)"),
    ("C-zero", ["train", "--C", "0", "--data", "{w}/data"], 2, "--C must be positive"),
    ("hidden-not-numbers", ["train", "--head", "mlp", "--hidden", "a,b", "--data", "{w}/data"], 2, "--hidden must list whole numbers at least 1, comma separated, got 'a,b'"),
    ("hidden-zero", ["train", "--head", "mlp", "--hidden", "0", "--data", "{w}/data"], 2, "--hidden must list whole numbers at least 1"),
    ("name-escapes-out-dir", ["train", "--name", "../../x", "--data", "{w}/data"], 2, "is not a run name"),
    ("name-with-separator", ["train", "--name", "a/b", "--data", "{w}/data"], 2, "is not a run name"),
    # train: unknown names
    ("strategy-misspelt", ["train", "-s", "finetune", "--data", "{w}/data"], 2, "Did you mean 'fine-tune'"),
    ("head-unknown", ["train", "--head", "svm", "--data", "{w}/data"], 2, "--head 'svm' is not known"),
    ("optimizer-unknown", ["train", "-s", "fine-tune", "--optimizer", "rmsprop", "--data", "{w}/data"], 2, "--optimizer 'rmsprop' is not known"),
    ("device-unknown", ["train", "--device", "banana", "--data", "{w}/data"], 2, "--device 'banana' is not a device"),
    ("device-cuda-without-gpu", ["train", "-b", "resnet18", "--weights", "none", "--image-size", "32", "--device", "cuda", "--data", "{w}/data"], 2, "sees no CUDA GPU"),
    ("nproc-with-keras", ["train", "-b", "keras/vgg16", "-s", "fine-tune", "--nproc", "2", "--data", "{w}/data"], 2, "keras/vgg16 does not train across processes"),
    ("nproc-zero", ["train", "-s", "fine-tune", "--nproc", "0", "--data", "{w}/data"], 2, "--nproc must be at least 1"),
    ("backbone-unknown", ["train", "-b", "resnet5", "--data", "{w}/data"], 2, "unknown backbone 'resnet5'"),
    ("framework-unknown", ["train", "--framework", "jax", "--data", "{w}/data"], 2, "unknown framework 'jax'"),
    ("list-framework-unknown", ["list-backbones", "--framework", "jax"], 2, "unknown framework 'jax'"),
    # train: data
    ("data-missing", ["train", "--weights", "none", "--data", "{w}/nothing-here"], 1, "does not exist"),
    ("symlink-loop-is-not-a-class", ["train", "--weights", "none", "--data", "{w}/looped"], 1, "single class (red)"),
    ("data-not-csv", ["train", "--weights", "none", "--data", "{w}/notes.txt"], 1, "is a file but not a .csv"),
    ("data-no-class-folders", ["train", "--weights", "none", "--data", "{w}/empty"], 1, "has no class folders"),
    ("csv-latin-1", ["train", "--weights", "none", "--data", "{w}/latin1.csv"], 1, "is not UTF-8 text"),
    ("csv-unquoted-comma", ["train", "--weights", "none", "--data", "{w}/comma.csv"], 1, "more fields than the header"),
    ("csv-no-label-column", ["train", "--weights", "none", "--data", "{w}/nolabel.csv"], 1, "column 'class' holds 'red'; a one-hot CSV's columns other than 'path' hold only 0 or 1. For class names, the CSV needs a 'label' column"),
    ("csv-missing-files", ["train", "--weights", "none", "--data", "{w}/missing.csv"], 1, "names 1 file(s) that do not exist"),
    ("single-class", ["train", "--weights", "none", "--data", "{w}/oneclass"], 1, "single class"),
    ("class-all-unreadable", ["train", "--weights", "none", "--image-size", "32", "-b", "resnet18", "--data", "{w}/brokenclass"], 1, "every image of class(es) broken is unreadable"),
    # train: config files
    ("config-missing", ["train", "--config", "{w}/nothing.yaml"], 2, "does not exist"),
    ("config-not-mapping", ["train", "--config", "{w}/list.yaml"], 2, "a config file is a mapping"),
    ("config-wrong-type", ["train", "--config", "{w}/wrongtype.yaml"], 2, "wrongtype.yaml: epochs: --epochs must be a whole number, got [1]"),
    ("config-unknown-key", ["train", "--config", "{w}/unknown.yaml"], 2, "unknown setting(s) epoch"),
    ("config-bad-yaml", ["train", "--config", "{w}/bad.yaml"], 2, "is not valid YAML"),
    ("config-freeze-with-feature-extract", ["train", "--config", "{w}/misfit.yaml"], 2, "--freeze does not fit --strategy feature-extract"),
    # train: resume
    ("resume-finished-run", ["train", "--resume", "{w}/run"], 2, "has finished training"),
    ("resume-not-a-run", ["train", "--resume", "{w}/data"], 2, "is not a tlzoo run directory"),
    ("resume-changed-option", ["train", "--resume", "{w}/interrupted", "--epochs", "7"], 2, "--epochs (run: 1, given: 7)"),
    ("resume-with-config", ["train", "--resume", "{w}/interrupted", "--config", "{w}/unknown.yaml"], 2, "leave out --config"),
    # evaluate
    ("evaluate-missing-model", ["evaluate", "{w}/nothing.onnx", "--data", "{w}/data"], 2, "does not exist"),
    ("evaluate-batch-size-zero", ["evaluate", "{w}/run", "--data", "{w}/data", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    ("evaluate-not-a-model", ["evaluate", "{w}/notes.txt", "--data", "{w}/data"], 2, "neither a run directory nor an exported model file"),
    ("evaluate-unknown-classes", ["evaluate", "{w}/run", "--data", "{w}/otherclasses"], 2, "has classes the model does not know"),
    ("evaluate-run-without-classifier", ["evaluate", "{w}/empty", "--data", "{w}/data"], 2, "has no trained classifier"),
    ("classifier-json-corrupt", ["evaluate", "{w}/corrupt-json", "--data", "{w}/data"], 2, "classifier.json is not valid JSON"),
    ("classifier-json-more-labels", ["evaluate", "{w}/more-labels", "--data", "{w}/data"], 2, "the model has 3 outputs but classifier.json names 4 classes"),
    ("classifier-json-huge-input", ["evaluate", "{w}/huge-input", "--data", "{w}/data"], 2, "input_size must be two sides of 1..4096"),
    ("split-csv-damaged", ["export", "onnx", "{w}/bad-split", "--out", "{o}/m.onnx"], 2, "split.csv is damaged"),
    ("checkpoint-truncated", ["evaluate", "{w}/truncated", "--data", "{w}/data"], 2, "the trained model does not load"),
    # export
    ("export-not-a-run", ["export", "onnx", "{w}/data"], 2, "has no trained classifier"),
    ("export-unknown-format", ["export", "tflite", "{w}/run"], 2, "unknown export format 'tflite'"),
    ("export-edited-labels", ["export", "onnx", "{w}/more-labels", "--out", "{o}/m.onnx"], 2, "the model has 3 outputs"),
    # predict
    ("predict-top-k-zero", ["predict", "{w}/model.onnx", "{w}/data", "--top-k", "0"], 2, "--top-k must be at least 1"),
    ("predict-batch-size-negative", ["predict", "{w}/model.onnx", "{w}/data", "--batch-size", "-1"], 2, "--batch-size must be at least 1"),
    ("predict-missing-image", ["predict", "{w}/model.onnx", "{w}/nothing.png"], 2, "does not exist"),
    ("predict-out-suffix", ["predict", "{w}/model.onnx", "{w}/data", "--out", "{o}/p.txt"], 2, "write predictions to a .csv or .json"),
    ("predict-out-is-a-folder", ["predict", "{w}/model.onnx", "{w}/data", "--out", "{o}"], 2, "is a folder; name a file in it"),
    ("predict-out-replaces-a-run-file", ["predict", "{w}/run", "{w}/data", "--out", "{w}/run/labels.json"], 2, "would replace the run's own labels.json"),
    ("evaluate-out-replaces-a-run-file", ["evaluate", "{w}/run", "--data", "{w}/data", "--out", "{w}/run/metrics.json"], 2, "would replace the run's own metrics.json"),
    ("predict-garbage-onnx", ["predict", "{w}/garbage.onnx", "{w}/data"], 2, "is not a model onnxruntime can load"),
    ("onnx-huge-input-size", ["predict", "{w}/huge.onnx", "{w}/data"], 2, "metadata tlzoo.input_size must be [height, width]"),
    ("onnx-labels-mismatch", ["predict", "{w}/fivelabels.onnx", "{w}/data"], 2, "the model has 3 outputs but its metadata names 5 labels"),
    ("onnx-without-tlzoo-metadata", ["predict", "{w}/foreign.onnx", "{w}/data"], 2, "not one tlzoo exported"),
    ("onnx-metadata-not-json", ["predict", "{w}/notjson.onnx", "{w}/data"], 2, "metadata tlzoo.raw_input is not valid JSON"),
    ("predict-name-with-a-newline", ["predict", "{w}/no\nsuch", "{w}/data"], 2, "no such does not exist: give a run directory"),
    ("predict-name-of-3000-characters", ["predict", "{w}/" + "y" * 3000, "{w}/data"], 1, "File name too long"),
    ("predict-run-with-provider", ["predict", "{w}/run", "{w}/data", "--provider", "cuda"], 2, "--provider cuda is for exported model files"),
    ("evaluate-run-with-provider", ["evaluate", "{w}/run", "--data", "{w}/data", "--provider", "cpu"], 2, "--provider cpu is for exported model files"),
    ("predict-onnx-with-device", ["predict", "{w}/model.onnx", "{w}/data", "--device", "cuda"], 2, "--device cuda is for run directories"),
    ("predict-run-on-a-missing-gpu", ["predict", "{w}/run", "{w}/data", "--device", "cuda"], 2, "--device cuda: torch sees no CUDA GPU on this machine"),
    ("evaluate-run-on-no-device", ["evaluate", "{w}/run", "--data", "{w}/data", "--device", "tpu"], 2, "--device 'tpu' is not a device"),
    ("predict-only-unreadable", ["predict", "{w}/model.onnx", "{w}/brokenclass/broken"], 1, "none of the 2 image(s) given could be read"),
    ("predict-strict", ["predict", "{w}/model.onnx", "{w}/brokenclass/broken", "--strict"], 2, "is not an image tlzoo can read"),
    # compare
    ("compare-unknown-strategy", ["compare", "--data", "{w}/data", "--strategies", "finetune", "--out", "{o}/c"], 2, "unknown strategy 'finetune'"),
    ("compare-freeze-out-of-range", ["compare", "--data", "{w}/data", "--backbones", "resnet18", "--strategies", "fine-tune:freeze=60", "--out", "{o}/c"], 2, "torch/resnet18 fine-tune: --freeze 60 is out of range"),
    ("compare-param-misfit", ["compare", "--data", "{w}/data", "--strategies", "feature-extract:freeze=8", "--out", "{o}/c"], 2, "--freeze does not fit --strategy feature-extract"),
    ("compare-budget-too-small", ["compare", "--data", "{w}/data", "--budget", "0.00001", "--out", "{o}/c"], 2, "is too small for even one combination"),
    # weights, describe, datasets
    ("weights-other-architecture", ["train", "-b", "resnet18", "--image-size", "32", "--weights", "{w}/other.pth", "--data", "{w}/data"], 1, "does not fit torch/resnet18"),
    ("weights-with-pickled-objects", ["train", "-b", "resnet18", "--image-size", "32", "--weights", "{w}/pickled.pth", "--data", "{w}/data"], 1, "was refused: loading it would create Python objects"),
    ("weights-with-scratch", ["train", "-s", "scratch", "--weights", "IMAGENET1K_V1", "--data", "{w}/data"], 2, "--weights does not fit --strategy scratch"),
    ("weights-offline-not-on-disk", ["train", "-b", "resnet18", "--data", "{w}/data"], 1, "Or train with --weights none"),
    ("weights-file-missing", ["train", "-b", "resnet18", "--image-size", "32", "--weights", "{w}/nothing.pth", "--data", "{w}/data"], 1, "nothing.pth does not exist"),
    ("weights-import-missing", ["weights", "import", "{w}/nothing.pth"], 2, "does not exist"),
    ("describe-unknown", ["describe", "resnet5"], 2, "unknown backbone 'resnet5'"),
    ("datasets-unknown", ["datasets", "mnist", "{o}/d"], 2, "unknown dataset 'mnist'"),
]  # fmt: skip


def _write_onnx_variant(src: Path, dest: Path, **metadata: str | None) -> None:
    import onnx

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in metadata.items():
        key = key.replace("__", ".")
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dest))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shared inputs: data in every bad shape, a trained run and its export, and damaged copies of both."""
    import tlzoo
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train

    w = tmp_path_factory.mktemp("bad-input")
    data = write_folder(w / "data", per_class=6, classes=("blue", "green", "red"))
    write_folder(w / "oneclass", per_class=4, classes=("red",))
    write_folder(w / "otherclasses", per_class=2, classes=("red",))
    (w / "otherclasses" / "purple").mkdir()
    shutil.copy(data / "red" / "000.png", w / "otherclasses" / "purple" / "000.png")
    write_folder(w / "brokenclass", per_class=4, classes=("red", "green"))
    (w / "brokenclass" / "broken").mkdir()
    for name in ("a.png", "b.png"):
        (w / "brokenclass" / "broken" / name).write_bytes(b"not a png")
    (w / "empty").mkdir()
    write_folder(w / "looped", per_class=4, classes=("red",))
    (w / "looped" / "again").symlink_to(w / "looped", target_is_directory=True)  # would double every image
    (w / "notes.txt").write_text("not data")
    (w / "latin1.csv").write_bytes("path,label\ndata/red/000.png,caf\xe9\n".encode("latin-1"))
    (w / "comma.csv").write_text("path,label\ndata/red/000.png,red,ish\n")
    (w / "nolabel.csv").write_text("path,class\ndata/red/000.png,red\n")
    (w / "missing.csv").write_text("path,label\ndata/red/999.png,red\n")
    (w / "list.yaml").write_text("- epochs\n- 3\n")
    (w / "wrongtype.yaml").write_text("epochs: [1]\n")
    (w / "unknown.yaml").write_text("epoch: 3\n")
    (w / "bad.yaml").write_text("epochs: [1\n")
    (w / "misfit.yaml").write_text("strategy: feature-extract\nfreeze: 8\n")
    (w / "garbage.onnx").write_bytes(b"not a model")
    import numpy as np
    import torch

    torch.save({"fc.weight": torch.zeros(2, 2)}, w / "other.pth")
    torch.save({"conv1.weight": np.zeros(3)}, w / "pickled.pth")  # a numpy array: not a plain tensor

    cfg = TrainConfig(backbone="torch/resnet18", data=str(data), image_size=32, weights="none", batch_size=8,
                      out_dir=str(w), name="run", epochs=1)  # fmt: skip
    run = train(cfg).run_dir
    report = tlzoo.export(run, out=w / "model.onnx")
    model = Path(report["path"])
    _write_onnx_variant(model, w / "huge.onnx", tlzoo__input_size="[40000, 40000]")
    _write_onnx_variant(model, w / "fivelabels.onnx", tlzoo__labels=json.dumps(list("abcde")))
    _write_onnx_variant(model, w / "notjson.onnx", tlzoo__raw_input="maybe")
    _write_onnx_variant(model, w / "foreign.onnx", tlzoo__labels=None)

    def damaged(name: str, edit) -> None:  # type: ignore[no-untyped-def]
        shutil.copytree(run, w / name)
        edit(w / name)

    def more_labels(d: Path) -> None:
        meta = json.loads((d / "classifier.json").read_text())
        meta["classes"].append("purple")
        (d / "classifier.json").write_text(json.dumps(meta))

    def huge_input(d: Path) -> None:
        meta = json.loads((d / "classifier.json").read_text())
        meta["input_size"] = [40000, 40000]
        (d / "classifier.json").write_text(json.dumps(meta))

    damaged("corrupt-json", lambda d: (d / "classifier.json").write_text("{not json"))
    damaged("more-labels", more_labels)
    damaged("huge-input", huge_input)
    damaged("bad-split", lambda d: (d / "split.csv").write_text("path,label,subset\nx.png,purple,val\n"))
    damaged("truncated", lambda d: (d / "model.pt").write_bytes((d / "model.pt").read_bytes()[:1000]))
    damaged("interrupted", lambda d: [(d / f).unlink() for f in ("metrics.json", "classifier.json")])
    return w


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize(("args", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_line(world, tmp_path, args, code, words):
    own = tmp_path / "own"
    own.mkdir()
    argv = [a.replace("{w}", str(world)).replace("{o}", str(own)) for a in args]
    if argv[0] == "train":
        argv += ["--out-dir", str(own / "runs")]
    before = _snapshot(world)
    result = run_tlzoo(*argv, cwd=own, env={"TLZOO_CACHE": str(tmp_path / "cache")})
    message = " ".join(result.stderr.split())
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert words in message, message
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [result.stderr.strip().splitlines()[-1]]
    assert list(own.iterdir()) == [], list(own.rglob("*"))
    assert _snapshot(world) == before
    # one line, whatever the user's values hold: newlines, or thousands of characters
    assert result.stderr.count("\n") <= 1 + result.stderr.count("warning:") and len(message) <= 1000 + len("Error: ")


def test_the_table_covers_sixty_kinds():
    assert len({c[0] for c in CASES}) == len(CASES) >= 60
