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
from typing import Any

from .errors import UnknownBackboneError, UsageError
from .plugins import PluginStatus, get_host
from .specs import BackboneSpec, ExporterSpec

DEFAULT_FRAMEWORK = "torch"


@dataclass
class Registry:
    backbones: dict[str, BackboneSpec] = field(default_factory=dict)
    exporters: dict[str, ExporterSpec] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def list(self, framework: str | None = None, pattern: str | None = None) -> builtins.list[BackboneSpec]:
        """Backbones sorted by name then framework, filtered like timm's ``list_models``."""
        specs = sorted(self.backbones.values(), key=lambda s: (s.name, s.framework != DEFAULT_FRAMEWORK, s.framework))
        if framework:
            self.check_framework(framework)
            specs = [s for s in specs if s.framework == framework]
        if pattern:
            specs = [
                s for s in specs if fnmatch.fnmatch(s.name, pattern) or fnmatch.fnmatch(s.id, pattern)
            ]
        return specs

    def resolve(self, name: str, framework: str | None = None) -> BackboneSpec:
        if framework is not None:
            self.check_framework(framework)
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

    def frameworks(self) -> builtins.list[str]:
        """The frameworks of the registered backbones (plugins bring them; core keeps no list)."""
        return sorted({s.framework for s in self.backbones.values()}, key=lambda f: (f != DEFAULT_FRAMEWORK, f))

    def check_framework(self, framework: str) -> None:
        if framework not in self.frameworks():
            raise UsageError(f"unknown framework {framework!r}; the installed backbones are of: {', '.join(self.frameworks())}")

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
    _collect(host.call_each("register_backbones"), BackboneSpec, "backbone", reg.backbones, reg.owners)
    _collect(host.call_each("register_exporters"), ExporterSpec, "exporter", reg.exporters, reg.owners)
    return reg


def _collect(results: list[tuple[PluginStatus, list[Any]]], cls: type, kind: str, into: dict[str, Any],
             owners: dict[str, str]) -> None:  # fmt: skip
    """Keep each plugin's well-formed specs; record everything else as that plugin's error."""
    for status, specs in results:
        for spec in specs:
            if not isinstance(spec, cls):
                status.errors.append(f"register_{kind}s() returned {type(spec).__name__}, not {cls.__name__}")
                continue
            key = spec.id if isinstance(spec, BackboneSpec) else str(getattr(spec, "name"))
            if _claim(owners, f"{kind} {key}", status):
                into[key] = spec
                getattr(status, f"{kind}s").append(key)


def _claim(owners: dict[str, str], key: str, status: PluginStatus) -> bool:
    owner = owners.get(key)
    if owner is None:
        owners[key] = status.name
        return True
    status.errors.append(
        f"{key} is registered by both plugin {owner!r} and plugin {status.name!r}; keeping {owner!r}'s"
    )
    return False
