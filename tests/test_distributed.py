"""Data-parallel training under torchrun on CPU (gloo): one run, disjoint shards, weights kept in sync.

Every launch has a timeout (a hung rendezvous cannot hang CI) and uses free ports: ``--standalone`` picks
one itself; the two-node simulation binds port 0 to find one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_tlzoo
from .datagen import write_folder

TIMEOUT = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("ddp") / "data", per_class=20)


def _args(data: Path, out: Path, name: str, batch: int, *extra: str) -> list[str]:
    return ["train", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
            "--freeze", "12", "--lr", "0.01", "--epochs", "3", "--patience", "0", "--no-augment",
            "--batch-size", str(batch), "--out-dir", str(out), "--name", name, *extra]  # fmt: skip


def _tlzoo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlzoo", *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})  # fmt: skip


def test_two_processes_train_one_run_on_disjoint_halves_in_sync(data, tmp_path):
    out = tmp_path / "runs"
    ddp = _tlzoo(*_args(data, out, "ddp", 8, "--nproc", "2", "--json"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["ddp"], "exactly one run directory"
    assert ddp.stdout.count('"run_dir"') == 1, "rank 0 alone prints"
    assert "Grad strides do not match" not in ddp.stderr
    assert "OMP_NUM_THREADS" not in ddp.stderr  # tlzoo gives each process its share of the cores: no launcher banner
    job = json.loads((out / "ddp" / "environment.json").read_text())["distributed"]
    assert job["world_size"] == 2 and job["backend"] == "gloo"
    assert job["last_epoch_images_per_rank"] == [24, 24]
    assert job["last_epoch_distinct_images"] == job["train_images"] == 48 and job["last_epoch_images_seen_twice"] == 0
    digests = job["weights_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1], "DDP kept every rank's weights identical"

    single = _tlzoo(*_args(data, out, "single", 16, "--json"))  # the same effective batch, seed and data
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = json.loads(ddp.stdout)["accuracy"], json.loads(single.stdout)["accuracy"]
    assert abs(a - b) <= 0.03, (a, b)


def test_a_killed_rank_fails_the_job_and_the_run_resumes_under_torchrun(data, tmp_path):
    out = tmp_path / "runs"
    killed = _tlzoo(*_args(data, out, "k", 8, "--nproc", "2"), env={"TLZOO_FAULT": "epoch:2", "TLZOO_FAULT_RANK": "1"})
    assert killed.returncode != 0
    run = out / "k"
    assert (run / "last_state.pt").is_file() and not (run / "metrics.json").exists()
    resumed = _tlzoo("train", "--resume", str(run), "--nproc", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["epochs"] == 3
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]
    assert json.loads((run / "environment.json").read_text())["distributed"]["world_size"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_simulated_on_one_machine(data, tmp_path):
    """Two launchers, one process each, meeting at a c10d rendezvous on 127.0.0.1, as two machines would."""
    out = tmp_path / "runs"
    endpoint = f"127.0.0.1:{_free_port()}"
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={i}",
             "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=tlzoo-test", "-m", "tlzoo",
             *_args(data, out, "nodes", 8, "--json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        results = [p.communicate(timeout=TIMEOUT) for p in launchers]
    finally:
        for p in launchers:
            p.kill()
    assert all(p.returncode == 0 for p in launchers), [r[1][-2000:] for r in results]
    assert [p.name for p in out.iterdir()] == ["nodes"]
    job = json.loads((out / "nodes" / "environment.json").read_text())["distributed"]
    assert job["world_size"] == 2 and job["weights_sha256_per_rank"][0] == job["weights_sha256_per_rank"][1]


def test_feature_extract_shards_the_images_and_fits_the_head_once(data, tmp_path):
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    common = ["train", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
              "--out-dir", str(tmp_path / "runs"), "--json"]  # fmt: skip
    ddp = _tlzoo(*common, "--nproc", "2", "--name", "fe2", env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    job = json.loads((tmp_path / "runs" / "fe2" / "environment.json").read_text())["distributed"]
    assert job["world_size"] == 2 and job["feature_images_per_rank"] == [24, 24]
    first = json.loads(ddp.stdout)
    assert first["feature_cache"] == "miss"
    # One process reads the features the two ranks gathered into the cache, and fits the same head.
    single = _tlzoo(*common, "--name", "fe1", env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    second = json.loads(single.stdout)
    assert second["feature_cache"] == "hit" and second["accuracy"] == first["accuracy"]
    assert second["log_loss"] == pytest.approx(first["log_loss"], abs=1e-9)


def test_keras_mirrored_strategy_over_two_logical_cpus(data, tmp_path):
    """``--device 0,1`` with a Keras backbone: one process, one replica per device (tf.distribute); the CPU is
    split into two logical devices here, as a machine with two GPUs would have two."""
    out = tmp_path / "runs"
    env = {"TLZOO_KERAS_CPU_REPLICAS": "2"}
    result = _tlzoo("train", "--backbone", "keras/mobilenet_v2", "--weights", "none", "--image-size", "32", "--data",
                    str(data), "--freeze", "20", "--epochs", "2", "--batch-size", "8", "--device", "0,1",
                    "--out-dir", str(out), "--name", "mirror", "--json", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "launching" not in result.stderr, "Keras spreads one process over the devices: no torchrun"
    job = json.loads((out / "mirror" / "environment.json").read_text())["distributed"]
    assert job["replicas"] == 2 and job["devices"] == ["/cpu:0", "/cpu:1"] and job["world_size"] == 1
    history = (out / "mirror" / "history.csv").read_text().splitlines()
    assert len(history) == 3
    scored = _tlzoo("evaluate", str(out / "mirror"), "--data", str(data), "--json")  # the mirrored model loads back
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout)["n"] == 60
    # Without GPUs (and without the test hook), the same request is refused in one line.
    refused = _tlzoo("train", "--backbone", "keras/mobilenet_v2", "--weights", "none", "--image-size", "32", "--data",
                     str(data), "--strategy", "fine-tune", "--device", "0,1", "--out-dir", str(out))  # fmt: skip
    assert refused.returncode == 2 and "TensorFlow sees no GPU on this machine" in refused.stderr
