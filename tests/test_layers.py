"""The package's shape, held by tests: the layers (import-linter's contracts in pyproject.toml), the input path as
the one place that opens images or walks a user's folders, and the old import paths that still work."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("zoo", "plugins", "exporters")


def lint_imports(cwd: Path, pythonpath: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` (import-linter) with the project's contracts, on the tree at ``pythonpath``."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", script, "--no-cache", str(cwd / "pyproject.toml")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_layers_and_the_frameworks_contract_hold() -> None:
    done = lint_imports(ROOT, [ROOT / s for s in SOURCES])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    # the input path reaching up to the training config, inside a function
    ("images/decode.py", "def _upward():\n    from ..training import config  # noqa\n",
     "tlzoo.images is not allowed to import tlzoo.training"),
    # the file helpers at the bottom reaching up to the run directory's package
    ("files.py", "def _upward():\n    from .runs import rundir  # noqa\n", "tlzoo.files is not allowed to import tlzoo.runs"),
    # a framework in the core
    ("heads.py", "def _torch():\n    import torch  # noqa\n", "tlzoo.heads -> torch"),
])  # fmt: skip
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    for source in SOURCES:
        shutil.copytree(ROOT / source, tmp_path / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "zoo" / "tlzoo" / module
    target.write_text(target.read_text() + "\n\n" + line)
    done = lint_imports(tmp_path, [tmp_path / s for s in SOURCES])
    assert done.returncode != 0, done.stdout
    assert broken in done.stdout
    assert "1 broken" in done.stdout


# Calls that list or walk a folder, and where outside tlzoo.images each one may be: tlzoo's own folders only.
WALKS = {"walk", "scandir", "listdir", "iterdir", "glob", "rglob"}
OWN_FOLDERS = {
    ("zoo/tlzoo/files.py", "glob"): "tlzoo's own temporaries in a run, cache or weights folder",
    ("zoo/tlzoo/training/resume.py", "glob"): "a run directory's checkpoints",
    ("zoo/tlzoo/cli/cache_cmd.py", "iterdir"): "tlzoo's cache",
    ("zoo/tlzoo/cli/cache_cmd.py", "rglob"): "tlzoo's cache",
    ("zoo/tlzoo/cli/list_backbones.py", "listdir"): "a framework's weights cache",
    ("zoo/tlzoo/weights.py", "rglob"): "the weights folder given to `tlzoo weights import`",
}


def _calls(path: Path) -> list[tuple[str, int]]:
    """(what, line) for each call of ``Image.open`` or of a folder listing in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            if name == "open" and (isinstance(owner, ast.Name) and owner.id == "Image"
                                   or isinstance(owner, ast.Attribute) and owner.attr == "Image"):  # fmt: skip
                found.append(("Image.open", node.lineno))
            elif name in WALKS:
                found.append((name, node.lineno))
    return found


def test_only_the_input_path_opens_images_or_walks_a_users_folder() -> None:
    outside = []
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("zoo/tlzoo/images/"):
                continue
            for what, line in _calls(path):
                if (rel, what) not in OWN_FOLDERS:
                    outside.append(f"{rel}:{line} {what}")
    assert outside == [], "only tlzoo.images opens images or walks a user's folders: " + ", ".join(outside)


def test_the_rule_sees_what_it_forbids(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from PIL import Image\nimport os\n\ndef f(p):\n    Image.open(p)\n    os.walk(p)\n    p.rglob('*')\n")
    assert _calls(probe) == [("Image.open", 5), ("walk", 6), ("rglob", 7)]


def test_the_input_path_does_open_images() -> None:
    """The rule is not empty: the decoding and the scanning it names live in tlzoo.images."""
    inside = [what for path in (ROOT / "zoo/tlzoo/images").glob("*.py") for what, _ in _calls(path)]
    assert "Image.open" in inside and {"walk", "scandir", "iterdir", "listdir"} & set(inside)


@pytest.mark.parametrize("old, name, new", [
    ("tlzoo.decode", "load_image", "tlzoo.images.decode"),
    ("tlzoo.rundir", "atomic_write", "tlzoo.files"),
    ("tlzoo.rundir", "new_run_dir", "tlzoo.runs.rundir"),
    ("tlzoo.training.heads", "HeadParams", "tlzoo.heads"),
])  # fmt: skip
def test_old_import_paths_still_work_and_say_where_the_name_went(old: str, name: str, new: str) -> None:
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    assert any(issubclass(w.category, DeprecationWarning) and old in str(w.message) for w in caught)


def test_the_images_package_offers_its_api_lazily() -> None:
    import tlzoo.images as images
    from tlzoo.images.folders import scan
    from tlzoo.images.sets import ImageList

    assert images.scan is scan and images.ImageList is ImageList
    assert set(images.__all__) <= set(dir(images))
    with pytest.raises(AttributeError):
        images.no_such_name  # noqa: B018
