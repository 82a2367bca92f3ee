"""--calibrate: one temperature fitted on the validation split, folded into the model, so that every later use
(the run's metrics, evaluate, predict, the exports) gives calibrated confidences with the same predicted class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlzoo import calibration
from tlzoo.heads import probabilities
from tlzoo.training.config import TrainConfig
from tlzoo.training.run import train

from .conftest import run_tlzoo
from .datagen import write_folder


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is calibrated, times 4: right as often as before, far more sure of itself."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(0, 1.0, (n, 4))
    labels = np.array([rng.choice(4, p=p) for p in probabilities(calibrated, "softmax")])
    return calibrated * 4.0, labels


@pytest.mark.parametrize("output", ["softmax", "ovr"])
def test_a_temperature_lowers_the_log_loss_of_an_overconfident_head_and_keeps_its_accuracy(output):
    val_logits, val_labels = _overconfident(2000, 0)
    test_logits, test_labels = _overconfident(2000, 1)
    t, record, said = calibration.calibrate("on", val_logits, val_labels, output, test_logits, test_labels, "test")
    if output == "softmax":
        assert 3.5 < t < 4.5  # it undoes the factor of 4
    else:
        assert t > 1.5
    before, after = probabilities(test_logits, output), probabilities(test_logits / t, output)
    np.testing.assert_array_equal(before.argmax(1), after.argmax(1))  # the same class on top, by construction
    assert record["log_loss_before_calibration"] > calibration.log_loss(after, test_labels)
    assert record["ece"] < record["ece_before_calibration"]
    if output == "softmax":  # the logits' own geometry: one temperature calibrates them
        assert record["ece"] <= 0.5 * record["ece_before_calibration"]
    assert record["temperature"] == pytest.approx(t, abs=1e-6)
    assert said is not None and said.startswith(f"calibrated: temperature {t:.3f}; expected calibration error on test")


def test_the_expected_calibration_error_is_the_count_weighted_gap_per_bin():
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    labels = np.array([0, 1, 0, 0])
    # bin (0.933, 1]: confidence 0.95, accuracy 0.5; bin (0.533, 0.6]: confidence 0.55, accuracy 1.0
    assert calibration.expected_calibration_error(proba, labels) == pytest.approx((2 * 0.45 + 2 * 0.45) / 4)


def test_auto_fits_from_fifty_validation_images_and_says_why_not_below():
    logits, labels = _overconfident(49, 2)
    t, record, said = calibration.calibrate("auto", logits, labels, "softmax", logits, labels, "val")
    assert t == 1.0 and said is None and "under the 50 --calibrate auto fits from" in str(record["calibration"])
    t, record, said = calibration.calibrate("off", logits, labels, "softmax", logits, labels, "val")
    assert t == 1.0 and record["calibration"] == "off (--calibrate off)"
    logits, labels = _overconfident(50, 2)
    t, record, said = calibration.calibrate("auto", logits, labels, "softmax", logits, labels, "val")
    assert t != 1.0 and said is not None and "fitted and scored on the same validation split" in said


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("calibration") / "data", per_class=12)


@pytest.mark.parametrize("backbone, strategy", [("torch/resnet18", "feature-extract"), ("torch/resnet18", "fine-tune"),
                                                ("keras/mobilenet_v2", "fine-tune")])  # fmt: skip
def test_the_temperature_is_folded_into_the_run_so_evaluate_scores_what_the_run_reported(data, tmp_path, monkeypatch,
                                                                                          backbone, strategy):  # fmt: skip
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    result = train(TrainConfig(data=str(data), backbone=backbone, weights="none", image_size=32, epochs=2,
                               strategy=strategy, calibrate="on", test_split=0.25, out_dir=str(tmp_path / "runs"),
                               name="run"))  # fmt: skip
    metrics = result.metrics
    assert metrics["split"] == "test" and metrics["temperature"] > 0
    if backbone.startswith("torch"):  # (a random MobileNetV2 at 32 px gives Keras uniform logits: T is moot)
        assert metrics["temperature"] != 1.0
    assert metrics["calibration"] == "temperature scaling, fitted on the validation split"
    for key in ("ece_before_calibration", "ece", "log_loss_before_calibration", "log_loss", "balanced_accuracy"):
        assert isinstance(metrics[key], float), key
    assert (result.run_dir / "reliability.png").stat().st_size > 10_000
    assert "Confidences calibrated by temperature scaling" in (result.run_dir / "MODEL_CARD.md").read_text()
    import csv

    with open(result.run_dir / "split.csv", newline="") as f:
        test = [(row["path"], row["label"]) for row in csv.DictReader(f) if row["subset"] == "test"]
    listed = tmp_path / "test.csv"
    listed.write_text("path,label\n" + "".join(f"{path},{label}\n" for path, label in test))
    done = run_tlzoo("evaluate", str(result.run_dir), "--data", str(listed), "--json",
                     env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout)
    assert scored["accuracy"] == metrics["accuracy"]
    assert scored["log_loss"] == pytest.approx(metrics["log_loss"], abs=2e-4)
    assert scored["ece"] == pytest.approx(metrics["ece"], abs=2e-4)


def test_calibrate_takes_auto_on_off_only(data, tmp_path):
    done = run_tlzoo("train", "--data", str(data), "--weights", "none", "--calibrate", "sometimes", "--out-dir",
                     str(tmp_path / "runs"), env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--calibrate" in done.stderr and "auto" in done.stderr and "sometimes" in done.stderr


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_an_engine_folds_a_factor_into_its_last_layer(framework):
    from tlzoo.adapters import adapter_for
    from tlzoo.backbone import get_backbone
    from tlzoo.registry import get_registry

    spec = get_registry().resolve("mobilenet_v2", framework)
    engine = adapter_for(framework).engine(get_backbone(spec, pretrained=False, input_size=(32, 32), seed=0), 3,
                                           tap=None, dropout=0.0, seed=0, device="cpu")  # fmt: skip
    engine.build()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    before = engine.logits(images)
    engine.scale_logits(0.25)
    np.testing.assert_allclose(engine.logits(images), 0.25 * before, rtol=1e-4, atol=1e-5)
