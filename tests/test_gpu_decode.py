"""--decoder: JPEGs decoded a batch at a time by the framework's GPU decoder (nvJPEG for torch) on a CUDA run.

This machine has no GPU: the torch decoder runs the same code with libjpeg-turbo on the CPU, and the runs
below stand it in for nvJPEG (the adapter offers it on the CPU, and a CUDA device is taken as possible)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from tlzoo.images import store
from tlzoo.images.decode import SQUASH, Jpeg, decode_jpegs, gpu_decodable, load_image
from tlzoo.errors import UsageError
from tlzoo.specs import Preprocessing
from tlzoo.images import decoders
from tlzoo.training.config import TrainConfig
from tlzoo.training.run import train

from .datagen import COLOURS, make_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
POLICIES = [
    Preprocessing(mode="torch", mean=MEAN, std=STD, resize="squash"),
    Preprocessing(mode="torch", mean=MEAN, std=STD, resize="crop", crop_fraction=0.875, interpolation="bicubic"),
    Preprocessing(mode="torch", mean=MEAN, std=STD, resize="pad"),
]


@pytest.fixture
def cpu_decoder():
    from tlzoo_torch.nvjpeg import TorchJpegDecoder

    return TorchJpegDecoder("cpu")


def _jpeg(pixels: np.ndarray, orientation: int = 1, **kw) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(buf, "JPEG", quality=92, exif=exif.tobytes(), **kw)
    return buf.getvalue()


def _photo() -> np.ndarray:
    import skimage.data

    return np.asarray(skimage.data.chelsea())  # 451 x 300, a real photograph


@pytest.mark.parametrize("progressive", [False, True])
def test_the_torch_decoder_turns_every_orientation_upright_and_resizes_as_pillow(cpu_decoder, progressive):
    for orientation in range(1, 9):
        data = _jpeg(_photo(), orientation, progressive=progressive)
        jpeg = gpu_decodable(data)
        assert jpeg is not None and jpeg.orientation == orientation and (jpeg.width, jpeg.height) == (451, 300)
        # Pillow's full decode, turned upright, through tlzoo's resize: only the resampling may differ
        upright = io.BytesIO()
        ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB").save(upright, "PNG")
        for prep in POLICIES:
            for size in ((64, 96), (224, 224)):
                got = cpu_decoder.decode([jpeg], size, prep)[0]
                want = load_image(io.BytesIO(upright.getvalue()), size, prep)
                diff = np.abs(got.astype(np.int16) - want)
                assert got.shape == (*size, 3) and got.dtype == np.uint8
                assert diff.mean() < 0.25 and diff.max() <= 2, (orientation, prep.resize, size)  # measured 0.2 and 2
                # against tlzoo's own decode of the JPEG (drafted to a quarter's scale): the decoders differ a little
                drafted = np.abs(got.astype(np.int16) - load_image(io.BytesIO(data), size, prep))
                assert drafted.mean() < 2.5, (orientation, prep.resize, size)


def test_what_the_gpu_decoder_cannot_take_is_pillows(cpu_decoder, monkeypatch):
    pixels = make_image("red", 0, 40)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    cmyk = io.BytesIO()
    Image.fromarray(pixels).convert("CMYK").save(cmyk, "JPEG")
    assert gpu_decodable(png.getvalue()) is None and gpu_decodable(cmyk.getvalue()) is None
    assert gpu_decodable(b"\xff\xd8\xff" + b"\0" * 20) is None  # a header Pillow cannot read
    grey = gpu_decodable(_jpeg(pixels[..., 0]))
    assert grey is not None
    assert cpu_decoder.decode([grey], (40, 40), SQUASH)[0].shape == (40, 40, 3)
    jpeg = _jpeg(pixels)
    monkeypatch.setenv("TLZOO_MAX_IMAGE_PIXELS", str(40 * 40 - 1))  # no draft on a GPU: over the limit is Pillow's
    assert gpu_decodable(jpeg) is None
    monkeypatch.delenv("TLZOO_MAX_IMAGE_PIXELS")
    good = gpu_decodable(jpeg)
    assert good is not None
    truncated = Jpeg(jpeg[: len(jpeg) // 2], good.width, good.height, 1)
    out = decode_jpegs([("good.jpg", good), ("cut.jpg", truncated)], cpu_decoder, (40, 40), SQUASH)
    assert isinstance(out[0], np.ndarray) and isinstance(out[1], OSError) and "truncated" in str(out[1])

    class Broken:
        name = "broken"

        def decode(self, jpegs, size, prep):  # type: ignore[no-untyped-def]
            raise RuntimeError("the device went away")

    out = decode_jpegs([("good.jpg", good)], Broken(), (40, 40), SQUASH)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out[0], load_image(io.BytesIO(jpeg), (40, 40)))


def _jpeg_folder(root, per_class=8, salt=0):  # type: ignore[no-untyped-def]
    for cls in COLOURS:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            (root / cls / f"{i:03d}.jpg").write_bytes(_jpeg(make_image(cls, salt + i, 48), orientation=1 + i % 8))
    Image.fromarray(make_image("red", salt + 99, 48)).save(root / "red" / "png.png")  # not a JPEG: Pillow's
    return root


@pytest.fixture
def gpu_standin(monkeypatch, tmp_path):
    """The torch adapter offers its decoder on the CPU, and a CUDA device is taken as possible."""
    from tlzoo_torch.adapter import TorchAdapter
    from tlzoo_torch.nvjpeg import TorchJpegDecoder

    made = []

    class StandIn(TorchJpegDecoder):
        name = "nvjpeg (test stand-in)"
        jpegs = 0

        def decode_on_device(self, jpegs, size, prep):  # type: ignore[no-untyped-def]
            self.jpegs += len(jpegs)
            return super().decode_on_device(jpegs, size, prep)

    def offered(self, device):  # type: ignore[no-untyped-def]
        decoder = StandIn("cpu")
        decoder.name = StandIn.name
        made.append(decoder)
        return decoder

    monkeypatch.setattr(TorchAdapter, "image_decoder", offered)
    monkeypatch.setattr(decoders, "may_be_cuda", lambda device: True)
    monkeypatch.setattr("tlzoo_torch.gpu_decoder", lambda: "nvjpeg (test stand-in)")
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    return made


def _run(data, tmp_path, name, reporter=None, **kw):  # type: ignore[no-untyped-def]
    cfg = TrainConfig(**{"data": str(data), "backbone": "torch/resnet18", "weights": "none", "image_size": 32,
                         "out_dir": str(tmp_path / "runs"), "name": name, "epochs": 1, "batch_size": 8, **kw})  # fmt: skip
    return train(cfg, reporter)


def test_a_run_decodes_its_jpegs_on_the_gpu_decoder_and_keys_its_caches_by_it(gpu_standin, tmp_path):
    from tlzoo.training.reporter import Reporter

    lines: list[str] = []

    class Lines(Reporter):
        def info(self, message: str) -> None:
            lines.append(message)

    data = _jpeg_folder(tmp_path / "d")
    first = _run(data, tmp_path, "gpu", reporter=Lines())
    said = [line for line in lines if line.startswith("JPEGs decoded")]
    assert said == ["JPEGs decoded on the GPU by nvjpeg (test stand-in), other files by Pillow (--decoder cpu: all by "
                    "Pillow)"], lines  # fmt: skip
    assert first.summary["feature_cache"] == "miss" and first.summary["images_decoded"] == 25
    assert [d.jpegs for d in gpu_standin] == [24], "the 24 JPEGs went to the GPU decoder, the PNG to Pillow"
    assert len(store.buckets(tmp_path / "cache" / "store")) == 1
    entries = _entries(tmp_path)
    assert entries
    # the expected decoder is known without building anything: the second run is a hit
    again = _run(data, tmp_path, "again")
    assert again.summary["feature_cache"] == "hit" and again.summary["images_decoded"] == 0
    np.testing.assert_allclose(again.metrics["accuracy"], first.metrics["accuracy"])
    # Pillow's pixels are another recipe: their features are not served as the GPU decoder's, nor its store
    pillow = _run(data, tmp_path, "pillow", decoder="cpu")
    assert pillow.summary["feature_cache"] == "miss" and pillow.summary["images_decoded"] == 25
    assert len(store.buckets(tmp_path / "cache" / "store")) == 2
    assert len(_entries(tmp_path)) == 2 * len(entries)
    # A fine-tune after the GPU decoder's feature extraction reads its store: nothing decoded again
    made = len(gpu_standin)
    tuned = _run(data, tmp_path, "tuned", strategy="fine-tune", freeze="0")
    assert tuned.metrics["images_decoded"] == 0 and len(gpu_standin) == made + 1 and gpu_standin[-1].jpegs == 0
    assert len(store.buckets(tmp_path / "cache" / "store")) == 2
    # and a fine-tune on new files fills the GPU decoder's store with the GPU decoder
    more = _jpeg_folder(tmp_path / "more", per_class=3, salt=50)
    fresh = _run(more, tmp_path, "fresh", strategy="fine-tune", freeze="0")
    assert fresh.metrics["images_decoded"] == 10 and gpu_standin[-1].jpegs == 9
    assert len(store.buckets(tmp_path / "cache" / "store")) == 2


def test_predict_and_evaluate_give_a_run_directorys_jpegs_to_its_gpu_decoder(gpu_standin, tmp_path):
    import tlzoo

    data = _jpeg_folder(tmp_path / "d", per_class=4)
    run = _run(data, tmp_path, "r", decoder="cpu").run_dir  # trained on Pillow's pixels
    made = len(gpu_standin)
    by_gpu = tlzoo.predict(run, [str(data)], top_k=3, batch_size=5)
    assert len(gpu_standin) == made + 1 and gpu_standin[-1].jpegs == 12, "the 12 JPEGs to the decoder, the PNG to Pillow"
    by_pillow = tlzoo.predict(run, [str(data)], top_k=3, batch_size=5, decoder="cpu")
    assert len(gpu_standin) == made + 1  # --decoder cpu: no decoder made
    assert [p.path for p in by_gpu] == [p.path for p in by_pillow] and len(by_gpu) == 13
    for gpu, pillow in zip(by_gpu, by_pillow):  # the decoders' pixels are a grey level or two apart
        np.testing.assert_allclose([q for _, q in sorted(gpu.top)], [q for _, q in sorted(pillow.top)], atol=0.05)

    scored = tlzoo.evaluate(run, data, batch_size=5)
    assert gpu_standin[-1].jpegs == 12 and scored["n"] == 13
    assert scored["accuracy"] == pytest.approx(tlzoo.evaluate(run, data, batch_size=5, decoder="cpu")["accuracy"], abs=1 / 13)
    with pytest.raises(UsageError, match=r"^--decoder 'nvjpeg' is not a decoder: use auto, cpu or gpu$"):
        tlzoo.predict(run, [str(data)], decoder="nvjpeg")


def test_an_exported_files_images_are_pillows():
    from tlzoo.runs.inference import decoder_for

    class Exported:  # an exporter's runtime: no image_decoder of its own
        pass

    assert decoder_for(Exported(), "auto") is None and decoder_for(Exported(), "cpu") is None  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"^--decoder gpu is for run directories on a CUDA device"):
        decoder_for(Exported(), "gpu")  # type: ignore[arg-type]


def _entries(tmp_path):  # type: ignore[no-untyped-def]
    return sorted((tmp_path / "cache" / "features").rglob("*.npz"))


def test_decoder_gpu_is_refused_where_there_is_none(tmp_path, monkeypatch):
    from .datagen import write_folder

    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "d", per_class=4)
    with pytest.raises(UsageError, match=r"^--decoder gpu: the run computes on cpu, not a CUDA device; use "):
        _run(data, tmp_path, "cpu", decoder="gpu", device="cpu")
    with pytest.raises(UsageError, match=r"^--decoder gpu: the keras framework offers no GPU decoder"):
        _run(data, tmp_path, "keras", decoder="gpu", backbone="keras/mobilenet_v2")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    with pytest.raises(UsageError, match="--decoder 'nvdec' is not known"):
        TrainConfig(decoder="nvdec").checked(set())


def test_a_compare_string_takes_the_decoder_and_refuses_an_unknown_one(tmp_path):
    from tlzoo.comparison import parse_strategies, plan

    from .datagen import write_folder

    assert parse_strategies("feature-extract:decoder=cpu,fine-tune:decoder=auto") == [
        ("feature-extract", {"decoder": "cpu"}), ("fine-tune", {"decoder": "auto"})]
    data = write_folder(tmp_path / "d", per_class=2)
    combos = plan(data, ["mobilenet_v2"], "feature-extract:decoder=cpu", None)
    assert [c.params for c in combos] == [{"decoder": "cpu"}]
    with pytest.raises(UsageError, match="--decoder 'nvdec' is not known"):
        plan(data, ["mobilenet_v2"], "feature-extract:decoder=nvdec", None)


def test_batches_the_decoder_leaves_on_its_device_equal_the_host_ones_and_reach_the_store(cpu_decoder, tmp_path):
    """on_device: a batch with JPEGs is the decoder's tensor on its device (here the CPU), with the PNGs and a
    JPEG it fails joined in their places; the pixels equal the host path's, and ``decoded`` is handed each
    JPEG's pixels off the batches' thread."""
    import threading

    import torch

    from tlzoo.images.batches import decode_batches

    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.{'png' if i == 3 else 'jpg'}"
        Image.fromarray(make_image(list(COLOURS)[i % len(COLOURS)], i, 40)).save(path, quality=90)
        paths.append(str(path))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(_jpeg(_photo())[:2000])  # truncated: the decoder fails it, Pillow says why
    paths.insert(5, str(bad))
    handed: dict[str, tuple[np.ndarray, str]] = {}

    def decoded(path, jpeg, pixels):  # type: ignore[no-untyped-def]
        handed[path] = (pixels, threading.current_thread().name)

    kw = {"batch_size": 4, "threads": 2, "prep": POLICIES[1], "decoder": cpu_decoder}
    host = list(decode_batches(paths, (24, 24), **kw))
    device = list(decode_batches(paths, (24, 24), **kw, decoded=decoded, on_device=True))
    assert [b.index.tolist() for b in device] == [b.index.tolist() for b in host]
    assert [b.skipped for b in device] == [b.skipped for b in host] and len(host[1].skipped) <= 1
    for h, d in zip(host, device):
        assert isinstance(d.images, torch.Tensor) and d.images.shape == h.images.shape
        np.testing.assert_array_equal(cpu_decoder.host_batch(d.images), h.images)
    jpegs = [p for p in paths if p.endswith(".jpg") and p != str(bad)]
    assert sorted(handed) == sorted(jpegs)
    flat = {p: img for b in host for p, img in zip([paths[i] for i in b.index], b.images)}
    for path, (pixels, thread) in handed.items():
        np.testing.assert_array_equal(pixels, flat[path])
        assert thread.startswith("tlzoo-store-write")


def test_a_photo_four_times_the_input_size_is_left_to_pillows_draft():
    big = np.kron(np.asarray(_photo())[:200, :200], np.ones((5, 5, 1), np.uint8))  # 1000 x 1000
    data = _jpeg(big)
    assert gpu_decodable(data) is not None and gpu_decodable(data, (256, 256)) is not None  # 1000 < 4 x 256
    assert gpu_decodable(data, (200, 200)) is None and gpu_decodable(data, (250, 200)) is None  # 1000 >= 4 x 250
