"""The decoded-pixel store under the faults a new user meets: locks and leases left by processes whose PIDs live
again, empty locks, a cache path that is a file, odd limits in the environment, files changed behind a run's
back, a raised pixel limit. Each through the real CLI where a user meets it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlzoo.images import aliases, locks, store

from .conftest import run_tlzoo
from .datagen import make_image, write_folder

TWO_DAYS = 2 * 86400.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("store-faults") / "data", per_class=8)


def _args(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
            "--batch-size", "8", "--epochs", "1", "--strategy", "fine-tune", "--out-dir", str(tmp_path / "runs"), *extra]


def _train(data: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None, cache: Path | None = None):
    cache = cache or tmp_path / "cache"
    return run_tlzoo(*_args(data, tmp_path, *extra), env={"TLZOO_CACHE": str(cache), **(env or {})})


def _killed_fill(data: Path, tmp_path: Path) -> Path:
    """A fill killed while it wrote its segment (as kill -9 would): its lock is left behind. Returns the lock."""
    killed = _train(data, tmp_path, env={"TLZOO_FAULT": "write:seg-*"})
    assert killed.returncode == 137, killed.stderr
    [lock] = (tmp_path / "cache" / "store").glob("*/fill-*.lock")
    return lock


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("stamp", ["started", "since", "old"])
def test_a_fill_lock_whose_pid_is_alive_as_another_process_is_broken_at_once(data, tmp_path, stamp):
    """A killed run in a restarted container: its lock names this host and a PID that lives again as another
    process (here the test's own). The lock says when its writer started (``started``), or, from an older tlzoo,
    when it was written (``since``), or nothing but a heartbeat two days old: each is broken, not waited on."""
    lock = _killed_fill(data, tmp_path)
    who = json.loads(lock.read_text())
    assert who["pid"] != os.getpid() and isinstance(who["started"], float)
    who["pid"] = os.getpid()  # alive, and not the lock's writer
    if stamp == "since":
        del who["started"]
    elif stamp == "old":
        del who["started"], who["since"]
    lock.write_text(json.dumps(who))
    if stamp != "started":
        _age(lock, TWO_DAYS)
    done = _train(data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "waiting for" not in done.stdout + done.stderr and not lock.exists()


def test_an_empty_lock_is_broken_within_seconds_and_a_live_filler_is_waited_for_and_said_once(data, tmp_path):
    lock = _killed_fill(data, tmp_path)
    lock.write_text("")  # created, never written: a crash or a full disk in between
    done = _train(data, tmp_path, "--name", "after-empty")
    assert done.returncode == 0, done.stderr
    assert not lock.exists()
    # A live filler (this process) holds the lock for two seconds: the run says once whom it waits for, then
    # takes the shard over when the lock is released.
    shutil.rmtree(tmp_path / "cache" / "store")
    lock.parent.mkdir(parents=True)
    held = locks.FileLock(lock)
    assert held.acquire()
    args = _args(data, tmp_path, "--name", "waited")
    env = {**os.environ, "TLZOO_CACHE": str(tmp_path / "cache")}
    with subprocess.Popen([sys.executable, "-m", "tlzoo", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as proc:  # fmt: skip
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "waiting for" in line:
                held.release()  # the filler stops: the run takes its shard over
        assert proc.wait(timeout=300) == 0, "".join(lines)
    said = [line for line in lines if "waiting for" in line]
    assert len(said) == 1 and f"process {os.getpid()} on {locks.HOST}" in said[0]
    assert held.held is False and not lock.exists()


def test_a_lease_whose_pid_is_alive_as_another_process_is_cleared(data, tmp_path):
    assert _train(data, tmp_path).returncode == 0
    [bucket] = [p for p in (tmp_path / "cache" / "store").iterdir() if p.is_dir()]
    lease = bucket / f"{locks.Lease.PREFIX}{locks.HOST}-{os.getpid()}"
    lease.write_text(json.dumps({"host": locks.HOST, "pid": os.getpid(), "since": time.time() - TWO_DAYS,
                                 "started": time.time() - TWO_DAYS, "id": "killed"}))  # fmt: skip
    cleared = run_tlzoo("cache", "clear", "store", env={"TLZOO_CACHE": str(tmp_path / "cache")})
    assert cleared.returncode == 0, cleared.stderr
    assert "kept" not in cleared.stdout and not bucket.exists()


def test_the_owner_check_tells_a_live_writer_from_a_reused_pid(tmp_path):
    mine = locks.FileLock(tmp_path / "mine.lock")
    assert mine.acquire()
    _age(tmp_path / "mine.lock", locks.STALE_AFTER / 2)  # a live holder between two heartbeats: kept
    assert not locks.FileLock(tmp_path / "mine.lock").acquire()
    mine.release()
    text = json.dumps({"host": locks.HOST, "pid": os.getpid()})
    assert locks._owner_gone("", locks.GARBLED_AFTER + 1, locks.STALE_AFTER)
    assert not locks._owner_gone("", 0.5, locks.STALE_AFTER)  # being written right now
    assert not locks._owner_gone(text, 1.0, locks.STALE_AFTER)  # nothing to tell the writer by: its heartbeat
    assert locks._owner_gone(text, locks.STALE_AFTER + 1, locks.STALE_AFTER)


def test_a_change_of_content_at_the_same_size_and_time_is_refused_on_resume(tmp_path):
    """Uncompressed BMPs of one size all have one byte size: a class's files replaced by another class's
    content, their mtimes put back (``touch -r``), look unchanged to size and time."""
    data = tmp_path / "bmp"
    for cls in ("red", "green", "blue"):
        (data / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(make_image(cls, i)).save(data / cls / f"{i}.bmp")
    killed = _train(data, tmp_path, "--epochs", "2", "--name", "cut", env={"TLZOO_FAULT": "epoch:1"})
    assert killed.returncode == 137
    split = (tmp_path / "runs" / "cut" / "split.csv").read_text()
    assert split.splitlines()[0] == "path,label,subset,bytes,sha256,path_bytes" and len(split.splitlines()[1].split(",")[4]) == 64
    for i in range(8):
        red, green = data / "red" / f"{i}.bmp", data / "green" / f"{i}.bmp"
        stat = red.stat()
        red.write_bytes(green.read_bytes())
        os.utime(red, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert red.stat().st_size == stat.st_size
    resumed = run_tlzoo("train", "--resume", str(tmp_path / "runs" / "cut"), env={"TLZOO_CACHE": str(tmp_path / "cache")})
    assert resumed.returncode != 0
    assert "changed since" in resumed.stderr and len(resumed.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, value", [
    ("TLZOO_STORE_MAX_GB", "abc"), ("TLZOO_STORE_MAX_GB", "1,5"), ("TLZOO_STORE_MAX_GB", "-1"),
    ("TLZOO_STORE_MAX_GB", "nan"), ("TLZOO_MAX_IMAGE_PIXELS", "abc"), ("TLZOO_MAX_IMAGE_PIXELS", "-5"),
    ("TLZOO_MAX_IMAGE_PIXELS", "0"), ("TLZOO_MAX_IMAGE_PIXELS", "nan"),
])  # fmt: skip
def test_a_bad_limit_is_refused_in_one_line_before_any_work(data, tmp_path, name, value):
    for args in (["train", "--data", str(data), "--out-dir", str(tmp_path / "runs")], ["cache", "list"]):
        done = run_tlzoo(*args, env={name: value, "TLZOO_CACHE": str(tmp_path / "cache")})
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {name}={value!r}"), done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


def test_limits_that_mean_none_and_a_store_turned_off(data, tmp_path):
    off = _train(data, tmp_path, env={"TLZOO_STORE_MAX_GB": "0"})
    assert off.returncode == 0, off.stderr
    assert (off.stdout + off.stderr).count("turns the decoded-pixel store off") == 1
    assert not (tmp_path / "cache" / "store").exists()
    for value in ("none", "inf", "1e400"):
        done = _train(data, tmp_path, "--name", f"cap-{value}", env={"TLZOO_STORE_MAX_GB": value,
                                                                     "TLZOO_MAX_IMAGE_PIXELS": value})  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert list((tmp_path / "cache" / "store").glob("*/seg-*.u8"))
    listed = run_tlzoo("cache", "list", env={"TLZOO_CACHE": str(tmp_path / "cache"), "TLZOO_STORE_MAX_GB": "none"})
    assert "the store's cap: none" in listed.stdout


@pytest.mark.parametrize("where", ["cache", "store"])
def test_a_cache_path_that_is_a_file_only_warns(data, tmp_path, where):
    cache = tmp_path / "cache"
    if where == "cache":
        cache.write_text("not a folder")
    else:
        cache.mkdir()
        (cache / "store").write_text("not a folder")
    for strategy in ("fine-tune", "feature-extract"):
        done = _train(data, tmp_path, "--strategy", strategy, "--name", strategy, cache=cache)
        assert done.returncode == 0, done.stderr
        if strategy == "fine-tune":
            assert "is a file, not a folder" in done.stderr


def test_raising_the_pixel_limit_brings_a_skipped_image_back(tmp_path):
    data = write_folder(tmp_path / "d", per_class=6)
    Image.fromarray(np.full((200, 150, 3), 90, np.uint8)).save(data / "red" / "large.png")
    args = ["train", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
            "--test-split", "0", "--out-dir", str(tmp_path / "runs")]  # fmt: skip
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    low = run_tlzoo(*args, "--name", "low", env={**env, "TLZOO_MAX_IMAGE_PIXELS": "20000"})
    assert low.returncode == 0 and "large.png" in low.stderr and "over the limit of 20,000" in low.stderr
    raised = run_tlzoo(*args, "--name", "raised", env={**env, "TLZOO_MAX_IMAGE_PIXELS": "none"})
    assert raised.returncode == 0, raised.stderr
    assert "large.png" not in raised.stderr and "fits TLZOO_MAX_IMAGE_PIXELS now" in raised.stdout
    assert "large.png" in (tmp_path / "runs" / "raised" / "split.csv").read_text()
    again = run_tlzoo(*args, "--name", "again", env={**env, "TLZOO_MAX_IMAGE_PIXELS": "none"})
    assert "feature cache hit" in again.stdout and "large.png" not in again.stderr


def test_the_small_disk_message_says_what_it_keeps(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tlzoo.images.decode import SQUASH

    bucket = store.Bucket(tmp_path / "cache", SQUASH, (32, 32))
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: SimpleNamespace(free=40 << 20))
    with pytest.raises(store.StoreUnavailable) as refused:
        store._check_room(bucket, 3 * 32 * 32 * 100)
    text = str(refused.value)
    assert "has 40.0 MiB free" in text and "need 300 KiB" in text and "leaves 256 MiB free" in text
    assert "0.0 GiB" not in text and "0.00 GiB" not in text


def test_a_weights_file_of_another_architecture_is_refused_and_the_earlier_file_kept(tmp_path):
    timm = pytest.importorskip("timm")
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    good, wrong = tmp_path / "good.safetensors", tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}, str(good))
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()}, str(wrong))
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    first = run_tlzoo("weights", "import", str(good), "--backbone", "timm/resnet18.a1_in1k", env=env)
    assert first.returncode == 0 and "imported good.safetensors" in first.stdout, first.stderr
    [stored] = (tmp_path / "cache" / "weights" / "timm").glob("resnet18.a1_in1k*.safetensors")
    before = stored.read_bytes()
    refused = run_tlzoo("weights", "import", str(wrong), "--backbone", "timm/resnet18.a1_in1k", env=env)
    assert refused.returncode != 0 and "imported" not in refused.stdout
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert stored.read_bytes() == before  # the earlier file is kept, byte for byte
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".tlzoo-tmp")]


def test_filling_appends_the_aliases_and_reads_one_segment_table_per_flush(tmp_path, monkeypatch):
    """The names map is not rewritten per segment: a fill of many segments appends each file's alias once, and
    each flush reads its own segment's table only."""
    from tlzoo import images
    from tlzoo.images.decode import SQUASH

    data = write_folder(tmp_path / "d", per_class=20)
    files = images.labelled(images.scan(data)).paths
    monkeypatch.setattr(store, "SEGMENT_BYTES", 8 * 24 * 24 * 3)  # a segment every 8 images: 8 of them
    tables: list[Path] = []
    real = store._read_segment
    monkeypatch.setattr(store, "_read_segment", lambda path, size: (tables.append(path), real(path, size))[1])
    writes: list[int] = []
    real_write = aliases._write_all
    monkeypatch.setattr(aliases, "_write_all", lambda fd, data: (writes.append(len(data)), real_write(fd, data))[1])
    filled = store.images(tmp_path / "cache", files, (24, 24), SQUASH)
    segments = sorted((tmp_path / "cache" / "store").glob("*/seg-*.u8"))
    assert filled.decoded == len(files) == 60 and len(segments) == 8
    assert sorted(tables) == segments  # each table read once, when its segment was published
    log = tmp_path / "cache" / "store" / "names.log"
    lines = log.read_text().splitlines()
    assert len(lines) == 60 and len({json.loads(line)[0] for line in lines}) == 60
    assert sum(writes) == log.stat().st_size  # appended once, never rewritten
    assert len(writes) == 8  # one append per flush, beside its segment
    again = store.images(tmp_path / "cache", files, (24, 24), SQUASH)
    assert again.decoded == 0 and log.read_text().splitlines() == lines  # known: nothing read, nothing appended


def test_the_alias_log_is_compacted_when_half_its_lines_are_dead_dropping_gone_and_changed_files(tmp_path, monkeypatch):
    root = tmp_path / "store"
    files = []
    for i in range(12):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(bytes([i]) * 10)
        files.append(path)
    (root).mkdir()
    (root / "names.json").write_text(json.dumps({"old\0key": "a" * 64}))  # the map before the log: read once
    names = aliases.Names(root)
    assert names.known == {"old\0key": "a" * 64}
    monkeypatch.setattr(aliases.Names, "COMPACT_AT", 10)
    for path in files:
        names.set(str(path), "b" * 64)
    names.save()  # 12 live lines: a fill is never rewritten, whatever its size
    assert len((root / "names.log").read_text().splitlines()) == 12 and names.dead == 0
    files[0].unlink()  # gone
    for path in files[1:7]:  # changed and hashed anew by another process: six dead lines
        path.write_bytes(b"other bytes " + path.name.encode())
    other = aliases.Names(root)
    for path in files[1:7]:
        other.set(str(path), "c" * 64)
    other.save()  # 18 lines, 6 dead: under half, appended
    assert len((root / "names.log").read_text().splitlines()) == 18 and other.dead == 6
    for path in files[7:10]:  # three more changed: 21 lines, 9 dead
        path.write_bytes(b"changed again " + path.name.encode())
        other.set(str(path), "d" * 64)
    other.save()
    assert other.dead == 9 and len((root / "names.log").read_text().splitlines()) == 21
    for path in files[10:12]:
        path.write_bytes(b"and these " + path.name.encode())
        other.set(str(path), "e" * 64)
    other.save()  # 23 lines, 11 dead... 2 x 11 < 23: kept; one more changed file tips it over half
    files[1].write_bytes(b"once more")
    other.set(str(files[1]), "f" * 64)
    other.save()  # 24 lines, 12 dead: compacted to the 11 live files (file 0 is gone)
    kept = [json.loads(line) for line in (root / "names.log").read_text().splitlines()]
    assert kept[0] == {"tlzoo-names": 1, "live": 11} and len(kept) == 12
    assert {Path(k.split("\0")[0]).name for k, _ in kept[1:]} == {f"{i}.bin" for i in range(1, 12)}
    assert not (root / "names.json").exists()
    names.reload()  # the first process follows the replaced file
    assert names.get(str(files[1])) == "f" * 64 and names.get(str(files[8])) == "d" * 64
    assert names.get(str(files[0])) is None


def test_tlzoo_cache_prune_drops_the_hashes_of_gone_files(tmp_path):
    root = tmp_path / "cache" / "store"
    names = aliases.Names(root)
    files = [tmp_path / f"{i}.bin" for i in range(5)]
    for i, path in enumerate(files):
        path.write_bytes(bytes([i]))
        names.set(str(path), "a" * 64)
    names.save()
    files[0].unlink()
    files[1].unlink()
    done = run_tlzoo("cache", "prune", env={"TLZOO_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert "2 of 5 dropped (files gone or changed), 3 kept" in done.stdout
    assert len((root / "names.log").read_text().splitlines()) == 4  # the header and three entries


def test_validation_and_the_final_evaluation_run_at_the_training_batch(data, tmp_path, monkeypatch):
    """The evaluation's memory does not grow with the validation split: it is scored a training batch at a time
    (a fixed batch of 64 made a run's peak grow 1.51x from 100 to 800 images; benchmarks/input_pipeline.py)."""
    from tlzoo_torch import train as torch_train

    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train

    asked: list[tuple[int, int]] = []
    real = torch_train.TorchEngine.logits
    monkeypatch.setattr(torch_train.TorchEngine, "logits",
                        lambda self, images, batch_size=64: (asked.append((len(images), batch_size)),
                                                             real(self, images, batch_size))[1])  # fmt: skip
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    train(TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32, batch_size=4, epochs=2,
                      strategy="fine-tune", patience=0, out_dir=str(tmp_path / "runs")))  # fmt: skip
    assert len(asked) == 3 and {batch for _, batch in asked} == {4}  # two epochs' validation, then the final one
