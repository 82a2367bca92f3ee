"""Feature engines: what runs a frozen backbone when feature-extract computes its features.

``framework`` is the backbone's own framework (the adapter's feature model). Plugins add others with
``register_feature_engines`` (tlzoo's ONNX plugin adds ``onnxruntime``: a checked, cached ONNX export of
the frozen backbone). ``auto`` (the default) measures on the run's own batches and keeps the fastest
(:class:`Auto`). Every engine maps a batch of preprocessed NHWC float32 images to pooled features; the
framework's own (and ``auto``) take the RGB uint8 batch instead (``takes_uint8``) and normalize it where the
model runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .backbone import Backbone
    from .engine_memory import Remembered
    from .specs import Preprocessing

FRAMEWORK = "framework"
AUTO = "auto"

# An engine whose one-off preparation (an export, say) is not done yet is tried by ``auto`` only when the
# framework would take at least this long on the images left: a backbone's ONNX export and check costs a few
# seconds (7 s for MobileNetV2 at 224 px on 2 cores) and onnxruntime runs ~1.1x the torch backbone (folded, as a
# oneDNN graph) there, so it pays from about a minute of extraction.
PREPARE_FROM_SECONDS = 60.0
SAMPLES = 3  # timed batches per engine, taken in turn so that a machine slowing down slows both
# Measuring one engine takes 3 + 2 * SAMPLES batches (warm-ups included); a job of fewer than twice that runs on
# the framework alone: too little would be left to win.
MIN_BATCHES = 2 * (3 + 2 * SAMPLES)

Runner = Callable[[np.ndarray], np.ndarray]


def names() -> list[str]:
    """Every engine ``--feature-engine`` accepts: auto, the framework's own, then the plugins'."""
    from .registry import get_registry

    return [AUTO, FRAMEWORK, *sorted(get_registry().feature_engines)]


def check(name: str) -> None:
    """Refuse an engine no installed plugin provides, before any image is decoded."""
    if name not in (FRAMEWORK, AUTO):
        from .registry import get_registry

        get_registry().feature_engine(name)


def runner(backbone: Backbone, tap: int | None, name: str, cache_dir: Path, device: str | None = None, *,
           images: int = 0, batch_size: int = 32, remembered: Remembered | None = None,
           loaded_seconds: float = 0.0, remembers: bool = False) -> Runner:  # fmt: skip
    """The function that computes ``backbone``'s features (at unit ``tap``) with engine ``name``; the
    framework's own runs on ``device`` (as its training engine names it), a plugin's engine chooses its own.
    ``auto`` is told how many ``images`` are left to extract, in batches of ``batch_size``, what an earlier
    run measured (``remembered``: the framework won there, so nothing is measured again) and how long this
    process took to import the framework and build the backbone (``loaded_seconds``); ``remembers``: whether
    the run keeps auto's choice for later runs (:mod:`tlzoo.engine_memory`)."""
    if name == AUTO:
        return Auto(backbone, tap, cache_dir, device, images=images, batch_size=batch_size, remembered=remembered,
                    loaded_seconds=loaded_seconds, remembers=remembers)  # fmt: skip
    if name == FRAMEWORK:
        model = backbone.inference_model(tap, device)
        return Raw(lambda images: backbone.run_images(model, images), getattr(backbone, "takes_device_batches", False))
    from .plugins import load_object
    from .registry import get_registry

    spec = get_registry().feature_engine(name)
    make = load_object(spec.engine, f"feature engine {spec.name}")
    run: Runner = make(backbone, tap, cache_dir)
    return run


def prepared(backbone: Backbone, tap: int | None, name: str, cache_dir: Path) -> bool:
    """Whether engine ``name`` has done its one-off preparation for this backbone (False when it cannot say)."""
    from .plugins import load_object
    from .registry import get_registry

    spec = get_registry().feature_engine(name)
    if not spec.prepared:
        return False
    probe = load_object(spec.prepared, f"feature engine {spec.name}")
    return bool(probe(backbone, tap, cache_dir))


class Raw:
    """A runner given RGB uint8 batches as decoded (``takes_uint8``): it normalizes them itself."""

    takes_uint8 = True

    def __init__(self, run: Runner, takes_device_batches: bool = False) -> None:
        self.run = run
        self.takes_device_batches = takes_device_batches  # a batch a GPU decoder left on the device, as it is

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)


@dataclass
class Choice:
    """What ``auto`` chose and on what evidence, for the run's record and its info line."""

    engine: str = FRAMEWORK
    images_per_second: dict[str, float] = field(default_factory=dict)  # median over the timed batches
    prepare_seconds: dict[str, float] = field(default_factory=dict)
    passed_over: dict[str, str] = field(default_factory=dict)  # engine -> why it was not measured
    remembered: Remembered | None = None  # taken from an earlier run's measurement, not measured on this one
    # What starting each measured engine costs a new process: the framework's import, build and graph; an
    # engine that reopens without the framework, its opening; any other, the framework's and its own.
    start_seconds: dict[str, float] = field(default_factory=dict)
    next_run: str | None = None  # what a later run of this job starts with, when it differs from ``engine``

    @property
    def measured(self) -> bool:
        """Whether this run timed more than one engine (a choice worth remembering)."""
        return self.remembered is None and len(self.images_per_second) > 1

    def record(self) -> dict[str, Any]:
        return {"engine": self.engine, "images_per_second": {k: round(v, 1) for k, v in self.images_per_second.items()},
                "prepare_seconds": {k: round(v, 2) for k, v in self.prepare_seconds.items()},
                "passed_over": dict(self.passed_over),
                **({"start_seconds": {k: round(v, 2) for k, v in self.start_seconds.items()}} if self.start_seconds else {}),
                **({"next_run": self.next_run} if self.next_run else {}),
                **({"remembered": {"measured": self.remembered.measured,
                                   "images_per_second": dict(self.remembered.images_per_second)}}
                   if self.remembered is not None else {})}  # fmt: skip

    def line(self) -> str | None:
        """One line for the user, the engine kept and the evidence; None when no other engine was considered
        (none installed, or a job too small to measure on)."""
        rates = self.images_per_second
        if self.remembered is not None:
            evidence = self.remembered.evidence()
            if self.engine != FRAMEWORK:
                evidence += f"; the {FRAMEWORK} was not loaded"
            evidence += "; " + "; ".join(f"{n} {why}" for n, why in self.passed_over.items()) if self.passed_over else ""
        elif len(rates) > 1:
            others = ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items() if name != self.engine)
            evidence = f"{rates[self.engine]:.0f} images/s against {others}, measured on this run's batches"
            evidence += "".join(f"; {n} took {s:.1f} s to prepare" for n, s in self.prepare_seconds.items())
            if self.next_run:
                start = self.start_seconds
                evidence += (f"; a later run of this job starts with {self.next_run}, which opens in "
                             f"{start[self.next_run]:.1f} s against the {self.engine}'s {start[self.engine]:.1f} s")  # fmt: skip
        elif self.passed_over:
            evidence = "; ".join(f"{n} {why}" for n, why in self.passed_over.items())
        else:
            return None
        return f"feature engine: {self.engine} (auto: {evidence})"


class Auto:
    """``--feature-engine auto``: the framework's engine first; after a warm-up batch, each other engine worth
    trying is prepared and it and the framework are timed on the run's next batches, in turn; the faster
    one computes the rest. Every batch's features are kept, whichever engine computed them (each engine is
    checked against the framework's features), so measuring costs nothing but the engines' preparation.

    An engine is worth trying when its preparation is already done (its cached export, say), or when the
    framework would take :data:`PREPARE_FROM_SECONDS` or more on the images left. A job of fewer than
    :data:`MIN_BATCHES` batches runs on the framework alone. An engine that cannot run this backbone is
    passed over with its reason, never an error.

    What a later run of the same job should start with is worked out too (``remembered_engine``, kept by
    :mod:`tlzoo.engine_memory`): not always the fastest per image, since an engine that reopens without the
    framework spares that run the framework's import and build, which this run timed.

    It takes the RGB uint8 batches (``takes_uint8``): the framework's engine normalizes them where its model
    runs, every other engine is given them normalized on the host (part of its timed cost).
    """

    takes_uint8 = True

    def __init__(self, backbone: Backbone, tap: int | None, cache_dir: Path, device: str | None, *, images: int,
                 batch_size: int, remembered: Remembered | None = None, loaded_seconds: float = 0.0,
                 remembers: bool = False) -> None:  # fmt: skip
        from .registry import get_registry

        self.backbone, self.tap, self.cache_dir, self.remembers = backbone, tap, cache_dir, remembers
        t0 = time.perf_counter()
        self.framework = runner(backbone, tap, FRAMEWORK, cache_dir, device)
        self.framework_start = loaded_seconds + time.perf_counter() - t0
        self.left = self.images = images
        self.candidates = sorted(get_registry().feature_engines)
        self.choice = Choice()
        self.opened: dict[str, Any] = {}  # each engine as its plugin made it (its ``entry`` reopens it, if it has one)
        self.next_entry: dict[str, Any] | None = None
        self.done = len(self.candidates) == 0 or images < MIN_BATCHES * batch_size
        if remembered is not None and remembered.engine == FRAMEWORK:  # an earlier run measured it: no need again
            self.choice.remembered, self.done = remembered, True
        self.calls = 0
        self.runners: dict[str, Runner] = {FRAMEWORK: self.framework}
        self.times: dict[str, list[float]] = {FRAMEWORK: []}
        self.queue: list[tuple[str, bool]] = []  # (engine, timed) for the next batches

    @property
    def takes_device_batches(self) -> bool:
        """Once settled on the framework's engine: a batch left on the device goes to it as it is."""
        return self.done and self.choice.engine == FRAMEWORK and getattr(self.framework, "takes_device_batches", False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.done:
            return self.runners[self.choice.engine](batch)
        if self.calls == 1:  # the warm-up batch: first calls allocate, compile, tune
            out = self.framework(batch)
        elif self.calls == 2:
            out = self._timed(FRAMEWORK, batch)
            self._plan()
        else:
            name, timed = self.queue.pop(0)
            out = self._timed(name, batch) if timed else self.runners[name](batch)
        self.left -= len(batch)
        if self.calls >= 2 and not self.queue:
            self._decide()
        return out

    def _timed(self, name: str, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.asarray(self.runners[name](batch))  # read here: a batch still on its way has not been timed
        self.times[name].append((time.perf_counter() - t0) / max(len(batch), 1))
        return out

    def _plan(self) -> None:
        """Prepare the engines worth trying; queue a warm-up for each, then timed batches in turn."""
        seconds_left = self.times[FRAMEWORK][0] * self.left
        for name in self.candidates:
            ready = _safely(lambda: prepared(self.backbone, self.tap, name, self.cache_dir))
            if ready is not True and seconds_left < PREPARE_FROM_SECONDS:
                self.choice.passed_over[name] = (
                    f"is not prepared for this backbone, and the {self.left} images left take the framework about "
                    f"{seconds_left:.0f} s here, under the {PREPARE_FROM_SECONDS:.0f} s its preparation pays from")  # fmt: skip
                continue
            t0 = time.perf_counter()
            made = _safely(lambda: runner(self.backbone, self.tap, name, self.cache_dir))
            if isinstance(made, str):
                self.choice.passed_over[name] = f"cannot run: {made}"
                continue
            self.opened[name] = made
            if not getattr(made, "takes_uint8", False):
                made = self._normalizing(made)
            self.choice.prepare_seconds[name] = time.perf_counter() - t0
            self.runners[name], self.times[name] = made, []
            self.queue.append((name, False))
        measured = [n for n in self.runners if n != FRAMEWORK]
        for _ in range(SAMPLES):
            self.queue += [(name, True) for name in measured] + [(FRAMEWORK, True)]
        if not measured:
            self.queue = []

    def _normalizing(self, run: Runner) -> Raw:
        """``run`` (which takes normalized batches) given the uint8 batches this engine takes."""
        return Raw(lambda images: run(self.backbone.preprocess(images)))

    def _decide(self) -> None:
        """Keep the fastest engine for the rest of this run (the framework is loaded already), and work out what
        a later run of the same job should start with: the engine that finishes it first from a new process,
        its start included (:meth:`_start_seconds`)."""
        rates = {n: 1.0 / float(np.median(t)) for n, t in self.times.items() if t}
        self.choice.images_per_second = rates
        self.choice.engine = max(rates, key=lambda n: (rates[n], n == FRAMEWORK))
        if len(rates) > 1:
            start = self.choice.start_seconds = self._start_seconds(rates)
            later = min(rates, key=lambda n: (start[n] + self.images / rates[n], n != FRAMEWORK))
            if later != self.choice.engine:
                self.choice.next_run = later
                if self.remembers:  # taken now (an export may be hashed for it): the engine is freed below
                    entry = getattr(self.opened.get(later), "entry", None)
                    self.next_entry = entry if isinstance(entry, dict) else None
        for name in list(self.runners):
            if name != self.choice.engine:
                del self.runners[name]  # free the engines not kept
                self.opened.pop(name, None)
        self.done = True

    def _start_seconds(self, rates: dict[str, float]) -> dict[str, float]:
        from .registry import get_registry

        engines = get_registry().feature_engines
        start = {FRAMEWORK: self.framework_start}
        for name in rates:
            if name != FRAMEWORK:
                own = self.choice.prepare_seconds.get(name, 0.0)
                start[name] = own if engines[name].reopen else self.framework_start + own
        return start

    def entry(self) -> dict[str, Any] | None:
        """What reopens the engine a later run starts with without the framework (``FeatureEngineSpec.reopen``),
        if it offers that."""
        if self.choice.next_run is not None:
            return self.next_entry
        entry = getattr(self.opened.get(self.choice.engine), "entry", None)
        return entry if isinstance(entry, dict) else None

    @property
    def remembered_engine(self) -> str:
        """The engine a later run of this job starts with."""
        return self.choice.next_run or self.choice.engine


class Reopened:
    """auto's remembered engine, reopened from its entry without the backbone (``FeatureEngineSpec.reopen``):
    the framework is neither imported nor built. It takes uint8 batches and normalizes them on the host."""

    takes_uint8 = True

    def __init__(self, run: Runner, prep: Preprocessing, choice: Choice) -> None:
        self.run, self.prep, self.choice = run, prep, choice

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from .images.normalize import normalize

        return self.run(normalize(images, self.prep))


def reopen(remembered: Remembered, prep: Preprocessing, cache_dir: Path) -> Reopened | str:
    """The remembered engine opened from its entry, or why it cannot be (no entry, an engine that cannot
    reopen, a file changed or gone): auto then builds the backbone and measures again."""
    from .plugins import load_object
    from .registry import get_registry

    spec = get_registry().feature_engines.get(remembered.engine)
    if spec is None:
        return f"{remembered.engine} is no longer installed"
    if not spec.reopen or remembered.entry is None:
        return f"{remembered.engine} cannot be opened without the framework"
    entry = remembered.entry
    made = _safely(lambda: load_object(spec.reopen, f"feature engine {spec.name}")(entry, cache_dir))
    if isinstance(made, str):
        return made
    return Reopened(made, prep, Choice(engine=remembered.engine, remembered=remembered))


def _safely(call: Callable[[], Any]) -> Any:
    """``call()``, or why it failed as a short string: auto passes over an engine that cannot run, never stops."""
    from .errors import UsageError, one_line

    try:
        return call()
    except UsageError as exc:
        return str(exc)
    except Exception as exc:  # a plugin's engine is third-party code: report it, run on without it
        return f"failed ({type(exc).__name__}: {one_line(exc, 160)})"
