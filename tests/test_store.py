"""The decoded-pixel store: decoded once, read back exactly, and every fault ends in a right result."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlzoo import images as datamod
from tlzoo.images import locks, store
from tlzoo.images.decode import load_image
from tlzoo.errors import DataError
from tlzoo.images.locks import release_leases
from tlzoo.specs import TORCHVISION_IMAGENET
from tlzoo.training.config import TrainConfig
from tlzoo.training.run import train

from .conftest import run_tlzoo
from .datagen import make_image, write_folder

PREP = TORCHVISION_IMAGENET.with_resize("crop", crop_fraction=0.875)
SIZE = (24, 24)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def decodes(monkeypatch):
    """How many files the store decoded."""
    seen: list[str] = []
    real = store._decode
    monkeypatch.setattr(store, "_decode", lambda data, path, size, prep: (seen.append(path), real(data, path, size, prep))[1])
    return seen


def files_of(folder: Path) -> list[str]:
    return datamod.labelled(datamod.scan(folder)).paths


def test_the_store_gives_the_decoder_s_pixels_and_decodes_each_file_once(tmp_path, cache, decodes):
    data = write_folder(tmp_path / "d", per_class=5, size=40)
    files = files_of(data)
    first = store.images(cache, files, SIZE, PREP)
    expected = np.stack([load_image(p, SIZE, PREP) for p in files])
    np.testing.assert_array_equal(first.images[np.arange(len(files))], expected)
    np.testing.assert_array_equal(first.images[3], expected[3])
    np.testing.assert_array_equal(first.images[2:7], expected[2:7])
    assert first.decoded == len(files) == len(decodes)
    # A subset in another order (a split, a compare combination) finds the same entries: nothing decoded.
    order = np.random.default_rng(0).permutation(len(files))[:9]
    again = store.images(cache, [files[i] for i in order], SIZE, PREP)
    assert again.decoded == 0 and len(decodes) == len(files)
    np.testing.assert_array_equal(again.images[np.arange(9)], expected[order])
    # Ten more files: ten decodes.
    for i in range(10):
        Image.fromarray(make_image("red", 100 + i, 40)).save(data / "red" / f"new{i}.png")
    more = store.images(cache, files_of(data), SIZE, PREP)
    assert more.decoded == 10 and len(decodes) == len(files) + 10


def test_a_file_whose_content_changed_is_decoded_again(tmp_path, cache, decodes):
    data = write_folder(tmp_path / "d", per_class=2, size=40)
    files = files_of(data)
    store.images(cache, files, SIZE, PREP)
    target = Path(files[0])
    st = target.stat()
    Image.fromarray(make_image("blue", 77, 40)).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, as cp -p keeps it
    filled = store.images(cache, files, SIZE, PREP)
    assert filled.decoded == 1
    np.testing.assert_array_equal(filled.images[0], load_image(target, SIZE, PREP))


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_store_file_is_set_aside_and_rebuilt(tmp_path, cache, decodes, damage):
    data = write_folder(tmp_path / "d", per_class=3, size=40)
    files = files_of(data)
    store.images(cache, files, SIZE, PREP)
    [segment] = list((cache / "store").glob("*/seg-*.u8"))
    blob = segment.read_bytes()
    # Truncated: reading past the end of a mapped file would be SIGBUS, so the size is checked first.
    segment.write_bytes(blob[:-100] if damage == "truncated" else b"garbage" + blob[7:])
    filled = store.images(cache, files, SIZE, PREP)
    assert filled.decoded == len(files) and segment not in list((cache / "store").glob("*/seg-*.u8"))
    np.testing.assert_array_equal(filled.images[np.arange(len(files))], np.stack([load_image(p, SIZE, PREP) for p in files]))


def test_unreadable_files_are_skipped_and_listed(tmp_path, cache):
    data = write_folder(tmp_path / "d", per_class=3, size=40)
    (data / "red" / "001.png").write_bytes(b"junk")
    files = files_of(data)
    filled = store.images(cache, files, SIZE, PREP)
    bad = files.index(str(data / "red" / "001.png"))
    assert filled.kept.tolist() == [i for i in range(len(files)) if i != bad]
    assert [p for p, _ in filled.skipped] == [files[bad]]
    with pytest.raises(Exception, match="cannot read image .*001.png"):
        store.images(cache, files, SIZE, PREP, strict=True)


def test_a_worker_gets_a_small_pickle_that_reopens_the_store_by_path(tmp_path, cache):
    data = write_folder(tmp_path / "d", per_class=40, size=40)
    files = files_of(data)
    view = store.images(cache, files, SIZE, PREP).images
    blob = pickle.dumps(view)
    assert len(blob) < 1 << 20 and len(blob) < view.shape[0] * 24 * 24 * 3 / 10
    np.testing.assert_array_equal(pickle.loads(blob)[np.arange(5)], view[np.arange(5)])


FILL = """
import sys, time
from pathlib import Path
from tlzoo.images import locks, store
from tlzoo.specs import TORCHVISION_IMAGENET
real = store._decode
def slow(*args):  # decoding that takes long enough for the fillers to overlap
    time.sleep(0.01)
    return real(*args)
store._decode = slow
files = sys.argv[2:]
filled = store.images(Path(sys.argv[1]), files, (24, 24), TORCHVISION_IMAGENET.with_resize("crop", crop_fraction=0.875))
print(len(filled.kept), filled.decoded)
"""


def _fillers(cache: Path, files: list[str], envs: list[dict[str, str]]) -> list[tuple[int, int]]:
    procs = [subprocess.Popen([sys.executable, "-c", FILL, str(cache), *files], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **env}) for env in envs]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0] * len(envs)
    return [(int(kept), int(decoded)) for kept, decoded in outputs]


@pytest.mark.parametrize("envs", [
    [{}, {}, {}],  # three runs on one folder at once: one decodes, the others wait for its segments
    [{"LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "3"} for r in range(3)],  # torchrun: a shard each, then the rest
], ids=["independent", "torchrun-ranks"])  # fmt: skip
def test_concurrent_fillers_decode_each_image_once_and_agree(tmp_path, cache, envs):
    data = write_folder(tmp_path / "d", per_class=30, size=40)
    files = files_of(data)
    results = _fillers(cache, files, envs)
    assert [kept for kept, _ in results] == [len(files)] * 3
    assert sum(decoded for _, decoded in results) == len(files), results  # nothing decoded twice
    if "LOCAL_RANK" in envs[0]:
        assert all(decoded > 0 for _, decoded in results), results  # every rank did its share
    assert not list((cache / "store").glob("*/*.lock")) and not list((cache / "store").glob("*/in-use-*"))
    filled = store.images(cache, files, SIZE, PREP)
    assert filled.decoded == 0
    np.testing.assert_array_equal(filled.images[np.arange(len(files))], np.stack([load_image(p, SIZE, PREP) for p in files]))


def test_a_lock_left_by_a_dead_filler_is_broken(tmp_path, cache, decodes):
    data = write_folder(tmp_path / "d", per_class=3, size=40)
    files = files_of(data)
    bucket = store.Bucket(cache, PREP, SIZE)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = bucket.path / "fill-0-of-1.lock"
    lock.write_text(json.dumps({"host": locks.HOST, "pid": int(dead.stdout), "since": 0, "id": "x"}))
    orphan = bucket.path / f".tlzoo-tmp.{int(dead.stdout)}.seg-0123.u8"  # the segment it was writing when killed
    orphan.write_bytes(b"\0" * 1000)
    filled = store.images(cache, files, SIZE, PREP)
    assert filled.decoded == len(files) == len(decodes) and not lock.exists() and not orphan.exists()
    # --strict stops at an unreadable file mid-fill: the segment being written is removed, not left half-done.
    (data / "red" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        store.images(cache, files_of(data) + files, (20, 20), PREP, strict=True)
    assert not [p for p in bucket.root.rglob("*") if p.name.startswith(".tlzoo-tmp")]
    # A live holder's lock is respected; another host's, only until its heartbeat is older than STALE_AFTER.
    live = locks.FileLock(tmp_path / "l.lock")
    assert live.acquire() and not locks.FileLock(tmp_path / "l.lock").acquire()
    live.release()
    (tmp_path / "l.lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0, "id": "y"}))
    assert not locks.FileLock(tmp_path / "l.lock").acquire()
    old = (tmp_path / "l.lock").stat().st_mtime - locks.STALE_AFTER - 1
    os.utime(tmp_path / "l.lock", (old, old))
    taker = locks.FileLock(tmp_path / "l.lock")
    assert taker.acquire() and json.loads((tmp_path / "l.lock").read_text())["pid"] == os.getpid()
    taker.release()
    assert not (tmp_path / "l.lock").exists()


def test_eviction_removes_the_least_recently_used_bucket_never_one_in_use(tmp_path, cache, monkeypatch):
    data = write_folder(tmp_path / "d", per_class=3, size=40)
    files = files_of(data)
    sizes = [(24, 24), (28, 28), (32, 32)]
    for i, size in enumerate(sizes):  # three buckets, used in this order
        store.images(cache, files, size, PREP)
        release_leases()
        used = store.store_root(cache) / store.bucket_key(PREP, size) / store.LAST_USED
        os.utime(used, (1000 + i, 1000 + i))
    paths = {size: store.store_root(cache) / store.bucket_key(PREP, size) for size in sizes}
    seg = {size: store._bucket_bytes(paths[size]) for size in sizes}
    store.Bucket(cache, PREP, (24, 24))  # the oldest is in use (by this process): the next oldest goes
    need = 36 * 36 * 3 * len(files)
    monkeypatch.setenv("TLZOO_STORE_MAX_GB", str((sum(seg.values()) - seg[(28, 28)] + need) / 2**30))
    store.images(cache, files, (36, 36), PREP)
    assert [paths[s].exists() for s in sizes] == [True, False, True]
    assert not list((cache / "store").glob(".removed-*"))
    # When even eviction cannot make room, the store is not grown: the run streams.
    monkeypatch.setenv("TLZOO_STORE_MAX_GB", str(need / 2 / 2**30))
    with pytest.raises(store.StoreUnavailable, match="over its cap"):
        store.images(cache, files, (40, 40), PREP)
    assert paths[(24, 24)].exists(), "a bucket in use is never evicted"
    release_leases()


def _fine_tune(data: Path, out: Path, backbone: str = "torch/resnet18", **kw: object) -> dict:
    cfg = TrainConfig(data=str(data), backbone=backbone, weights="none", strategy="fine-tune", freeze="0",
                      image_size=32, batch_size=8, epochs=1, out_dir=str(out), **kw)  # type: ignore[arg-type]
    return train(cfg).metrics


@pytest.mark.parametrize("backbone", ["torch/resnet18", "keras/mobilenet_v2"])
def test_a_run_over_the_store_equals_a_streamed_one_and_the_second_decodes_nothing(tmp_path, cache, decodes, backbone):
    data = write_folder(tmp_path / "d", per_class=8)
    from_store = _fine_tune(data, tmp_path / "a", backbone)
    n = len(decodes)
    assert n == 24 == from_store["images_decoded"]
    streamed = _fine_tune(data, tmp_path / "b", backbone, cache=False)
    assert len(decodes) == n and streamed["images_decoded"] == 24  # --no-cache neither reads nor writes the store
    again = _fine_tune(data, tmp_path / "c", backbone)
    assert len(decodes) == n and again["images_decoded"] == 0, "a second run decodes nothing"
    if backbone.startswith("torch"):  # the store is the framework's input either way: once is enough here
        other_split = _fine_tune(data, tmp_path / "e", backbone, seed=3)
        assert len(decodes) == n, "another split of the same files decodes nothing"
        assert other_split["n"] == from_store["n"]
    # The pixels are equal (test above); training on the CPU itself repeats within a few 1e-4 of log loss, not
    # bit for bit (two streamed runs of two epochs here: 1.03335 and 1.03291).
    for key in ("accuracy", "confusion_matrix"):
        assert from_store[key] == streamed[key] == again[key], key
    assert from_store["log_loss"] == pytest.approx(streamed["log_loss"], abs=5e-3)
    assert from_store["log_loss"] == pytest.approx(again["log_loss"], abs=5e-3)


@pytest.mark.parametrize("fault, said", [("ENOSPC", "is full"), ("EROFS", "could not be written")])
def test_a_full_or_unwritable_cache_warns_and_the_run_decodes_into_memory(tmp_path, fault, said):
    data = write_folder(tmp_path / "d", per_class=4)
    cache = tmp_path / "cache"
    done = run_tlzoo("train", "--data", str(data), "-b", "resnet18", "--weights", "none", "-s", "fine-tune",
                     "--epochs", "1", "--image-size", "32", "--out-dir", str(tmp_path / "out"),
                     env={"TLZOO_CACHE": str(cache), "TLZOO_FAULT": "write:seg-*", "TLZOO_FAULT_ERRNO": fault})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert said in done.stderr and "decoding into memory instead" in done.stderr and "Traceback" not in done.stderr
    left = [p.name for p in (cache / "store").rglob("*") if p.is_file() and p.name not in ("names.log", "last-used")]
    assert left == [], left  # no partial store file, no lock, no in-use marker
    assert json.loads((tmp_path / "out" / "resnet18-fine-tune" / "metrics.json").read_text())["n"] == 3


def test_a_store_over_its_cap_is_not_grown(tmp_path, cache, monkeypatch):
    data = write_folder(tmp_path / "d", per_class=3, size=40)
    monkeypatch.setenv("TLZOO_STORE_MAX_GB", "0.00001")
    with pytest.raises(store.StoreUnavailable, match=r"over its cap of 10\.5 KiB \(TLZOO_STORE_MAX_GB raises it"):
        store.images(cache, files_of(data), (64, 64), PREP)
    assert not list((cache / "store").glob("*/seg-*.u8")) if (cache / "store").exists() else True


def test_tlzoo_cache_lists_sizes_and_clears_each_kind(tmp_path, cache):
    data = write_folder(tmp_path / "d", per_class=3, size=40)
    store.images(cache, files_of(data), SIZE, PREP)
    (cache / "features").mkdir(parents=True)
    (cache / "features" / "x.npz").write_bytes(b"\0" * 1000)
    env = {"TLZOO_CACHE": str(cache)}
    listed = json.loads(run_tlzoo("cache", "list", "--json", env=env).stdout)
    expected_store = sum(p.stat().st_size for p in (cache / "store").rglob("*") if p.is_file())
    assert listed["store"]["bytes"] == expected_store > 9 * 24 * 24 * 3
    assert listed["features"] == {"bytes": 1000, "files": 1} and listed["exports"]["bytes"] == 0
    # This process still uses the store (as a run does until it ends): clear leaves it.
    done = run_tlzoo("cache", "clear", "store", env=env)
    assert done.returncode == 0 and "kept 1 decoded-pixel store bucket(s) that a running tlzoo process" in done.stdout
    assert list((cache / "store").glob("*/seg-*.u8"))
    release_leases()
    done = run_tlzoo("cache", "clear", "store", env=env)
    assert done.returncode == 0 and "cleared store" in done.stdout and "kept" not in done.stdout
    assert not (cache / "store").exists() and (cache / "features" / "x.npz").exists()
    refused = run_tlzoo("cache", "clear", "everything", env=env)
    assert refused.returncode == 2 and "give one of features, store, exports or all" in refused.stderr


def test_a_fill_publishes_a_segment_per_chunk_and_reads_across_them(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(store, "SEGMENT_BYTES", 4 * 24 * 24 * 3)  # four samples a segment
    data = write_folder(tmp_path / "d", per_class=5, size=40)
    files = files_of(data)
    filled = store.images(cache, files, SIZE, PREP)
    assert len(list((cache / "store").glob("*/seg-*.u8"))) == 4  # 15 samples: 4 + 4 + 4 + 3
    order = np.random.default_rng(1).permutation(len(files))
    expected = np.stack([load_image(p, SIZE, PREP) for p in files])
    np.testing.assert_array_equal(filled.images[order], expected[order])


def test_feature_extraction_fills_the_store_and_the_runs_after_it_decode_nothing(tmp_path, cache, decodes, monkeypatch):
    data = write_folder(tmp_path / "d", per_class=6)

    def run(strategy: str, out: str, **kw: object) -> dict:
        cfg = TrainConfig(data=str(data), backbone="torch/resnet18", weights="none", strategy=strategy,
                          image_size=32, batch_size=8, epochs=1, out_dir=str(tmp_path / out), **kw)  # type: ignore[arg-type]
        return train(cfg).metrics

    extracted = run("feature-extract", "a")
    assert extracted["images_decoded"] == 18 == len(decodes) and extracted["feature_cache"] == "miss"
    tuned = run("fine-tune", "b", freeze="0")
    assert tuned["images_decoded"] == 0 and len(decodes) == 18
    # Features missing from the feature cache (another tap) are extracted from the stored pixels: no decode,
    # and the same features as decoding gives.
    tapped = run("feature-extract", "c", tap="8")
    assert tapped["feature_cache"] == "miss" and tapped["images_decoded"] == 0 and len(decodes) == 18
    fresh = run("feature-extract", "f", tap="8", cache=False)
    assert fresh["images_decoded"] == 18 and len(decodes) == 18  # --no-cache: decoded without the store
    assert tapped["log_loss"] == pytest.approx(fresh["log_loss"], abs=1e-6)
    # Over its cap, feature extraction streams and says so; nothing is written.
    for i in range(3):
        Image.fromarray(make_image("red", 200 + i, 40)).save(data / "red" / f"more{i}.png")
    before = sorted(p.name for p in (cache / "store").rglob("seg-*.u8"))
    monkeypatch.setenv("TLZOO_STORE_MAX_GB", "0.000001")
    capped = run("feature-extract", "e", tap="7")
    assert capped["images_decoded"] == 3, decodes[18:]
    assert sorted(p.name for p in (cache / "store").rglob("seg-*.u8")) == before
