"""The run directory's format: its file names, its typed metadata schema, its writer and its reader.

A run directory is what ``tlzoo train`` leaves and what evaluate, export,
predict and compare read. This module is the only one that knows its layout::

    config.yaml          the resolved settings (TrainConfig)       labels.json   class names, in output order
    split.csv            path,label,subset,bytes,sha256,path_bytes classifier.json  ClassifierMeta (below)
    metrics.json         scores on the test (or val) split         history.csv   one row per epoch
    environment.json     versions, device, data fingerprint        report.json   skipped images
    MODEL_CARD.md        the model card                            model.pt / model.keras  the checkpoint
    learning_curves.png, confusion_matrix.png                      last_state.*  resumable state (unfinished runs)
    head.npz             the head alone (instead of the checkpoint, see below)

A feature-extract run whose backbone has published weights records the backbone
by id, weights tag and the weights file's sha256 (``weights_sha256``) and keeps
only its head (``head.npz``, plain arrays): its backbone is the unchanged
pretrained one, so writing it again would only copy the weights file. Loading it
rebuilds the backbone from the framework's weights cache and refuses a file whose
hash differs.

``classifier.json`` carries ``format_version``. Version 1 (tlzoo 0.1 before the
field existed) has the same keys and loads; version 3 is a head-only run (version
2 is every other run, so older tlzoo still reads them); a version newer than this
tlzoo reads is refused with a clear message.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..specs import Preprocessing

if TYPE_CHECKING:
    from ..heads import HeadParams

FORMAT_VERSION = 3
FULL_MODEL_FORMAT = 2  # what a run with a whole checkpoint writes: tlzoo versions that read 2 read it
MULTILABEL_FORMAT = 4  # a multi-label run (sigmoid outputs, thresholds): a tlzoo before them refuses it in one line
READS_FORMATS = max(FORMAT_VERSION, MULTILABEL_FORMAT)
HEAD = "head.npz"
CONFIG = "config.yaml"
LABELS = "labels.json"
SPLIT = "split.csv"
CLASSIFIER = "classifier.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
ENVIRONMENT = "environment.json"
REPORT = "report.json"
LEARNING_CURVES = "learning_curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
RELIABILITY = "reliability.png"
PER_LABEL = "per_label.png"
STATE_STEM = "last_state"
# What a run directory holds that tlzoo wrote: never replaced by a --out of predict or evaluate.
RUN_FILES = (HEAD, CONFIG, LABELS, SPLIT, CLASSIFIER, METRICS, HISTORY, ENVIRONMENT, REPORT, LEARNING_CURVES,
             CONFUSION_MATRIX, RELIABILITY, PER_LABEL, "MODEL_CARD.md", "model.pt", "model.keras", "model.onnx")
MAX_INPUT_SIDE = 4096


def _damaged(path: Path, why: str) -> UsageError:
    return UsageError(f"{path}: {why}; the run's files were edited or are corrupt")


@dataclass(frozen=True)
class ClassifierMeta:
    """What a trained classifier is: enough to rebuild, run and describe it (``classifier.json``)."""

    framework: str
    backbone: str
    input_size: tuple[int, int]
    classes: list[str]
    output: str  # softmax | ovr | sigmoid (multi-label): how logits become probabilities
    preprocessing: Preprocessing
    model_file: str
    head: dict[str, Any]
    tap: int | None = None
    weights: str | None = None
    strategy: str = ""
    plugin: dict[str, str] = field(default_factory=dict)  # the plugin that built the backbone: name, distribution, version
    tlzoo_version: str = ""
    weights_sha256: str | None = None  # head-only runs: the backbone's weights file, by content
    format_version: int = FULL_MODEL_FORMAT
    thresholds: list[float] | None = None  # multi-label: each label's probability threshold

    @property
    def multilabel(self) -> bool:
        return self.output == "sigmoid"

    @property
    def head_only(self) -> bool:
        """The run keeps its head alone (``head.npz``); the backbone is its published weights."""
        return self.model_file == HEAD

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["preprocessing"] = self.preprocessing.to_dict()
        return data

    # Read-only mapping access, for code written when the metadata was a plain dict (``run.meta["backbone"]``).
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> ClassifierMeta:
        if not isinstance(data, dict):
            raise _damaged(path, "must be a JSON object")
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version < 1:
            raise _damaged(path, f"format_version must be a positive number, got {version!r}")
        if version > READS_FORMATS:
            raise UsageError(f"{path} was written by a newer tlzoo (run format {version}; this tlzoo reads formats "
                             f"1..{READS_FORMATS}): upgrade tlzoo to use this run")  # fmt: skip
        required = {"framework": str, "backbone": str, "input_size": list, "classes": list, "output": str,
                    "preprocessing": dict, "model_file": str, "head": dict}  # fmt: skip
        for key, kind in required.items():
            if not isinstance(data.get(key), kind):
                raise _damaged(path, f"{key} is missing or not a {kind.__name__}")
        size = data["input_size"]
        if len(size) != 2 or not all(isinstance(v, int) and 1 <= v <= MAX_INPUT_SIDE for v in size):
            raise UsageError(f"{path}: input_size must be two sides of 1..{MAX_INPUT_SIDE} pixels, got {size}")
        if not data["classes"] or not all(isinstance(c, str) for c in data["classes"]):
            raise UsageError(f"{path}: classes must be a non-empty list of names")
        if "/" in data["model_file"] or "\\" in data["model_file"] or data["model_file"].startswith("."):
            raise UsageError(f"{path}: model_file must be a file name inside the run directory")
        if data["output"] not in ("softmax", "ovr", "sigmoid"):
            raise _damaged(path, f"output must be softmax, ovr or sigmoid, got {data['output']!r}")
        thresholds = data.get("thresholds")
        if data["output"] == "sigmoid" and not (
                isinstance(thresholds, list) and len(thresholds) == len(data["classes"])
                and all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 for t in thresholds)):
            raise _damaged(path, "a multi-label run needs one threshold in (0, 1) per label")
        tap = data.get("tap")
        if tap is not None and (not isinstance(tap, int) or tap < 0):
            raise _damaged(path, f"tap must be a unit index, got {tap!r}")
        try:
            prep = Preprocessing.from_dict(data["preprocessing"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _damaged(path, f"preprocessing is malformed ({exc})") from None
        plugin = data.get("plugin") or {}
        digest = data.get("weights_sha256")
        if data["model_file"] == HEAD and not (isinstance(data.get("weights"), str) and isinstance(digest, str)
                                               and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise _damaged(path, f"a head-only run ({HEAD}) needs its backbone's weights tag and weights_sha256")
        return cls(
            framework=data["framework"], backbone=data["backbone"], input_size=(size[0], size[1]),
            classes=list(data["classes"]), output=data["output"], preprocessing=prep, model_file=data["model_file"],
            head=dict(data["head"]), tap=tap, weights=data.get("weights"), strategy=str(data.get("strategy", "")),
            plugin={str(k): str(v) for k, v in plugin.items()} if isinstance(plugin, dict) else {},
            tlzoo_version=str(data.get("tlzoo_version", "")), weights_sha256=digest if isinstance(digest, str) else None,
            format_version=version,
            thresholds=[float(t) for t in thresholds or []] if data["output"] == "sigmoid" else None,
        )  # fmt: skip


class RunFiles:
    """The files of one run directory: where each is, and how it is written and read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def classifier(self) -> Path:
        return self.path / CLASSIFIER

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def state(self, suffix: str) -> Path:
        return self.path / f"{STATE_STEM}{suffix}"

    def finished(self) -> bool:
        return self.metrics.is_file() or self.classifier.is_file()

    # ------------------------------------------------------------ writing (rank 0 of a training)

    def write_meta(self, meta: ClassifierMeta) -> None:
        from ..files import atomic_write_json

        atomic_write_json(self.classifier, meta.to_dict())

    def write_json(self, name: str, value: Any) -> None:
        from ..files import atomic_write_json

        atomic_write_json(self.path / name, value)

    def write_head(self, head: HeadParams) -> None:
        """The head's dense layers as plain arrays (``head.npz``)."""
        import numpy as np

        from ..files import atomic_write

        arrays = {f"{kind}{i}": np.asarray(a, np.float32) for kind, group in (("w", head.weights), ("b", head.biases))
                  for i, a in enumerate(group)}  # fmt: skip

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]

        atomic_write(self.path / HEAD, write)

    def write_labels(self, classes: list[str]) -> None:
        self.write_json(LABELS, classes)

    def write_split(self, rows: list[tuple[str, str, str]], digests: Mapping[str, str] | None = None,
                    multilabel: bool = False) -> None:  # fmt: skip
        """``split.csv``: each file's path, label and subset, with what ``--resume`` checks before it trains on the
        file again: its size, and the sha256 of its bytes where the run read it (``digests``). A multi-label
        run's column is ``labels``, each image's ``;``-joined."""
        from ..files import atomic_write_text
        from ..images.folders import raw_bytes, shown

        digests = digests or {}
        buf = io.StringIO()
        writer = csv.writer(buf)
        # path_bytes: a name that is not UTF-8, percent-encoded (path shows it with backslash escapes); the file
        # stays UTF-8 and --resume reads the same bytes back
        writer.writerow(["path", "labels" if multilabel else "label", "subset", "bytes", "sha256", "path_bytes"])
        writer.writerows((shown(path), label, subset, _size(path), digests.get(path, ""), raw_bytes(path))
                         for path, label, subset in rows)  # fmt: skip
        atomic_write_text(self.path / SPLIT, buf.getvalue())

    def write_history(self, history: list[dict[str, Any]]) -> None:
        from ..files import atomic_write_text

        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.path / HISTORY, buf.getvalue())

    # ------------------------------------------------------------ reading

    def read_meta(self) -> ClassifierMeta:
        if not self.classifier.is_file():
            raise UsageError(f"{self.path} has no trained classifier ({CLASSIFIER}); train it first or finish it with --resume")
        try:
            data = json.loads(self.classifier.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{self.classifier} is not valid JSON ({exc}); the run's files were edited or are corrupt") from None
        return ClassifierMeta.from_dict(data, self.classifier)

    def read_head(self, meta: ClassifierMeta) -> HeadParams:
        """``head.npz``, checked: dense layers that chain, end in one output per class, and hold finite numbers."""
        import numpy as np

        from ..heads import HeadParams

        path = self.path / HEAD
        try:
            with np.load(path, allow_pickle=False) as data:
                n = len([k for k in data.files if k.startswith("w")])
                weights = [np.array(data[f"w{i}"], np.float32) for i in range(n)]
                biases = [np.array(data[f"b{i}"], np.float32) for i in range(n)]
        except FileNotFoundError:
            raise UsageError(f"{self.path} has no {HEAD}; the run did not finish") from None
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise _damaged(path, f"not a readable head ({type(exc).__name__})") from None
        ok = n > 0 and all(w.ndim == 2 and b.shape == (w.shape[1],) for w, b in zip(weights, biases))
        ok = ok and all(a.shape[1] == b.shape[0] for a, b in zip(weights, weights[1:]))
        if not ok or weights[-1].shape[1] != len(meta.classes) or not all(np.isfinite(a).all() for a in weights + biases):
            raise _damaged(path, f"its layers do not form a head with {len(meta.classes)} outputs")
        return HeadParams(weights, biases, output=meta.output, dropout=float(meta.head.get("dropout", 0.0)))

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{self.path} has no {name}; the run did not finish") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not valid JSON ({exc}); the run's files were edited or are corrupt") from None

    def read_history(self) -> list[dict[str, str]]:
        path = self.path / HISTORY
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def read_split(self, subset: str | None, classes: list[str]) -> list[dict[str, str]]:
        """The rows of one subset of ``split.csv`` (None: all of them), checked against the run's classes."""
        from ..images.folders import from_raw

        path = self.path / SPLIT
        if not path.is_file():
            raise UsageError(f"{self.path} has no {SPLIT} to check against")
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                multilabel = "labels" in (reader.fieldnames or [])
                if not {"path", "labels" if multilabel else "label", "subset"} <= set(reader.fieldnames or []):
                    raise ValueError(f"columns {reader.fieldnames}, expected path,label,subset")
                rows = [r for r in reader if subset is None or r["subset"] == subset]
            for r in rows:
                if r.get("path_bytes"):  # a name that is not UTF-8, byte for byte
                    r["path"] = from_raw(r["path_bytes"])
                if multilabel:
                    r["label"] = r["labels"]
            names = {n for r in rows for n in r["label"].split(";") if n} if multilabel else {r["label"] for r in rows}
            unknown = sorted(names - set(classes))
            if unknown or any(not r["path"] for r in rows):
                raise ValueError(f"labels {unknown} are not the run's classes" if unknown else "empty paths")
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            raise UsageError(f"{path} is damaged ({exc}); the run's files were edited or are corrupt") from None
        return rows


def split_labels(rows: list[dict[str, str]], classes: list[str]) -> Any:
    """The labels of :meth:`RunFiles.read_split`'s rows: class indices, or a multi-label run's 0/1 matrix."""
    import numpy as np

    index = {c: i for i, c in enumerate(classes)}
    if rows and "labels" in rows[0]:
        matrix = np.zeros((len(rows), len(classes)), np.uint8)
        for i, r in enumerate(rows):
            matrix[i, [index[n] for n in r["labels"].split(";") if n]] = 1
        return matrix
    return np.asarray([index[r["label"]] for r in rows], np.int64)


def _size(path: str) -> str:
    try:
        return str(os.stat(path).st_size)
    except OSError:
        return ""
