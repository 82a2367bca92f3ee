"""Finding, loading and calling plugins, with every failure isolated and reported.

Plugins come from three places, in this order:

1. the ``tlzoo`` entry-point group of installed distributions (tlzoo's own
   built-ins are registered there too);
2. modules named in ``TLZOO_PLUGINS`` (comma separated) or with ``--plugin``;
3. plugins registered in-process with :func:`register_plugin` (tests do this).

``TLZOO_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party entry points (tlzoo's
own built-ins still load), as ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does for pytest;
``TLZOO_DISABLE_PLUGINS=timm,other`` skips plugins by name, built-ins included.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

import pluggy

from . import hookspecs
from .collector import paused_for_import

ENTRY_POINT_GROUP = "tlzoo"
DISTRIBUTION = "tlzoo"
ENV_PLUGINS = "TLZOO_PLUGINS"
ENV_DISABLE_AUTOLOAD = "TLZOO_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLE = "TLZOO_DISABLE_PLUGINS"  # plugin names never loaded, built-ins included (pytest's -p no:NAME)
# Used only when tlzoo's own distribution metadata is missing (running from a
# bare checkout): the same modules its entry points name.
BUILTIN_MODULES = {"torch": "tlzoo_torch", "torchvision": "tlzoo_torchvision", "keras": "tlzoo_keras", "onnx": "tlzoo_onnx",
                   "timm": "tlzoo_timm"}


@dataclass
class PluginStatus:
    """What ``tlzoo plugins`` reports for one plugin."""

    name: str
    module: str
    version: str = ""
    source: str = "entry point"
    distribution: str = ""  # the installed package that provides it, when it came from an entry point
    frameworks: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)
    feature_engines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not errors: shadowed short names, framework imports
    tracebacks: list[str] = field(default_factory=list)  # shown with TLZOO_DEBUG=1
    imported: list[str] = field(default_factory=list)  # top-level modules that loading the plugin imported

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "version": self.version,
            "source": self.source,
            "distribution": self.distribution,
            "status": "ok" if self.ok else "error",
            "frameworks": self.frameworks,
            "backbones": self.backbones,
            "exporters": self.exporters,
            "feature_engines": self.feature_engines,
            "errors": self.errors,
            "notes": self.notes,
        }


HOOK_NAMES = tuple(n for n in dir(hookspecs) if n.startswith("register_"))


def contract_problems(plugin: object) -> list[str]:
    """Hooks a plugin meant but pluggy would silently ignore: misspelled names and functions without
    ``@tlzoo.hookimpl`` (pytest and pluggy's ``check_pending`` catch the first kind the same way)."""
    import difflib

    marker = f"{hookspecs.PROJECT_NAME}_impl"
    problems = []
    for attr in dir(plugin):
        if not attr.startswith("register_"):
            continue
        value = getattr(plugin, attr, None)
        if not callable(value):
            continue
        marked = hasattr(value, marker)
        if attr in HOOK_NAMES:
            if not marked:
                problems.append(f"{attr}() is not marked @tlzoo.hookimpl, so it is never called")
        elif marked or getattr(value, "__module__", None) == getattr(plugin, "__name__", None):
            close = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{attr}() is not a tlzoo hook{hint}; the hooks are {', '.join(HOOK_NAMES)}")
    return problems


class PluginHost:
    """A pluggy manager plus the load status of every plugin it tried."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.statuses: dict[str, PluginStatus] = {}

    def status_for(self, plugin: object) -> PluginStatus:
        name = self.pm.get_name(plugin) or repr(plugin)
        return self.statuses.setdefault(name, PluginStatus(name=name, module=_module_name(plugin)))

    def add(self, plugin: object, name: str, *, source: str, version: str = "", distribution: str = "") -> None:
        status = PluginStatus(name=name, module=_module_name(plugin), version=version, source=source,
                              distribution=distribution)  # fmt: skip
        self.statuses[name] = status
        try:
            self.pm.register(plugin, name=name)
        except (Exception, SystemExit) as exc:  # a malformed hookimpl is the plugin's problem, not ours
            status.errors.append(f"could not register: {_describe(exc)}")
            return
        status.errors += contract_problems(plugin)
        if status.errors:  # a plugin that does not keep the contract registers nothing
            self.pm.unregister(plugin)


    def add_failed(self, name: str, module: str, error: str, *, source: str, version: str = "",
                   distribution: str = "", traceback: str = "") -> None:  # fmt: skip
        self.statuses[name] = PluginStatus(
            name=name, module=module, version=version, source=source, distribution=distribution, errors=[error],
            tracebacks=[traceback] if traceback else [],
        )  # fmt: skip

    def call_each(self, hook_name: str) -> list[tuple[PluginStatus, list[Any]]]:
        """Call one hook on each plugin separately, so one failure stays local."""
        results = []
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # stored in registration order
            status = self.status_for(impl.plugin)
            try:
                returned = impl.function()
            except (Exception, SystemExit) as exc:  # sys.exit() in a plugin is a broken plugin too
                status.errors.append(f"{hook_name}() raised {_describe(exc)}")
                status.tracebacks.append(_traceback(exc))
                continue
            if returned is None:
                continue
            if not isinstance(returned, (list, tuple)):
                status.errors.append(f"{hook_name}() must return a list, got {type(returned).__name__}")
                continue
            results.append((status, list(returned)))
        return results


_in_process: list[tuple[str, object]] = []
_extra_modules: list[str] = []
_host: PluginHost | None = None


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object in-process (tests, notebooks). Resets the registry."""
    _in_process.append((name or _module_name(plugin), plugin))
    reset()


def unregister_plugin(plugin_or_name: object) -> None:
    """Undo :func:`register_plugin`. Resets the registry."""
    _in_process[:] = [
        (n, p) for n, p in _in_process if p is not plugin_or_name and n != plugin_or_name
    ]
    reset()


def add_plugin_modules(modules: list[str]) -> None:
    """Load these importable modules as plugins (the CLI's ``--plugin``)."""
    for module in modules:
        if module and module not in _extra_modules:
            _extra_modules.append(module)
    reset()


def child_env() -> dict[str, str]:
    """Environment for tlzoo subprocesses (compare's runs): the same --plugin modules load there too."""
    env_modules = [m.strip() for m in os.environ.get(ENV_PLUGINS, "").split(",") if m.strip()]
    modules = list(dict.fromkeys([*env_modules, *_extra_modules]))
    return {ENV_PLUGINS: ",".join(modules)} if modules else {}


def reset() -> None:
    """Forget loaded plugins (the registry, built from a host, is rebuilt with the next one)."""
    global _host
    _host = None


def get_host() -> PluginHost:
    global _host
    if _host is None:
        _host = _load()
    return _host


def _load() -> PluginHost:
    host = PluginHost()
    _load_entry_points(host)
    env_modules = [m.strip() for m in os.environ.get(ENV_PLUGINS, "").split(",") if m.strip()]
    for module in [*env_modules, *_extra_modules]:
        if module in host.statuses:
            continue
        _load_module(host, module, source="--plugin/" + ENV_PLUGINS)
    for name, plugin in _in_process:
        host.add(plugin, name, source="in-process")
    return host


def _load_entry_points(host: PluginHost) -> None:
    autoload = os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() in ("", "0", "false", "no")
    disabled = {n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip()}
    seen_builtin = False
    read: dict[metadata.Distribution, tuple[str, str]] = {}
    found = [(ep, *_dist_info(ep, read)) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    for ep, dist_name, version in sorted(found, key=_builtin_first):
        builtin = _normalize(dist_name) == DISTRIBUTION
        seen_builtin = seen_builtin or builtin
        if (not builtin and not autoload) or ep.name in disabled:
            continue
        source = "built-in" if builtin else f"entry point ({dist_name})"
        if ep.name in host.statuses:
            if not builtin:  # a third party may not replace or shadow a plugin by taking its name
                host.add_failed(f"{ep.name} ({dist_name})", ep.value, f"entry point name {ep.name!r} is already taken "
                                f"by plugin {host.statuses[ep.name].module!r}; rename the entry point in {dist_name}'s "
                                f"pyproject.toml", source=source, version=version, distribution=dist_name)  # fmt: skip
            continue
        before = set(sys.modules)
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # sys.exit() at import is a broken plugin too
            host.add_failed(ep.name, ep.value, f"import failed: {_describe(exc)}", source=source, version=version,
                            distribution=dist_name, traceback=_traceback(exc))  # fmt: skip
            continue
        host.add(plugin, ep.name, source=source, version=version, distribution=dist_name)
        _note_heavy_imports(host, ep.name, before)
    if not seen_builtin:
        for name, module in BUILTIN_MODULES.items():
            if name not in disabled:
                _load_module(host, module, source="built-in", name=name)


def _load_module(host: PluginHost, module: str, *, source: str, name: str | None = None) -> None:
    name = name or module
    before = set(sys.modules)
    try:
        plugin = importlib.import_module(module)
    except (Exception, SystemExit) as exc:
        host.add_failed(name, module, f"import failed: {_describe(exc)}", source=source, traceback=_traceback(exc))
        return
    host.add(plugin, name, source=source, version=str(getattr(plugin, "__version__", "")),
             distribution=DISTRIBUTION if source == "built-in" else "")  # fmt: skip
    _note_heavy_imports(host, name, before)


def _note_heavy_imports(host: PluginHost, name: str, before: set[str]) -> None:
    """Remember which top-level modules loading the plugin imported (the registry names the costly ones:
    the modules of the registered frameworks)."""
    status = host.statuses.get(name)
    if status is not None:
        status.imported = sorted({m.partition(".")[0] for m in set(sys.modules) - before})


def warn_broken_plugins(echo: Callable[[str], None] | None = None) -> None:
    """One line on stderr per broken plugin; details in ``tlzoo plugins``."""
    echo = echo or (lambda line: print(line, file=sys.stderr))
    debug = os.environ.get("TLZOO_DEBUG", "").strip() not in ("", "0")
    for status in get_host().statuses.values():
        for error in status.errors:
            echo(f"tlzoo: warning: plugin {status.name!r}: {error} (see `tlzoo plugins`)")
        if debug:
            for text in status.tracebacks:
                echo(text.rstrip())


def _dist_info(ep: metadata.EntryPoint, read: dict[metadata.Distribution, tuple[str, str]]) -> tuple[str, str]:
    """The name and version of the distribution that declares ``ep``. Each ``Distribution.name`` or ``.version``
    parses the METADATA file again, a few milliseconds each: ``read`` keeps them per distribution."""
    dist = ep.dist
    if dist is None:
        return "", ""
    if dist not in read:
        meta = dist.metadata
        read[dist] = (meta["Name"] or "", meta["Version"] or "")
    return read[dist]


def _builtin_first(found: tuple[metadata.EntryPoint, str, str]) -> tuple[int, int, str]:
    """tlzoo's own plugins first, in BUILTIN_MODULES order (torch's framework first: its backbones own the
    short names both frameworks have), then third-party plugins by name."""
    ep, dist_name, _ = found
    builtin = _normalize(dist_name) == DISTRIBUTION
    order = list(BUILTIN_MODULES)
    return (0 if builtin else 1, order.index(ep.name) if builtin and ep.name in order else len(order), ep.name)


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


def _module_name(plugin: object) -> str:
    return str(getattr(plugin, "__name__", None) or type(plugin).__module__)


def load_object(path: str, what: str) -> Any:
    """Import ``"module:attribute"`` named by a spec; a failure is the plugin's, reported as such."""
    from .errors import PluginError

    module_name, _, attr = path.partition(":")
    try:
        if module_name in sys.modules:
            module = importlib.import_module(module_name)
        else:
            with paused_for_import():  # the first import of a framework: see tlzoo.collector
                module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"{what} {path!r} cannot be imported: {type(exc).__name__}: {exc}") from exc


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
