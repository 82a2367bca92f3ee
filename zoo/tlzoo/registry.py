"""The backbone and exporter registry: every spec the plugins registered, by id.

Names resolve like this: ``torch/vgg16`` and ``keras/vgg16`` are exact;
a short name (``vgg16``) means the torch backbone when both frameworks have
one (``framework=`` picks the other), or the only one there is.
"""

from __future__ import annotations

import builtins
import difflib
import fnmatch
from dataclasses import dataclass, field

from .errors import UnknownBackboneError, UsageError
from .plugins import PluginStatus, get_host
from .specs import FRAMEWORKS, BackboneSpec, ExporterSpec

DEFAULT_FRAMEWORK = "torch"


@dataclass
class Registry:
    backbones: dict[str, BackboneSpec] = field(default_factory=dict)
    exporters: dict[str, ExporterSpec] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def list(self, framework: str | None = None, pattern: str | None = None) -> builtins.list[BackboneSpec]:
        """Backbones sorted by name then framework, filtered like timm's ``list_models``."""
        specs = sorted(self.backbones.values(), key=lambda s: (s.name, FRAMEWORKS.index(s.framework)))
        if framework:
            specs = [s for s in specs if s.framework == framework]
        if pattern:
            specs = [
                s for s in specs if fnmatch.fnmatch(s.name, pattern) or fnmatch.fnmatch(s.id, pattern)
            ]
        return specs

    def resolve(self, name: str, framework: str | None = None) -> BackboneSpec:
        if framework is not None and framework not in FRAMEWORKS:
            raise UsageError(f"unknown framework {framework!r}; choose one of: {', '.join(FRAMEWORKS)}")
        key = name.strip()
        if "/" in key:
            prefix, _, short = key.partition("/")
            if framework and prefix != framework:
                raise UsageError(f"{name!r} is a {prefix} backbone but --framework is {framework}")
            framework, key = prefix, short
        candidates = [s for s in self.backbones.values() if s.name == key]
        if framework:
            candidates = [s for s in candidates if s.framework == framework]
        if candidates:
            candidates.sort(key=lambda s: s.framework != DEFAULT_FRAMEWORK)
            return candidates[0]
        raise UnknownBackboneError(name, self.suggest(name))

    def suggest(self, name: str) -> builtins.list[str]:
        words = sorted({s.name for s in self.backbones.values()} | set(self.backbones))
        return difflib.get_close_matches(name, words, n=3, cutoff=0.6)

    def exporter(self, name: str) -> ExporterSpec:
        if name in self.exporters:
            return self.exporters[name]
        close = difflib.get_close_matches(name, list(self.exporters), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(self.exporters)) or "none installed"
        raise UsageError(f"unknown export format {name!r}.{hint} Known formats: {known}.")


_registry: Registry | None = None


def get_registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = _build()
    return _registry


def reset() -> None:
    global _registry
    _registry = None


def _build() -> Registry:
    host = get_host()
    reg = Registry()
    for status, specs in host.call_each("register_backbones"):
        for spec in specs:
            if not isinstance(spec, BackboneSpec):
                status.errors.append(f"register_backbones() returned {type(spec).__name__}, not BackboneSpec")
                continue
            if _claim(reg.owners, "backbone " + spec.id, status):
                reg.backbones[spec.id] = spec
                status.backbones.append(spec.id)
    for status, specs in host.call_each("register_exporters"):
        for spec in specs:
            if not isinstance(spec, ExporterSpec):
                status.errors.append(f"register_exporters() returned {type(spec).__name__}, not ExporterSpec")
                continue
            if _claim(reg.owners, "exporter " + spec.name, status):
                reg.exporters[spec.name] = spec
                status.exporters.append(spec.name)
    return reg


def _claim(owners: dict[str, str], key: str, status: PluginStatus) -> bool:
    owner = owners.get(key)
    if owner is None:
        owners[key] = status.name
        return True
    status.errors.append(
        f"{key} is registered by both plugin {owner!r} and plugin {status.name!r}; keeping {owner!r}'s"
    )
    return False
