"""Pretrained weights: where the frameworks cache them, hash checks, offline errors.

tlzoo uses the frameworks' own caches, so a file torchvision or Keras already
downloaded is found, and a file tlzoo puts there is found by them. Each
framework plugin says where its cache is (``FrameworkSpec.weights_cache``,
e.g. ``$TORCH_HOME/hub/checkpoints`` or ``$KERAS_HOME/models``) without
importing the framework, so ``tlzoo list-backbones`` can say which weights are
on disk and stay fast. Downloads go through the framework's adapter. Every
file is hash-checked before it is loaded.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cachedir import tlzoo_cache
from .errors import UsageError, WeightsError, one_line
from .files import atomic_copy
from .specs import BackboneSpec, WeightsSpec

ENV_OFFLINE = "TLZOO_OFFLINE"


def cache_dir(framework: str) -> Path:
    """The folder where ``framework`` caches pretrained weights."""
    from .adapters import weights_cache_dir

    return weights_cache_dir(framework)


def cached_path(spec: BackboneSpec, weights: WeightsSpec) -> Path:
    return cache_dir(spec.framework) / weights.file_name


def is_cached(spec: BackboneSpec, weights: WeightsSpec) -> bool:
    return cached_path(spec, weights).is_file()


def file_digest(path: Path, algorithm: str) -> str:
    """The file's digest; read once per process while its size and modification time stay the same (a run
    checks the published hash and records the sha256 of the same file)."""
    st = os.stat(path)
    return _digest(os.path.realpath(path), algorithm, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest(path: str, algorithm: str, size: int, mtime_ns: int) -> str:
    from .files import hash_file  # numpy comes with tlzoo.data: not on `tlzoo list-backbones`' path

    return hash_file(path, algorithm)


def hash_matches(path: Path, weights: WeightsSpec) -> bool:
    expected = weights.file_hash.lower()
    actual = file_digest(path, weights.hash_algorithm)
    if weights.hash_algorithm == "sha256" and len(expected) < 64:
        return len(expected) >= 8 and actual.startswith(expected)
    return actual == expected


def verify(path: Path, weights: WeightsSpec) -> None:
    if not weights.file_hash:
        return  # nothing published to check against (Keras' MobileNetV2); callers report it unverified
    if not hash_matches(path, weights):
        raise WeightsError(
            f"{path} does not match the {weights.hash_algorithm} hash {weights.file_hash!r} published for "
            f"{weights.tag}; the file is corrupt or not the one it is named after. Delete it and fetch it again."
        )


@dataclass(frozen=True)
class ResolvedWeights:
    """A local file that is safe to load, and what it is. ``verified``: it matches a published hash;
    ``recorded``: nothing was published, and it matches the sha256 recorded when it was first used."""

    path: Path
    tag: str
    verified: bool
    recorded: bool = False


# Keras says weights="imagenet", torchvision weights="DEFAULT": both mean the backbone's best
# ImageNet weights; tlzoo prefers ones already on disk among them.
AUTO_TAGS = ("auto", "default", "imagenet", "pretrained")


def named_weights(name: str, weights: str, option: str = "--weights") -> str:
    """The weights to use when the backbone is named ``name``: its tag where it is named ``NAME.TAG`` (as timm and
    ``tlzoo weights import`` write it) and ``weights`` asks for the default ones, else ``weights``. Refused in
    one line where ``weights`` names other weights."""
    from .registry import split_tag

    tag = split_tag(name)[1]
    if tag is None:
        return weights
    if weights.strip().lower() not in ("", *AUTO_TAGS, tag.lower()):
        raise UsageError(f"{name} names the weights {tag} and {option} {weights} other ones: give one of them")
    return tag


def choose(spec: BackboneSpec, tag: str) -> WeightsSpec:
    """The weights named by ``tag``; ``auto``/``default`` prefers what is already on disk."""
    if not spec.weights:
        raise UsageError(f"{spec.id} has no pretrained weights; use --weights none (random initialisation) or "
                         f"--weights FILE (your own)")  # fmt: skip
    if tag.lower() in AUTO_TAGS:
        on_disk = [w for w in spec.weights if is_cached(spec, w)]
        return on_disk[0] if on_disk else spec.weights[0]
    found = spec.weights_by_tag(tag)
    if found is None:
        tags = ", ".join(w.tag for w in spec.weights)
        raise UsageError(f"{spec.id} has no weights {tag!r}; available: auto, {tags}, or a file path")
    return found


def published(spec: BackboneSpec, weights: str | None) -> WeightsSpec | None:
    """The published weights ``--weights`` names, found without reading any file (a file of the user's own,
    random initialisation or an unknown tag: the backbone's default weights, whose transform it keeps)."""
    if weights is not None and weights.lower() not in ("none", "random", "scratch", "false"):
        candidate = Path(weights).expanduser()
        if candidate.exists() or os.sep in weights or candidate.suffix in _WEIGHT_SUFFIXES:
            return next((w for w in spec.weights if w.file_name == candidate.name), spec.default_weights)
        try:
            return choose(spec, weights)
        except UsageError:
            pass
    return spec.default_weights


def resolve(spec: BackboneSpec, weights: str | None) -> ResolvedWeights | None:
    """Turn ``--weights`` (None, a tag, ``auto`` or a file path) into a verified local file."""
    if weights is None or weights.lower() in ("none", "random", "scratch", "false"):
        return None
    candidate = Path(weights).expanduser()
    if candidate.exists() or os.sep in weights or candidate.suffix in _WEIGHT_SUFFIXES:
        return _local_file(spec, candidate)
    chosen = choose(spec, weights)
    path = cached_path(spec, chosen)
    if not path.is_file():
        _download(spec, chosen, path)
    verify(path, chosen)
    if not chosen.file_hash:
        check_recorded(spec, chosen, path)
    return ResolvedWeights(path=path, tag=chosen.tag, verified=bool(chosen.file_hash), recorded=not chosen.file_hash)


RECORDED = "sha256-recorded.json"


def recorded_file() -> Path:
    """Where tlzoo keeps the sha256 of weights files that came without a published hash."""
    return tlzoo_cache() / "weights" / RECORDED


def recorded_sha256(spec: BackboneSpec, weights: WeightsSpec) -> str | None:
    return _records().get(_record_key(spec, weights))


def check_recorded(spec: BackboneSpec, weights: WeightsSpec, path: Path, *, record: bool = False) -> None:
    """Trust on first use, for weights published without a hash (timm's, some of Keras'): the file's sha256 is
    recorded the first time it is used (or whenever ``record``: a deliberate ``tlzoo weights import``) and must
    match from then on, so a file that changes on disk is never loaded silently."""
    from .files import atomic_write_json

    digest = file_digest(path, "sha256")
    records, key = _records(), _record_key(spec, weights)
    known = records.get(key)
    if known is not None and known != digest and not record:
        raise WeightsError(f"{path} is not the file {spec.id} {weights.tag} was first used with: its sha256 is "
                           f"{digest[:16]}..., recorded {known[:16]}... in {recorded_file()}. Delete it and fetch it "
                           f"again, or `tlzoo weights import FILE --backbone {spec.id}.{weights.tag}` to take the "
                           f"new file.")  # fmt: skip
    if known != digest:
        records[key] = digest
        atomic_write_json(recorded_file(), records)


def _record_key(spec: BackboneSpec, weights: WeightsSpec) -> str:
    return f"{spec.id}.{weights.tag}:{weights.file_name}"


def _records() -> dict[str, str]:
    import json

    try:
        data = json.loads(recorded_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


_WEIGHT_SUFFIXES = {".pth", ".pt", ".h5", ".keras", ".safetensors"}


def _local_file(spec: BackboneSpec, path: Path) -> ResolvedWeights:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    known = [w for w in spec.weights if w.file_name == path.name]
    if known:
        verify(path, known[0])
        return ResolvedWeights(path=path, tag=known[0].tag, verified=bool(known[0].file_hash))
    # A user's own file: loaded without code execution (weights_only / h5), but no published hash to check.
    return ResolvedWeights(path=path, tag=f"file:{path.name}", verified=False)


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def _download(spec: BackboneSpec, weights: WeightsSpec, dest: Path) -> None:
    how_to = (
        f"Put {weights.file_name} (from {weights.url}) in {dest.parent}, "
        f"or run `tlzoo weights import FILE_OR_FOLDER`."
    )
    from .adapters import adapter_for

    if adapter_for(spec.framework).find_local(weights, dest):
        verify(dest, weights)
        return
    if offline():
        raise WeightsError(
            f"pretrained weights {weights.tag} for {spec.id} are not on disk: expected {dest}. "
            f"Downloads are off ({ENV_OFFLINE} is set). {how_to} Or train with --weights none (random "
            f"initialisation){_on_disk_hint()}"
        )
    try:
        _fetch(spec.framework, weights, dest)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"pretrained weights {weights.tag} for {spec.id} are not on disk ({dest}) and could not be "
            f"downloaded ({type(exc).__name__}: {one_line(exc)}). {how_to}"
        ) from exc


def _on_disk_hint() -> str:
    from .registry import get_registry

    ready = [s.id for s in get_registry().list() if any(is_cached(s, w) for w in s.weights)]
    return f", or use a backbone whose weights are on disk: {', '.join(ready)}." if ready else "."


def preflight(spec: BackboneSpec, weights: str | None) -> None:
    """Fail before any data is loaded when the weights cannot be had: a missing file, or offline and not cached."""
    if weights is None or weights.lower() in ("none", "random", "scratch", "false"):
        return
    candidate = Path(weights).expanduser()
    if candidate.exists() or os.sep in weights or candidate.suffix in _WEIGHT_SUFFIXES:
        if not candidate.is_file():
            raise WeightsError(f"weights file {candidate} does not exist")
        return
    chosen = choose(spec, weights)
    path = cached_path(spec, chosen)
    if not path.is_file() and offline():
        _download(spec, chosen, path)  # raises the offline message


def _fetch(framework: str, weights: WeightsSpec, dest: Path) -> None:
    """Download with the framework's own function (its adapter's), into its own cache, checking the hash."""
    from .adapters import adapter_for

    dest.parent.mkdir(parents=True, exist_ok=True)
    adapter_for(framework).download(weights, dest)
    verify(dest, weights)


def import_files(sources: list[Path], specs: list[BackboneSpec]) -> list[tuple[Path, Path]]:
    """Copy known weight files (found by name, checked by hash) into the framework caches.

    ``sources`` may be files or folders (searched recursively). Returns
    ``(source, destination)`` pairs; raises if nothing known was found.
    """
    by_name: dict[str, list[tuple[BackboneSpec, WeightsSpec]]] = {}
    for spec in specs:
        for w in spec.weights:
            by_name.setdefault(w.file_name, []).append((spec, w))
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files.extend(p for p in sorted(source.rglob("*")) if p.is_file())
        elif source.is_file():
            files.append(source)
        else:
            raise UsageError(f"{source} does not exist")
    imported = []
    for file in files:
        for spec, w in by_name.get(file.name, [])[:1]:
            verify(file, w)
            dest = cached_path(spec, w)
            if not (dest.is_file() and hash_matches(dest, w)):
                atomic_copy(file, dest)
            imported.append((file, dest))
    if not imported:
        names = ", ".join(str(s) for s in sources)
        raise UsageError(f"no known pretrained weights file found in {names}")
    return imported


def import_for_backbone(source: Path, spec: BackboneSpec, tag: str | None,
                        check: Callable[[ResolvedWeights], object] | None = None) -> Path:  # fmt: skip
    """Make ``source`` the weights file of one of ``spec``'s tags (its default tag when None): checked
    against the published hash where there is one, put in place by the framework's adapter (which may convert
    it), and its sha256 recorded. ``check`` is given the converted file before it takes the place of the tag's
    file (``tlzoo weights import`` builds the backbone with it): a file it refuses leaves the earlier one as it
    was."""
    import os

    from .adapters import adapter_for
    from .files import temp_prefix

    if not source.is_file():
        raise UsageError(f"{source} is not a file")
    chosen = choose(spec, tag) if tag else spec.default_weights
    if chosen is None:
        raise UsageError(f"{spec.id} has no pretrained weights to import a file for")
    if chosen.file_hash:
        verify(source, chosen)
    dest = cached_path(spec, chosen)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f"{temp_prefix()}{dest.name}")  # reclaimed like any temporary if this process dies
    try:
        adapter_for(spec.framework).import_file(source, staged)
        if check is not None:
            try:
                check(ResolvedWeights(staged, chosen.tag, verified=bool(chosen.file_hash)))
            except WeightsError as exc:  # said of the user's file, not of the staged copy
                raise WeightsError(f"{str(exc).replace(str(staged), str(source))}; {dest.name} is unchanged") from None
        os.replace(staged, dest)
    finally:
        staged.unlink(missing_ok=True)
    if not chosen.file_hash:
        check_recorded(spec, chosen, dest, record=True)
    return dest
