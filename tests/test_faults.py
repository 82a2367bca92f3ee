"""Faults: a process killed mid-write, a full disk, processes racing for one run name. Nothing is lost.

Kills are injected at named steps (``TLZOO_FAULT``, see :func:`tlzoo.rundir.fault_point`) so that the tests
never depend on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tlzoo.files import TEMP_PREFIX

from .conftest import run_tlzoo
from .datagen import write_folder

KILLED = 137


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("faults") / "data", per_class=8)


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
            "--batch-size", "8", "--out-dir", str(out), "--patience", "0", *extra]  # fmt: skip


def _temps(folder: Path) -> list[Path]:
    return list(folder.glob(f"{TEMP_PREFIX}*"))


def test_kill_during_a_checkpoint_write_then_resume(tiny_data, tmp_path):
    args = _train_args(tiny_data, tmp_path / "runs", "--strategy", "fine-tune", "--epochs", "3", "--name", "r")
    killed = run_tlzoo(*args, env={"TLZOO_FAULT": "write:last_state.pt#2"})  # dies writing epoch 2's state
    assert killed.returncode == KILLED, killed.stderr[-1000:]
    run = tmp_path / "runs" / "r"
    assert _temps(run), "the killed write left its temporary file"
    assert (run / "last_state.pt").is_file() and not (run / "metrics.json").exists()

    resumed = run_tlzoo("train", "--resume", str(run), "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["epochs"] == 3
    assert not _temps(run), "the next start reclaims what the killed process left"
    assert not (run / "last_state.pt").exists() and (run / "metrics.json").is_file()
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]


def test_kill_during_an_export_leaves_no_file_and_the_next_export_works(tiny_data, tmp_path):
    trained = run_tlzoo(*_train_args(tiny_data, tmp_path / "runs", "--name", "fx", "--json"),
                        env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = tmp_path / "exports" / "m.onnx"
    out.parent.mkdir()
    run = json.loads(trained.stdout)["run_dir"]
    killed = run_tlzoo("export", "onnx", run, "--out", str(out), env={"TLZOO_FAULT": "rename:m.onnx"})
    assert killed.returncode == KILLED, killed.stderr[-1000:]
    assert not out.exists() and _temps(out.parent)
    again = run_tlzoo("export", "onnx", run, "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["check"] == "passed" and out.is_file()
    assert not _temps(out.parent)


def test_a_full_disk_stops_with_one_line_and_leaves_nothing(tiny_data, tmp_path):
    """A real full disk: a 1 MiB tmpfs (needs root); the checkpoint cannot fit."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root; test_injected_enospc covers the same paths")
    try:
        result = run_tlzoo(*_train_args(tiny_data, disk / "runs", "--strategy", "fine-tune", "--epochs", "1"))
        assert result.returncode == 1, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
        assert "disk is full" in result.stderr
        assert not (disk / "runs").exists(), "a run that never checkpointed leaves no folder (nor the --out-dir it made)"
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize(("step", "strategy"), [("write:config.yaml", "fine-tune"), ("write:model.pt", "fine-tune")])
def test_injected_enospc(tiny_data, tmp_path, step, strategy):
    env = {"TLZOO_FAULT": step, "TLZOO_FAULT_ERRNO": "ENOSPC"}
    result = run_tlzoo(*_train_args(tiny_data, tmp_path / "runs", "--strategy", strategy, "--epochs", "1"), env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Error: the disk is full" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "the run folder and the --out-dir made for it are removed"


def test_a_feature_cache_that_cannot_be_written_is_only_a_warning(tiny_data, tmp_path):
    env = {"TLZOO_FAULT": "write:*.npz", "TLZOO_FAULT_ERRNO": "ENOSPC", "TLZOO_CACHE": str(tmp_path / "cache")}
    result = run_tlzoo(*_train_args(tiny_data, tmp_path / "runs", "--json"), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "feature cache not written (No space left on device" in " ".join(result.stderr.split())
    assert json.loads(result.stdout)["accuracy"] >= 0


RACE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tlzoo.runs.rundir import new_run_dir
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    path, created = new_run_dir(Path(sys.argv[1]), "same")
    print(path.name)
""")


def test_processes_started_together_never_share_a_run_directory(tmp_path):
    for trial in range(5):
        out = tmp_path / f"trial{trial}"
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(out), str(start)], stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]  # fmt: skip
        names = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert sorted(names) == ["same", "same-2", "same-3", "same-4"], names


def test_run_files_are_readable_by_others(tiny_data, tmp_path):
    result = run_tlzoo(*_train_args(tiny_data, tmp_path / "runs", "--name", "perm"), env={"TLZOO_CACHE": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr[-2000:]
    mask = os.umask(0)
    os.umask(mask)
    for f in (tmp_path / "runs" / "perm").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f
