"""--balance auto|none|weights|sampler: scikit-learn's balanced class weights in every loss and head, or epochs
drawn class-balanced, and auto's one line; only where they should change anything."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tlzoo import balance
from tlzoo.backbone import get_backbone
from tlzoo.registry import get_registry
from tlzoo.training.config import TrainConfig

from .conftest import run_tlzoo
from .datagen import write_folder


def test_balanced_weights_are_scikit_learns_and_auto_weighs_from_three_to_one():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 30 + [1] * 10 + [2] * 5)
    weights = balance.balanced_weights(labels, 4)  # class 3 has no image: weight 0
    np.testing.assert_allclose(weights[:3], compute_class_weight("balanced", classes=np.arange(3), y=labels))
    np.testing.assert_allclose(weights, [45 / 90, 45 / 30, 45 / 15, 0.0])
    decided = balance.decide("auto", labels, 4)
    assert (decided.mode, decided.ratio) == ("weights", 6.0) and decided.class_weight is not None
    assert balance.decide("auto", np.array([0] * 29 + [1] * 10), 2).mode == "none"  # 2.9:1
    assert balance.decide("auto", np.array([0] * 30 + [1] * 10), 2).mode == "weights"  # 3:1
    line, warning = decided.line([30, 10, 5, 0])
    assert line == ("classes are imbalanced (largest 30 vs smallest 5 training images, 6.0:1): --balance auto weighs "
                    "the loss by class, n / (classes x n_class) (--balance none leaves it unweighted)")
    assert not warning
    line, warning = balance.decide("none", labels, 4).line([30, 10, 5, 0])
    assert warning and line.startswith("classes are imbalanced (largest 30 vs smallest 5") and "--balance none" in line
    assert balance.decide("auto", np.array([0, 1] * 5), 2).line([5, 5]) is None  # balanced: nothing said


def test_the_sampler_draws_every_class_about_equally_with_replacement():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    drawn = balance.sampled_order(labels, np.random.default_rng(0), 3)
    counts = np.bincount(labels[drawn], minlength=3)
    assert len(drawn) == 1000 and counts.min() > 280 and counts.max() < 390
    assert len(np.unique(drawn[labels[drawn] == 2])) == 10  # the ten rare images, each drawn many times


def _torch_engine(mode: str, weights: np.ndarray | None, seed: int = 0):  # type: ignore[no-untyped-def]
    from tlzoo_torch import train as torch_train

    spec = get_registry().resolve("resnet18", None)
    engine = torch_train.TorchEngine(get_backbone(spec, pretrained=False, input_size=(32, 32), seed=0), 3, tap=None,
                                     dropout=0.0, seed=seed, device="cpu")  # fmt: skip
    engine.build()
    engine.configure(lr=0.05, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0)
    engine.set_balance(mode, weights)
    return engine


def _imbalanced(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), np.uint8), np.array([0] * (n - 6) + [1] * 4 + [2] * 2)


def test_weights_change_the_torch_loss_and_equal_weights_do_not():
    images, labels = _imbalanced()
    head = {}
    for name, mode, weights in (("none", "none", None), ("ones", "weights", np.ones(3)),
                                ("balanced", "weights", balance.balanced_weights(labels, 3))):  # fmt: skip
        engine = _torch_engine(mode, weights)
        engine.train_epoch(images, labels, batch_size=8, augment=[], epoch=0, workers=1, progress=None)
        head[name] = [p.detach().numpy().copy() for p in engine.model.head.parameters()]
    for ones, none in zip(head["ones"], head["none"]):  # the same mean, summed in another order
        np.testing.assert_allclose(ones, none, rtol=1e-3, atol=5e-5)
    assert max(float(np.abs(b - n).max()) for b, n in zip(head["balanced"], head["none"])) > 1e-3


def test_the_sampler_changes_the_order_only_under_sampler():
    images, labels = _imbalanced()
    seen = {}
    for mode in ("none", "weights", "sampler"):
        engine = _torch_engine(mode, None)
        engine.train_epoch(images, labels, batch_size=8, augment=[], epoch=0, workers=1, progress=None)
        seen[mode] = engine.last_epoch_indices()
    assert seen["none"] == seen["weights"] and sorted(seen["none"]) == list(range(24))  # a shuffle: each once
    drawn = np.asarray(seen["sampler"])
    assert len(drawn) == 24 and np.bincount(labels[drawn], minlength=3).min() >= 4  # the rare classes repeated
    assert len(set(drawn.tolist())) < 24


def test_keras_weighs_its_loss_by_class():
    from tlzoo_keras import train as keras_train

    images, labels = _imbalanced(16)
    losses = []
    for weights in (None, np.array([0.1, 5.0, 5.0])):
        spec = get_registry().resolve("mobilenet_v2", "keras")
        engine = keras_train.KerasEngine(get_backbone(spec, pretrained=False, input_size=(32, 32), seed=0), 3, tap=None,
                                         dropout=0.0, seed=0, device="cpu")  # fmt: skip
        engine.set_compile("off")
        engine.build()
        engine.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0)
        engine.set_balance("weights" if weights is not None else "none", weights)
        losses.append(engine.train_epoch(images, labels, batch_size=16, augment=[], epoch=0, workers=1, progress=None)[0])
    # one batch: the weighted loss is the mean of each image's loss times its class's weight
    assert losses[1] != pytest.approx(losses[0], rel=1e-3)


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    data = write_folder(tmp_path_factory.mktemp("balance") / "data", per_class=16)
    for path in sorted((data / "blue").iterdir())[4:]:
        path.unlink()
    return data


@pytest.mark.parametrize("head", ["softmax", "logreg-ovr", "linear-svm", "mlp"])
def test_auto_weighs_every_head_and_says_one_line(skewed, tmp_path, head):
    done = run_tlzoo("train", "--data", str(skewed), "--weights", "none", "--image-size", "32", "--head", head,
                     "--epochs", "2", "--out-dir", str(tmp_path / "runs"), "--name", "r",
                     env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert said.count("classes are imbalanced") == 1 and "--balance auto weighs the loss by class" in said
    assert "warning: classes are imbalanced" not in said  # the old warning is replaced, never shown beside it
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert metrics["balance"]["mode"] == "weights" and metrics["balance"]["ratio"] == pytest.approx(12 / 3, abs=1)
    assert 0 <= metrics["balanced_accuracy"] <= 1


def test_bad_balance_options_are_one_line(skewed, tmp_path):
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    base = ["train", "--data", str(skewed), "--weights", "none", "--image-size", "32", "--out-dir", str(tmp_path / "r")]
    unknown = run_tlzoo(*base, "--balance", "often", env=env)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr and "often" in unknown.stderr
    assert "--balance" in unknown.stderr and "sampler" in unknown.stderr
    sampler = run_tlzoo(*base, "--balance", "sampler", "--head", "linear-svm", env=env)
    assert sampler.returncode == 2 and "Traceback" not in sampler.stderr
    assert "--balance sampler: the linear-svm head is fitted by scikit-learn on all the features at once" in sampler.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was read or written


def test_a_run_recorded_before_balance_resumes_unbalanced(tmp_path):
    from tlzoo.training.resume import resume_config

    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(data=str(tmp_path), strategy="fine-tune").to_dict()
    saved.pop("balance")
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    (run / "last_state.pt").write_bytes(b"")
    cfg, _ = resume_config(run, {})
    assert cfg.balance == "none"
    saved["balance"] = "sampler"
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert resume_config(run, {})[0].balance == "sampler"


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_the_mlp_head_under_sampler_trains_each_epoch_on_a_new_draw(framework):
    """--balance sampler with --head mlp: the trainer asks for every epoch's positions, and trains on them."""
    from tlzoo.adapters import adapter_for

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = np.array([0] * 32 + [1] * 8)
    asked: list[int] = []

    def epoch_order(epoch: int) -> np.ndarray:
        asked.append(epoch)
        return balance.sampled_order(y, np.random.default_rng([0, epoch]), 2)

    trainer = adapter_for(framework).train_mlp
    weights, biases, history = trainer(x, y, x[:8], y[:8], [6, 4, 2], dropout=0.0, epochs=3, lr=1e-2, weight_decay=0.0,
                                       patience=0, batch_size=8, seed=0, on_epoch=None, epoch_order=epoch_order)  # fmt: skip
    assert len(history) == 3 and asked[-3:] == [0, 1, 2]  # epoch k trained on draw k (Keras sizes itself on draw 0 first)
    assert [w.shape for w in weights] == [(6, 4), (4, 2)]
