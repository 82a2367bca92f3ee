"""The registry: every framework, backbone and exporter the plugins registered, by name.

Names resolve like this: ``torch/vgg16`` and ``keras/vgg16`` are exact; a
short name (``vgg16``) means the backbone that claimed it first: tlzoo's
built-ins before third-party plugins, and among backbones of one plugin order,
the framework registered first (torch before Keras). ``framework=`` picks
another. A plugin backbone whose short name was already taken is reachable by
its id and listed in :attr:`Registry.shadowed`.
"""

from __future__ import annotations

import builtins
import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from .errors import UnknownBackboneError, UsageError
from .plugins import PluginStatus, get_host
from .specs import BackboneSpec, ExporterSpec, FeatureEngineSpec, FrameworkSpec


@dataclass
class Registry:
    frameworks_by_name: dict[str, FrameworkSpec] = field(default_factory=dict)
    backbones: dict[str, BackboneSpec] = field(default_factory=dict)
    exporters: dict[str, ExporterSpec] = field(default_factory=dict)
    feature_engines: dict[str, FeatureEngineSpec] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    short_names: dict[str, str] = field(default_factory=dict)  # short name -> the id it means
    shadowed: dict[str, str] = field(default_factory=dict)  # id whose short name another backbone holds -> that id

    def framework_rank(self) -> dict[str, int]:
        """Each framework's position in registration order (a backbone of an unregistered one sorts last)."""
        return {name: i for i, name in enumerate(self.frameworks_by_name)}

    def list(self, framework: str | None = None, pattern: str | None = None) -> builtins.list[BackboneSpec]:
        """Backbones sorted by name then framework, filtered like timm's ``list_models``."""
        rank = self.framework_rank()
        specs = sorted(self.backbones.values(), key=lambda s: (s.name, rank.get(s.framework, 99), s.framework))
        if framework:
            self.check_framework(framework)
            specs = [s for s in specs if s.framework == framework]
        if pattern:
            specs = [
                s for s in specs if fnmatch.fnmatch(s.name, pattern) or fnmatch.fnmatch(s.id, pattern)
            ]
        return specs

    def resolve(self, name: str, framework: str | None = None) -> BackboneSpec:
        """The backbone ``name`` names: an id (``torch/resnet50``) or a short name, optionally with a weights tag
        (``timm/resnet50.a1_in1k``, as timm and ``tlzoo weights import`` write it), which must be one of its own."""
        if framework is not None:
            self.check_framework(framework)
        name, tag = split_tag(name)
        spec = self._resolve(name, framework)
        if tag is not None and spec.weights_by_tag(tag) is None:
            tags = ", ".join(w.tag for w in spec.weights) or "none: it trains from random initialisation only"
            raise UsageError(f"{spec.id} has no weights tagged {tag!r}; its tags: {tags}")
        return spec

    def _resolve(self, name: str, framework: str | None) -> BackboneSpec:
        key = name.strip()
        if "/" in key:
            prefix, _, short = key.partition("/")
            if framework and prefix != framework:
                raise UsageError(f"{name!r} is a {prefix} backbone but --framework is {framework}")
            framework, key = prefix, short
        if framework:
            spec = self.backbones.get(f"{framework}/{key}")
            if spec is not None:
                return spec
        elif key in self.short_names:
            return self.backbones[self.short_names[key]]
        raise UnknownBackboneError(name, self.suggest(name))

    def frameworks(self) -> builtins.list[str]:
        """The registered frameworks, in registration order (plugins bring them; core keeps no list)."""
        return builtins.list(self.frameworks_by_name)

    def framework(self, name: str) -> FrameworkSpec:
        spec = self.frameworks_by_name.get(name)
        if spec is None:
            known = ", ".join(self.frameworks()) or "none installed"
            raise UsageError(f"unknown framework {name!r}; the installed plugins provide: {known}")
        return spec

    def check_framework(self, framework: str) -> None:
        self.framework(framework)

    def provider(self, backbone_id: str) -> dict[str, str]:
        """The plugin that registered a backbone: its name, distribution and version (what a run records)."""
        owner = self.owners.get(f"backbone {backbone_id}", "")
        status = get_host().statuses.get(owner)
        if status is None:
            return {"name": owner}
        return {"name": status.name, "module": status.module, "distribution": status.distribution,
                "version": status.version}  # fmt: skip

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


    def feature_engine(self, name: str) -> FeatureEngineSpec:
        if name in self.feature_engines:
            return self.feature_engines[name]
        known = ["auto", "framework", *sorted(self.feature_engines)]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"--feature-engine {name!r} is not installed.{hint} Choose one of: {', '.join(known)}")


_registry: Registry | None = None
_built_from: object = None


def get_registry() -> Registry:
    """The registry of the current plugin host (rebuilt whenever the plugins are reloaded)."""
    global _registry, _built_from
    host = get_host()
    if _registry is None or _built_from is not host:
        _registry, _built_from = _build(host), host
    return _registry


def reset() -> None:
    global _registry
    _registry = None


def _build(host: Any) -> Registry:
    reg = Registry()
    _collect(host.call_each("register_frameworks"), FrameworkSpec, "framework", reg.frameworks_by_name, reg.owners)
    _collect(host.call_each("register_backbones"), BackboneSpec, "backbone", reg.backbones, reg.owners,
             accept=lambda spec: _known_framework(reg, spec))  # fmt: skip
    _collect(host.call_each("register_exporters"), ExporterSpec, "exporter", reg.exporters, reg.owners)
    _collect(host.call_each("register_feature_engines"), FeatureEngineSpec, "feature_engine", reg.feature_engines,
             reg.owners)  # fmt: skip
    _claim_short_names(reg, host)
    _note_framework_imports(reg, host)
    return reg


def _note_framework_imports(reg: Registry, host: Any) -> None:
    heavy = {m for f in reg.frameworks_by_name.values() for m in f.modules}
    for status in host.statuses.values():
        found = [m for m in status.imported if m in heavy]
        if found and status.source != "built-in":
            status.notes.append(f"imports {', '.join(found)} when loaded, so every tlzoo command (even --help) pays "
                                f"for it; import frameworks inside the builder instead")  # fmt: skip


def _known_framework(reg: Registry, spec: BackboneSpec) -> str | None:
    if spec.framework in reg.frameworks_by_name:
        return None
    known = ", ".join(reg.frameworks()) or "none"
    return f"backbone {spec.id}: framework {spec.framework!r} is not provided by any installed plugin (installed: {known})"


def _claim_short_names(reg: Registry, host: Any) -> None:
    """Built-ins first, then plugins in load order; within one plugin, frameworks in registration order."""
    builtin = {name for name, status in host.statuses.items() if status.source == "built-in"}
    load_order = {name: i for i, name in enumerate(host.statuses)}
    rank = reg.framework_rank()

    def order(spec: BackboneSpec) -> tuple[int, int, int]:
        owner = reg.owners.get(f"backbone {spec.id}", "")
        return (0 if owner in builtin else 1, rank.get(spec.framework, 99), load_order.get(owner, len(load_order)))

    for spec in sorted(reg.backbones.values(), key=order):
        holder = reg.short_names.get(spec.name)
        if holder is None:
            reg.short_names[spec.name] = spec.id
            continue
        owner, holder_owner = reg.owners.get(f"backbone {spec.id}", ""), reg.owners.get(f"backbone {holder}", "")
        if owner not in builtin:  # tlzoo's own torch and Keras twins share short names by design (torch first)
            reg.shadowed[spec.id] = holder
            status = host.statuses.get(owner)
            if status is not None:
                status.notes.append(f"{spec.id}: the short name {spec.name!r} means {holder} (plugin {holder_owner!r}); "
                                    f"use the full id {spec.id}")  # fmt: skip


def _collect(results: list[tuple[PluginStatus, list[Any]]], cls: type, kind: str, into: dict[str, Any],
             owners: dict[str, str], accept: Any = None) -> None:  # fmt: skip
    """Keep each plugin's well-formed specs; record everything else as that plugin's error."""
    for status, specs in results:
        for spec in specs:
            if not isinstance(spec, cls):
                status.errors.append(f"register_{kind}s() returned {type(spec).__name__}, not {cls.__name__}")
                continue
            problem = accept(spec) if accept is not None else None
            if problem:
                status.errors.append(problem)
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


def split_tag(name: str) -> tuple[str, str | None]:
    """``timm/resnet50.a1_in1k`` -> (``timm/resnet50``, ``a1_in1k``): backbone ids and names hold no dot, so what
    follows the first one in the name is a weights tag. (``name``, None) without one."""
    head, slash, tail = name.strip().rpartition("/")
    short, dot, tag = tail.partition(".")
    return (f"{head}{slash}{short}", tag.strip() or None) if dot else (name.strip(), None)
