"""The plugin contract: in-process fakes, broken plugins, duplicates, --plugin modules."""

from __future__ import annotations

import json
import textwrap

import pytest

import tlzoo
from tlzoo.plugins import get_host
from tlzoo.registry import get_registry
from tlzoo.specs import TORCHVISION_IMAGENET

from .conftest import run_tlzoo


def make_spec(name: str, framework: str = "torch") -> tlzoo.BackboneSpec:
    return tlzoo.BackboneSpec(
        name=name, framework=framework, builder="nowhere:build", input_size=(32, 32),
        feature_dim=8, num_params=10, preprocessing=TORCHVISION_IMAGENET,
    )  # fmt: skip


class FakePlugin:
    __name__ = "fake"

    @tlzoo.hookimpl
    def register_backbones(self):
        return [make_spec("fakenet")]


class BrokenPlugin:
    __name__ = "broken"

    @tlzoo.hookimpl
    def register_backbones(self):
        raise RuntimeError("boom")


class DuplicatePlugin:
    __name__ = "dupe"

    @tlzoo.hookimpl
    def register_backbones(self):
        return [make_spec("vgg16"), make_spec("dupenet")]


class WrongTypePlugin:
    __name__ = "wrongtype"

    @tlzoo.hookimpl
    def register_backbones(self):
        return [{"name": "dictnet"}]


def test_in_process_plugin_registers_and_unregisters():
    plugin = FakePlugin()
    tlzoo.register_plugin(plugin, name="fake")
    assert "torch/fakenet" in {s.id for s in tlzoo.list_backbones()}
    assert get_host().statuses["fake"].backbones == ["torch/fakenet"]
    tlzoo.unregister_plugin(plugin)
    assert "torch/fakenet" not in {s.id for s in tlzoo.list_backbones()}


def test_broken_plugin_is_reported_and_the_rest_still_lists():
    tlzoo.register_plugin(BrokenPlugin(), name="broken")
    ids = {s.id for s in tlzoo.list_backbones()}
    assert len(ids) == 1171  # tlzoo's 20 and timm's 1,151
    status = get_host().statuses["broken"]
    assert status.errors == ["register_backbones() raised RuntimeError: boom"]


def test_duplicate_name_names_both_plugins_and_keeps_the_first():
    tlzoo.register_plugin(DuplicatePlugin(), name="dupe")
    reg = get_registry()
    assert reg.backbones["torch/vgg16"].builder == "tlzoo_torchvision.build:build"
    assert "torch/dupenet" in reg.backbones
    [error] = get_host().statuses["dupe"].errors
    assert error == "backbone torch/vgg16 is registered by both plugin 'torchvision' and plugin 'dupe'; keeping 'torchvision''s"


def test_wrong_return_type_is_reported():
    tlzoo.register_plugin(WrongTypePlugin(), name="wrongtype")
    get_registry()
    assert get_host().statuses["wrongtype"].errors == ["register_backbones() returned dict, not BackboneSpec"]


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "good_plugin.py").write_text(textwrap.dedent("""
        import tlzoo
        from tlzoo.specs import TORCHVISION_IMAGENET

        @tlzoo.hookimpl
        def register_backbones():
            return [tlzoo.BackboneSpec(name="modnet", framework="keras", builder="x:y", input_size=(32, 32),
                                       feature_dim=4, num_params=1, preprocessing=TORCHVISION_IMAGENET)]
    """))
    (tmp_path / "bad_plugin.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_plugin_option_and_env_var_load_modules(plugin_dir):
    result = run_tlzoo("--plugin", "good_plugin", "list-backbones", "--json")
    assert result.returncode == 0, result.stderr
    assert "keras/modnet" in {row["id"] for row in json.loads(result.stdout)}
    result = run_tlzoo("list-backbones", "--json", env={"TLZOO_PLUGINS": "good_plugin"})
    assert "keras/modnet" in {row["id"] for row in json.loads(result.stdout)}


def test_module_that_fails_to_import_warns_in_one_line_and_exits_zero(plugin_dir):
    result = run_tlzoo("list-backbones", "--json", env={"TLZOO_PLUGINS": "bad_plugin"})
    assert result.returncode == 0
    assert len(json.loads(result.stdout)) == 1171
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning == [
        "tlzoo: warning: plugin 'bad_plugin': import failed: ModuleNotFoundError: No module named "
        "'does_not_exist_anywhere' (see `tlzoo plugins`)"
    ]
    assert "Traceback" not in result.stderr
    result = run_tlzoo("plugins", "--json", env={"TLZOO_PLUGINS": "bad_plugin"})
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["bad_plugin"]["status"] == "error"
    assert rows["torchvision"]["status"] == "ok" and len(rows["torchvision"]["backbones"]) == 12
    assert rows["keras"]["status"] == "ok" and len(rows["keras"]["backbones"]) == 8


def test_in_process_registration_does_not_leak():
    assert "fake" not in get_host().statuses


def test_a_plugin_that_calls_sys_exit_at_import_is_reported_not_fatal(tmp_path):
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(3)\n")
    result = run_tlzoo("--plugin", "exits_at_import", "list-backbones", "--json", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "plugin 'exits_at_import': import failed: SystemExit: 3" in result.stderr
    assert len(json.loads(result.stdout)) == 1171


class MisspeltPlugin:
    __name__ = "misspelt"

    @tlzoo.hookimpl
    def register_backbone(self):
        return [make_spec("neverseen")]


class UnmarkedPlugin:
    __name__ = "unmarked"

    def register_backbones(self):
        return [make_spec("neverseen")]


@pytest.mark.parametrize(("plugin", "words"), [
    (MisspeltPlugin(), "register_backbone() is not a tlzoo hook (did you mean register_backbones?)"),
    (UnmarkedPlugin(), "register_backbones() is not marked @tlzoo.hookimpl, so it is never called"),
])  # fmt: skip
def test_misspelled_and_unmarked_hooks_are_reported_not_shown_ok(plugin, words):
    tlzoo.register_plugin(plugin, name=plugin.__name__)
    get_registry()
    status = get_host().statuses[plugin.__name__]
    assert not status.ok and any(words in e for e in status.errors), status.errors
    assert "torch/neverseen" not in {s.id for s in tlzoo.list_backbones()}


TINY_PLUGIN = textwrap.dedent('''
    import tlzoo
    from tlzoo.specs import TORCHVISION_IMAGENET


    @tlzoo.hookimpl
    def register_backbones():
        return [tlzoo.BackboneSpec(name="tinycnn", framework="torch", builder="tinycnn_plugin:build",
                                   input_size=(32, 32), feature_dim=8, num_params=240,
                                   preprocessing=TORCHVISION_IMAGENET)]


    def build(*, spec, weights, input_size):
        from torch import nn

        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
''')


def test_plugin_modules_reach_compare_runs_and_all_failing_exits_non_zero(tmp_path):
    from .datagen import write_folder

    (tmp_path / "tinycnn_plugin.py").write_text(TINY_PLUGIN)
    data = write_folder(tmp_path / "data", per_class=6)
    env = {"PYTHONPATH": str(tmp_path), "TLZOO_CACHE": str(tmp_path / "cache")}
    common = ["compare", "--data", str(data), "--backbones", "tinycnn", "--image-size", "32", "--epochs", "1",
              "--weights", "none", "--no-onnx", "--json"]  # fmt: skip
    ok = run_tlzoo("--plugin", "tinycnn_plugin", *common, "--strategies", "feature-extract", "--out", str(tmp_path / "a"),
                   env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert [(r["backbone"], r["status"]) for r in json.loads(ok.stdout)] == [("torch/tinycnn", "ok")]
    failing = run_tlzoo("--plugin", "tinycnn_plugin", *common, "--strategies", "scratch:lr=1e30",
                        "--out", str(tmp_path / "b"), env=env)  # fmt: skip
    assert failing.returncode == 1, failing.stderr[-2000:]
    assert "every combination failed" in failing.stderr and "Traceback" not in failing.stderr


class ShadowingPlugin:
    __name__ = "shadowing"

    @tlzoo.hookimpl
    def register_backbones(self):
        return [make_spec("xception", framework="torch"), make_spec("resnet18", framework="keras")]


def test_builtin_short_names_keep_their_meaning_and_plugins_say_so():
    tlzoo.register_plugin(ShadowingPlugin(), name="shadowing")
    registry = get_registry()
    assert registry.resolve("xception").id == "keras/xception"  # the built-in keeps its short name
    assert registry.resolve("resnet18").id == "torch/resnet18"
    assert registry.resolve("torch/xception").id == "torch/xception"  # the plugin's: by its full id
    assert registry.resolve("xception", framework="torch").id == "torch/xception"
    assert registry.shadowed == {"torch/xception": "keras/xception", "keras/resnet18": "torch/resnet18"}
    notes = get_host().statuses["shadowing"].notes
    assert sorted(notes) == [
        "keras/resnet18: the short name 'resnet18' means torch/resnet18 (plugin 'torchvision'); use the full id keras/resnet18",
        "torch/xception: the short name 'xception' means keras/xception (plugin 'keras'); use the full id torch/xception",
    ]
    assert get_host().statuses["shadowing"].ok  # a note, not an error


def test_backbone_of_a_framework_no_plugin_provides_is_reported():
    class JaxPlugin:
        __name__ = "jaxish"

        @tlzoo.hookimpl
        def register_backbones(self):
            return [make_spec("flaxnet", framework="jax")]

    tlzoo.register_plugin(JaxPlugin(), name="jaxish")
    assert "jax/flaxnet" not in get_registry().backbones
    assert get_host().statuses["jaxish"].errors == [
        "backbone jax/flaxnet: framework 'jax' is not provided by any installed plugin (installed: torch, keras, timm)"
    ]


def test_list_backbones_and_runs_name_the_plugin():
    listing = run_tlzoo("list-backbones", "--json", "--filter", "vgg16")
    rows = {r["id"]: r for r in json.loads(listing.stdout)}
    assert rows["torch/vgg16"]["plugin"] == "torchvision" and rows["keras/vgg16"]["plugin"] == "keras"
    assert get_registry().provider("torch/vgg16") == {
        "name": "torchvision", "module": "tlzoo_torchvision", "distribution": "tlzoo", "version": tlzoo.__version__,
    }  # fmt: skip


def test_heavy_imports_reserved_names_and_debug_tracebacks(tmp_path):
    (tmp_path / "heavy_plugin.py").write_text("import torch\n")
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('plugin exploded')\n")
    # An installed distribution whose entry point takes a built-in plugin's name.
    dist = tmp_path / "evil_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[tlzoo]\nkeras = heavy_plugin\n")
    env = {"PYTHONPATH": str(tmp_path), "TLZOO_PLUGINS": "heavy_plugin,raising_plugin"}
    rows = {r["name"]: r for r in json.loads(run_tlzoo("plugins", "--json", env=env).stdout)}
    assert rows["heavy_plugin"]["notes"] == [
        "imports torch when loaded, so every tlzoo command (even --help) pays for it; import frameworks inside "
        "the builder instead"
    ]
    assert rows["keras (evil-plugin)"]["errors"] == [
        "entry point name 'keras' is already taken by plugin 'tlzoo_keras'; rename the entry point in "
        "evil-plugin's pyproject.toml"
    ]
    assert rows["keras"]["status"] == "ok" and rows["keras"]["module"] == "tlzoo_keras"
    quiet = run_tlzoo("list-backbones", env=env)
    assert "Traceback" not in quiet.stderr and "plugin exploded" in quiet.stderr
    loud = run_tlzoo("list-backbones", env={**env, "TLZOO_DEBUG": "1"})
    assert loud.returncode == 0
    assert "Traceback (most recent call last)" in loud.stderr and "raising_plugin.py" in loud.stderr
