# mypy: disable-error-code="empty-body"
"""The tlzoo plugin contract.

A plugin is a module (or any object) with functions marked ``@tlzoo.hookimpl``
whose names match the hooks below. Installed packages are found through the
``tlzoo`` entry-point group::

    [project.entry-points.tlzoo]
    tinynet = "tlzoo_tinynet"

tlzoo's own backbones and exporters are registered exactly the same way. A
plugin that fails to import, or whose hook raises or returns the wrong thing,
is reported by ``tlzoo plugins`` and in a one-line warning; the other plugins
keep working.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "tlzoo"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_frameworks() -> list[Any]:
    """Return the plugin's frameworks as a list of :class:`tlzoo.FrameworkSpec`.

    A framework is what backbones are written in: torch and Keras are
    registered this way by tlzoo's own ``tlzoo_torch`` and ``tlzoo_keras``
    plugins, and a third one (Keras on JAX, Flax, plain numpy) is added the same
    way without touching tlzoo. The spec is plain data; its ``adapter``
    ("module:attribute", a :class:`tlzoo.adapters.FrameworkAdapter`) owns
    everything framework-specific and is imported only when a model is built,
    trained, loaded or exported. Two plugins registering the same framework
    name is an error reported for the second; the first keeps it.
    """


@hookspec
def register_backbones() -> list[Any]:
    """Return the plugin's backbones as a list of :class:`tlzoo.BackboneSpec`.

    Called once per process when the registry is first used, with no
    arguments. It must be cheap and must not import torch, TensorFlow or
    onnxruntime: a spec is plain data, and its ``builder`` ("module:function")
    is imported only when the backbone is built.

    Each backbone is known by its framework-qualified id ``framework/name``
    (``torch/vgg16``); its ``framework`` must be registered by some plugin
    (``register_frameworks``). A short name (``vgg16``) means the backbone
    that first claimed it: tlzoo's built-ins before third-party plugins, and
    among the built-ins the first framework registered (torch). A plugin
    backbone whose short name is taken stays reachable by its id, and
    ``tlzoo plugins`` says so. Two plugins registering the same id is an
    error reported for the second plugin; the first keeps the id.
    """


@hookspec
def register_exporters() -> list[Any]:
    """Return the plugin's exporters as a list of :class:`tlzoo.ExporterSpec`.

    An exporter turns a trained run directory into a deployable file. Like
    backbones, an exporter spec is plain data whose ``exporter``
    ("module:function") is imported only when the export runs, and is called as
    ``exporter(run, out, options) -> dict``: ``run`` a :class:`tlzoo.runs.trained.TrainedRun`,
    ``out`` the file to write (or None for the exporter's default in the run
    directory), ``options`` the format's settings, one per
    :class:`tlzoo.settings.Setting` the spec declares in ``options`` (the CLI
    makes ``tlzoo export FORMAT`` options of them). It returns a report with at
    least ``path``. It must write nothing at ``out`` unless the export
    succeeded. The framework's model is converted by asking the run's
    framework adapter: ``adapter.converter(FORMAT)``.

    ``runtime`` ("module:attribute") opens the files the exporter writes (found
    by ``file_suffix``) for ``tlzoo predict`` and ``tlzoo evaluate``: called as
    ``runtime(path, provider=...)``, it returns a :class:`tlzoo.runs.inference.Classifier`.
    """


@hookspec
def register_feature_engines() -> list[Any]:
    """Return the plugin's feature engines as a list of :class:`tlzoo.FeatureEngineSpec`.

    A feature engine runs a frozen backbone for feature-extract (``tlzoo train --feature-engine NAME``)
    instead of the backbone's own framework: another runtime on an export of the backbone, say. See
    :class:`tlzoo.specs.FeatureEngineSpec` for how the engine is called and what it must return.
    """
