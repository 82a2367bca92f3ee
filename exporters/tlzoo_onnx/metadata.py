"""The metadata a tlzoo ONNX file carries, written by the exporter and read by the predictor.

Every value is a string in the model's ``metadata_props``; the JSON-valued ones
are checked (type, bounds) when read, because an ONNX file is untrusted input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlzoo.errors import UsageError
from tlzoo.specs import Preprocessing

VERSION = "tlzoo.version"
LABELS = "tlzoo.labels"
BACKBONE = "tlzoo.backbone"
FRAMEWORK = "tlzoo.framework"
STRATEGY = "tlzoo.strategy"
INPUT_SIZE = "tlzoo.input_size"
LAYOUT = "tlzoo.layout"
INPUT = "tlzoo.input"
RAW_INPUT = "tlzoo.raw_input"
PREPROCESSING = "tlzoo.preprocessing"
OUTPUT = "tlzoo.output"
VARIANT = "tlzoo.variant"
THRESHOLDS = "tlzoo.thresholds"  # multi-label exports: each label's threshold (JSON list); absent for single-label
# Exported files larger than this on a side are refused before anything is allocated.
MAX_INPUT_SIDE = 4096


@dataclass(frozen=True)
class ExportMetadata:
    labels: list[str]
    input_size: tuple[int, int]
    raw_input: bool
    layout: str
    preprocessing: Preprocessing
    thresholds: list[float] | None = None  # multi-label: the outputs are independent per-label probabilities


def build(*, version: str, labels: list[str], backbone: str, framework: str, strategy: str, input_size: tuple[int, int],
          layout: str, raw_input: bool, preprocessing: Preprocessing, variant: str,
          thresholds: list[float] | None = None) -> dict[str, str]:  # fmt: skip
    h, w = input_size
    described = "NHWC uint8 RGB 0..255, any size (resized and normalized in the graph)" if raw_input else (
        f"{layout} float32, normalized"
    )
    return {
        VERSION: version, LABELS: json.dumps(labels), BACKBONE: backbone, FRAMEWORK: framework, STRATEGY: strategy,
        INPUT_SIZE: json.dumps([h, w]), LAYOUT: "NHWC" if raw_input else layout, INPUT: described,
        RAW_INPUT: json.dumps(bool(raw_input)), PREPROCESSING: json.dumps(preprocessing.to_dict()),
        OUTPUT: "probabilities" if thresholds is None else "label probabilities (independent, calibrated)",
        VARIANT: variant, **({THRESHOLDS: json.dumps([float(t) for t in thresholds])} if thresholds is not None else {}),
    }  # fmt: skip


def read(meta: dict[str, str], path: Path) -> ExportMetadata:
    """The metadata that decides how inputs are built, every value checked before it is used."""
    if LABELS not in meta:
        raise UsageError(f"{path} is an ONNX model but not one tlzoo exported (no {LABELS} metadata)")

    def bad(key: str, why: str) -> UsageError:
        return UsageError(f"{path}: metadata {key} {why}; re-export the model with tlzoo export")

    def value(key: str) -> Any:
        if key not in meta:
            raise bad(key, "is missing")
        try:
            return json.loads(meta[key])
        except ValueError:
            if key == LAYOUT:
                return meta[key]
            raise bad(key, "is not valid JSON") from None

    labels = value(LABELS)
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise bad(LABELS, "must be a non-empty list of strings")
    size = value(INPUT_SIZE)
    if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
            or not all(1 <= v <= MAX_INPUT_SIDE for v in size)):  # fmt: skip
        raise bad(INPUT_SIZE, f"must be [height, width] with sides 1..{MAX_INPUT_SIDE}, got {meta[INPUT_SIZE][:60]}")
    raw = value(RAW_INPUT)
    if not isinstance(raw, bool):
        raise bad(RAW_INPUT, "must be true or false")
    layout = value(LAYOUT)
    if layout not in ("NCHW", "NHWC"):
        raise bad(LAYOUT, "must be NCHW or NHWC")
    try:
        prep = Preprocessing.from_dict(value(PREPROCESSING))
        if len(prep.mean) != 3 or len(prep.std) != 3 or not all(float(v) != 0 for v in prep.std):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise bad(PREPROCESSING, "is not a preprocessing description") from None
    thresholds = value(THRESHOLDS) if THRESHOLDS in meta else None
    if thresholds is not None and not (
            isinstance(thresholds, list) and len(thresholds) == len(labels)
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 for t in thresholds)):
        raise bad(THRESHOLDS, f"must be one threshold in (0, 1) per label ({len(labels)})")
    return ExportMetadata(labels=labels, input_size=(size[0], size[1]), raw_input=raw, layout=layout, preprocessing=prep,
                          thresholds=[float(t) for t in thresholds] if thresholds is not None else None)  # fmt: skip
