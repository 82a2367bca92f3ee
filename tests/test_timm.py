"""The timm plugin: timm's registry as ``timm/NAME`` backbones, from a snapshot that matches the installed timm,
frozen by tlzoo's one rule, tapped and preprocessed as timm defines, loading weights files without code, and
exported checked. Models are shrunk (tests/timm_reduced.py) and use random weights: nothing is downloaded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tlzoo.registry import get_registry
from tlzoo.specs import WeightsSpec

from .conftest import run_tlzoo
from .datagen import write_folder

pytestmark = pytest.mark.tlzoo_torch

timm = pytest.importorskip("timm")
import tlzoo_timm  # noqa: E402

SNAPSHOT_VERSION = tlzoo_timm.snapshot()["timm_version"]
same_timm = pytest.mark.skipif(timm.__version__ != SNAPSHOT_VERSION,
                               reason=f"the snapshot is of timm {SNAPSHOT_VERSION}, timm {timm.__version__} is installed")
REBUILT = ("convnextv2_atto", "vit_small_patch14_dinov2", "vit_base_patch16_clip_224", "mixnet_s", "swin_tiny_patch4_window7_224")
TINY = ("tiny_convnextv2", "tiny_dinov2", "tiny_clip")


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    from tlzoo import plugins

    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))  # the shrunk models' files take the real tags' names

    from . import timm_reduced

    plugins.register_plugin(timm_reduced, "timm-reduced")
    yield {name: get_registry().resolve(f"timm/{name}") for name in TINY}


def _rows() -> dict:
    return {row["name"]: row for row in tlzoo_timm.index_rows()}


@same_timm
def test_snapshot_matches_every_tag_of_the_installed_timm():
    from timm.models import get_pretrained_cfg

    from tlzoo_timm._generate import tags_by_architecture

    rows, tags = _rows(), tags_by_architecture()
    specs = {s.name: s for s in get_registry().list(framework="timm")}
    assert sorted(rows) == sorted(tags) == sorted(specs) and len(rows) >= 1000
    assert tlzoo_timm.snapshot()["not_built"] == {}
    for arch, arch_tags in tags.items():
        cfgs = [get_pretrained_cfg(f"{arch}.{t}") for t in arch_tags]
        assert rows[arch]["preprocessing"] == tlzoo_timm.preprocessing_row(cfgs[0]), arch
        assert rows[arch]["input_size"] == list(cfgs[0].input_size[1:]), arch
        want = [WeightsSpec(**tlzoo_timm.weights_row(arch, t, c, cfgs[0])) for t, c in zip(arch_tags, cfgs)]
        assert list(specs[arch].weights) == want, arch


@same_timm
@pytest.mark.parametrize("arch", REBUILT)
def test_five_architectures_rebuilt_equal_their_snapshot(arch):
    from tlzoo_timm._generate import describe, tags_by_architecture

    row, units = describe(arch, tags_by_architecture()[arch])
    assert row == _rows()[arch]  # widths, parameter counts, freeze rule, every tag's row
    assert units == tlzoo_timm._all_units()[arch]


def test_units_follow_tlzoos_one_rule():
    reg = get_registry()
    convnext_v2, convnext = reg.resolve("timm/convnextv2_tiny"), reg.resolve("torch/convnext_tiny")
    assert len(convnext_v2.units) == len(convnext.units) == 58  # every weight layer, as torchvision's
    kinds = [u.kind for u in convnext_v2.units]  # stem, 3 downsamplings, 18 depthwise; each block's 2 Linear
    assert (kinds.count("Conv2d"), kinds.count("Linear")) == (22, 36)
    vit, tv_vit = reg.resolve("timm/vit_base_patch16_224"), reg.resolve("torch/vit_b_16")
    assert [u.name for u in vit.units] == ["patch_embed", *[f"blocks.{i}" for i in range(12)], "norm"]
    assert len(vit.units) == len(tv_vit.units) == 14
    assert sum(u.params for u in vit.units) == vit.num_params  # class token and position embedding: unit 1
    clip = reg.resolve("timm/vit_base_patch16_clip_224")
    assert [u.name for u in clip.units] == ["patch_embed", "norm_pre", *[f"blocks.{i}" for i in range(12)], "norm"]
    dinov2 = reg.resolve("timm/vit_small_patch14_dinov2")
    assert (len(dinov2.units), dinov2.input_size, dinov2.input_multiple, dinov2.feature_dim) == (14, (518, 518), 14, 384)
    swin = reg.resolve("timm/swin_tiny_patch4_window7_224")
    assert swin.tap_layout == "channels_last" and [u.kind for u in swin.units].count("SwinTransformerBlock") == 12
    mixnet = reg.resolve("timm/mixnet_s")  # a mixed convolution (3 kernel sizes) is one weight layer
    assert "MixedConv2d" in {u.kind for u in mixnet.units}
    assert not any(u.name.startswith(m.name + ".") for m in mixnet.units for u in mixnet.units)
    assert mixnet.unit_modules == () and convnext_v2.unit_modules == ()


def test_tags_carry_timms_preprocessing_and_licenses():
    reg = get_registry()
    dinov2 = reg.resolve("timm/vit_small_patch14_dinov2")
    assert [w.tag for w in dinov2.weights] == ["lvd142m"] and dinov2.weights[0].license == "apache-2.0"
    assert dinov2.preprocessing_for(dinov2.weights[0]).resize_text() == "crop 1 bicubic"
    clip = reg.resolve("timm/vit_base_patch16_clip_224")
    openai = clip.weights_by_tag("openai")
    prep = clip.preprocessing_for(openai)
    assert (prep.resize, prep.crop_fraction, prep.interpolation) == ("crop", 0.9, "bicubic")
    assert prep.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    convnext = reg.resolve("timm/convnext_tiny")
    big = convnext.weights_by_tag("in12k_ft_in1k_384")
    assert [w.tag for w in convnext.weights][:2] == ["in12k_ft_in1k", "in12k_ft_in1k_384"]  # timm's default first
    assert convnext.input_size_for(big) == (384, 384) and convnext.input_size == (224, 224)
    assert convnext.preprocessing_for(big).resize_text() == "squash bicubic"
    assert convnext.preprocessing.resize_text() == "crop 0.95 bicubic"
    assert {w.license for w in reg.resolve("timm/convnextv2_atto").weights} == {"cc-by-nc-4.0"}


@pytest.mark.parametrize("name", TINY)
def test_reduced_units_freeze_taps_and_features_equal_timms(tiny, name):
    import torch

    from tlzoo.backbone import get_backbone

    spec = tiny[name]
    backbone = get_backbone(spec, input_size=spec.input_size, seed=0)
    names = [u.name for u in backbone.units]
    model = backbone.model.model
    expected = {
        "tiny_convnextv2": ["stem.0"] + [n for s in range(4) for n in
                                         ([f"stages.{s}.downsample.1"] if s else []) +
                                         [f"stages.{s}.blocks.0.{m}" for m in ("conv_dw", "mlp.fc1", "mlp.fc2")]],
        "tiny_dinov2": ["patch_embed", "blocks.0", "blocks.1", "norm"],
        "tiny_clip": ["patch_embed", "norm_pre", "blocks.0", "blocks.1", "norm"],
    }[name]  # fmt: skip
    assert names == expected
    assert sum(u.params for u in backbone.units) == backbone.num_params == sum(p.numel() for p in model.parameters())

    images = np.random.default_rng(0).integers(0, 256, size=(2, *spec.input_size, 3)).astype("uint8")
    x = torch.from_numpy(backbone.preprocess(images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(backbone.extract_features(images), want, rtol=1e-5, atol=1e-5)

    tap = len(names) - 2  # the last block of the transformers; a convolution of the ConvNeXt's last stage
    features = backbone.extract_features(images, tap=tap)
    with torch.no_grad():
        if name == "tiny_convnextv2":
            seen = {}
            module = dict(model.named_modules())[names[tap]]
            hook = module.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
            model(x)
            hook.remove()
            want = seen["out"].mean(dim=(2, 3)).numpy()
        else:  # timm's own intermediates, with the prefix (class) tokens, before the final norm
            block = int(names[tap].split(".")[1])
            spatial, prefix = model.forward_intermediates(x, indices=[block], norm=False, output_fmt="NLC",
                                                          intermediates_only=True, return_prefix_tokens=True)[0]
            want = torch.cat([prefix, spatial], dim=1).mean(dim=1).numpy()
    np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-5)


def test_freeze_keeps_frozen_units_bit_for_bit_through_training(tiny, tmp_path):
    import torch
    from safetensors.torch import save_file

    from tlzoo.runs.trained import load_run
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train

    from .timm_reduced import REDUCED

    arch, shrink, _ = REDUCED["tiny_dinov2"]
    start = timm.create_model(arch, img_size=56, **shrink).state_dict()
    save_file({k: v.contiguous() for k, v in start.items()}, str(tmp_path / "start.safetensors"))
    data = write_folder(tmp_path / "data", per_class=6, size=56)
    result = train(TrainConfig(data=str(data), backbone="timm/tiny_dinov2", strategy="fine-tune", freeze="2",
                               epochs=2, lr=0.01, batch_size=8, weights=str(tmp_path / "start.safetensors"),
                               out_dir=str(tmp_path / "runs")))  # fmt: skip
    trained = {k.removeprefix("features.model."): v for k, v in load_run(result.run_dir).model.state_dict().items()}
    frozen_prefixes = ("patch_embed.", "blocks.0.", "cls_token", "pos_embed")
    checked = 0
    for key, value in start.items():
        if key.startswith("head"):
            continue
        if key.startswith(frozen_prefixes):
            assert torch.equal(value, trained[key]), f"frozen {key} changed"
            checked += 1
        elif key.startswith("blocks.1.") and key.endswith("weight") and value.ndim == 2:
            assert not torch.equal(value, trained[key]), f"trainable {key} did not train"
    assert checked > 10 and result.metrics["frozen_units"] == 2


def test_bicubic_preprocessing_equals_timms_transform_on_a_png(tmp_path):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from tlzoo.images.decode import load_image

    skimage_data = pytest.importorskip("skimage.data")
    png = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()[:, 40:]).save(png)  # 512x472: not square
    reg = get_registry()
    for arch, tag in [("vit_small_patch14_dinov2", "lvd142m"), ("vit_base_patch16_clip_224", "openai"),
                      ("convnext_tiny", "in12k_ft_in1k"), ("resnet50", "a1_in1k"),
                      ("convnext_tiny", "in12k_ft_in1k_384"), ("vit_base_patch16_224", "augreg2_in21k_ft_in1k")]:
        spec = reg.resolve(f"timm/{arch}")
        weights = spec.weights_by_tag(tag)
        prep, size = spec.preprocessing_for(weights), spec.input_size_for(weights)
        config = resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(f"{arch}.{tag}").to_dict())
        want = create_transform(**config)(Image.open(png).convert("RGB")).numpy().transpose(1, 2, 0)
        mine = (load_image(png, size, prep).astype(np.float32) / 255.0 - np.array(prep.mean)) / np.array(prep.std)
        assert mine.shape == want.shape, (arch, tag)
        grey_levels = np.abs(mine - want) * np.array(prep.std) * 255.0
        assert grey_levels.max() <= 1.0 + 1e-3, (arch, tag, float(grey_levels.max()))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_weights_file_saved_from_timm_and_imported_gives_timms_features(tiny, tmp_path, suffix):
    import torch

    from tlzoo.backbone import get_backbone
    from tlzoo.weights import ResolvedWeights, import_for_backbone

    from .timm_reduced import REDUCED

    arch, shrink, size = REDUCED["tiny_clip"]
    torch.manual_seed(5)
    source = timm.create_model(f"{arch}.openai", img_size=size, **shrink)  # with the tag's 512-wide projection
    path = tmp_path / f"clip{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    spec = tiny["tiny_clip"]
    stored = import_for_backbone(path, spec, "openai")
    assert stored.name == "vit_base_patch16_clip_224.openai.safetensors"
    backbone = get_backbone(spec, pretrained="openai", input_size=size)
    assert isinstance(backbone.weights, ResolvedWeights) and backbone.weights.recorded
    reference = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_classes=0,
                                  img_size=size, **shrink).eval()  # fmt: skip
    images = np.random.default_rng(1).integers(0, 256, size=(2, size, size, 3)).astype("uint8")
    with torch.no_grad():
        want = reference(torch.from_numpy(backbone.preprocess(images)).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(backbone.extract_features(images), want, rtol=1e-5, atol=1e-5)


def test_a_changed_weights_file_is_refused_and_a_wrong_one_fails_in_one_line(tiny, tmp_path):
    from safetensors.torch import save_file

    from tlzoo.backbone import get_backbone
    from tlzoo.errors import WeightsError
    from tlzoo.weights import import_for_backbone

    from .timm_reduced import REDUCED

    arch, shrink, size = REDUCED["tiny_dinov2"]
    spec = tiny["tiny_dinov2"]
    good = timm.create_model(arch, img_size=size, **shrink).state_dict()
    save_file({k: v.contiguous() for k, v in good.items()}, str(tmp_path / "a.safetensors"))
    stored = import_for_backbone(tmp_path / "a.safetensors", spec, None)
    get_backbone(spec, pretrained="lvd142m", input_size=size)
    save_file({"blocks.0.norm1.weight": good["blocks.0.norm1.weight"] * 2}, str(stored))  # changed behind tlzoo's back
    with pytest.raises(WeightsError, match="is not the file timm/tiny_dinov2 lvd142m was first used with"):
        get_backbone(spec, pretrained="lvd142m", input_size=size)
    import_for_backbone(tmp_path / "a.safetensors", spec, None)  # a deliberate import takes the new file
    get_backbone(spec, pretrained="lvd142m", input_size=size)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(WeightsError, match="its header is not JSON"):
        import_for_backbone(tmp_path / "junk.safetensors", spec, None)


def test_a_hugging_face_cache_that_holds_the_tag_is_used_offline(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants
    import torch
    from safetensors.torch import save_file

    from tlzoo.backbone import get_backbone

    from .timm_reduced import REDUCED

    arch, shrink, size = REDUCED["tiny_dinov2"]
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    repo = hub / "models--timm--vit_small_patch14_dinov2.lvd142m"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(2)
    source = timm.create_model(arch, img_size=size, **shrink)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(repo / "snapshots" / commit / "model.safetensors"))
    backbone = get_backbone(tiny["tiny_dinov2"], pretrained="lvd142m", input_size=size)  # TLZOO_OFFLINE=1 here
    assert backbone.weights.path.name == "vit_small_patch14_dinov2.lvd142m.safetensors" and backbone.weights.recorded
    torch.testing.assert_close(backbone.model.model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)


class _LocalHub:
    """The Hugging Face hub's file endpoint (``/REPO/resolve/REVISION/FILE``: HEAD for the commit, etag and size,
    GET for the bytes) on 127.0.0.1, serving the files it is given, and recording every request."""

    COMMIT = "89abcdef0123456789abcdef0123456789abcdef"

    def __init__(self, files: dict[str, bytes]) -> None:
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hub = self
        self.requests: list[tuple[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                data = files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a free port
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_tag_is_downloaded_from_the_hub_once_recorded_and_then_used_offline(tiny, tmp_path, monkeypatch):
    import hashlib

    import huggingface_hub.constants
    import torch
    from safetensors.torch import save_file

    from tlzoo.backbone import get_backbone
    from tlzoo.errors import WeightsError
    from tlzoo.weights import cache_dir, recorded_sha256

    from .timm_reduced import REDUCED

    spec = tiny["tiny_convnextv2"]
    arch, shrink, size = REDUCED["tiny_convnextv2"]
    tag = spec.weights[0].tag
    assert spec.weights[0].url == f"hf-hub:timm/{arch}.{tag}"  # timm's hub id, no revision pinned: the main branch
    torch.manual_seed(3)
    source = timm.create_model(arch, **shrink)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    hub = _LocalHub({f"/timm/{arch}.{tag}/resolve/main/model.safetensors": data})
    try:
        monkeypatch.delenv("TLZOO_OFFLINE")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        backbone = get_backbone(spec, pretrained=tag, input_size=size)
        fetched = list(hub.requests)
        with pytest.raises(WeightsError) as missing:  # a tag the hub does not hold: one line, nothing left behind
            get_backbone(spec, pretrained=spec.weights[1].tag, input_size=size)
    finally:
        hub.close()
    assert "\n" not in str(missing.value) and f"{spec.weights[1].tag} for timm/tiny_convnextv2" in str(missing.value)
    assert "could not be downloaded (RemoteEntryNotFoundError: 404 Client Error. Entry Not Found" in str(missing.value)
    assert sorted(p.name for p in cache_dir("timm").iterdir()) == [f"{arch}.{tag}.safetensors"]
    assert ("GET", f"/timm/{arch}.{tag}/resolve/main/model.safetensors") in fetched, fetched
    path = backbone.weights.path
    assert path.name == f"{arch}.{tag}.safetensors" and path.read_bytes() == data
    # timm publishes no hashes: the file's sha256 was recorded at first use, and is what is checked from now on.
    assert recorded_sha256(spec, spec.weights[0]) == hashlib.sha256(data).hexdigest()
    # Into the hub's own cache too, at the commit the hub named (other tools find it there).
    assert (tmp_path / "hf" / "hub" / f"models--timm--{arch}.{tag}" / "snapshots" / _LocalHub.COMMIT / "model.safetensors").is_file()
    torch.testing.assert_close(backbone.model.model.stages[0].blocks[0].conv_dw.weight, source.stages[0].blocks[0].conv_dw.weight)
    monkeypatch.setenv("TLZOO_OFFLINE", "1")  # the hub is gone: tlzoo's cache serves the tag
    again = get_backbone(spec, pretrained=tag, input_size=size)
    assert again.weights.path == path and again.weights.recorded


def test_reduced_clip_dinov2_and_convnextv2_export_checked_and_offline_fails_at_once(tiny, tmp_path):
    data = write_folder(tmp_path / "data", per_class=6, size=32)
    env = {"TLZOO_PLUGINS": "tests.timm_reduced"}
    common = ["--data", str(data), "--weights", "none", "--out-dir", str(tmp_path / "runs"), "--json"]
    for name, extra in [("tiny_clip", ["--tap", "blocks.1"]), ("tiny_dinov2", ["--image-size", "56"]),
                        ("tiny_convnextv2", ["--strategy", "fine-tune", "--freeze", "8", "--epochs", "1"])]:
        run = run_tlzoo("train", "-b", f"timm/{name}", *extra, *common, "--name", name, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        export = run_tlzoo("export", "onnx", str(tmp_path / "runs" / name), "--json", env=env)
        assert export.returncode == 0, (name, export.stderr[-2000:])
        report = json.loads(export.stdout)
        assert report["check"] == "passed" and report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0, name
    offline = run_tlzoo("train", "-b", "timm/vit_small_patch14_dinov2", "--data", str(data), "--out-dir",
                        str(tmp_path / "runs"))  # fmt: skip
    assert offline.returncode != 0
    lines = offline.stderr.strip().splitlines()
    assert len(lines) == 1 and "lvd142m for timm/vit_small_patch14_dinov2 are not on disk" in lines[0]
    assert "Traceback" not in offline.stderr


def test_listing_imports_neither_torch_nor_timm_and_folds_timm_into_families():
    code = ("import sys; from tlzoo.cli.app import main; sys.argv = ['tlzoo', 'list-backbones', '--json'];\n"
            "import contextlib, io\nout = io.StringIO()\nwith contextlib.redirect_stdout(out):\n"
            "    try: main()\n    except SystemExit: pass\n"
            "import json; rows = json.loads(out.getvalue())\n"
            "print(sum(r['framework'] == 'timm' for r in rows), 'torch' in sys.modules, 'timm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    count, torch_loaded, timm_loaded = done.stdout.split()
    assert int(count) >= 1000 and (torch_loaded, timm_loaded) == ("False", "False"), done.stderr
    plain = run_tlzoo("list-backbones")
    assert plain.returncode == 0, plain.stderr
    assert "timm/vision_transformer (" in plain.stdout and "torch/vgg16" in plain.stdout
    assert "timm/vit_small_patch14_dinov2 " not in plain.stdout
    dinov2 = run_tlzoo("list-backbones", "--filter", "*dinov2*")
    assert "timm/vit_small_patch14_dinov2" in dinov2.stdout and "lvd142m" in dinov2.stdout
