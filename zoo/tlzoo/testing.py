"""Helpers for testing a tlzoo plugin (like pytest's ``pytester``, for tlzoo's plugins).

    import tlzoo.testing

    def test_my_backbones_match_their_models():
        with tlzoo.testing.registered(my_plugin):
            for spec in my_plugin.register_backbones():
                tlzoo.testing.assert_spec_matches(spec)

or, with ``pytest_plugins = ["tlzoo.testing"]`` in a conftest.py, the ``tlzoo_plugin``
fixture: ``tlzoo_plugin(my_plugin)`` registers it for one test and checks that it loaded cleanly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .plugins import get_host, register_plugin, unregister_plugin
from .specs import BackboneSpec


@contextmanager
def registered(plugin: object, name: str | None = None) -> Iterator[Any]:
    """Register ``plugin`` in-process for the block; yields its load status (errors, backbones, notes)."""
    label = name or str(getattr(plugin, "__name__", None) or type(plugin).__name__)
    host = get_host()
    if host.pm.is_registered(plugin):  # installed, so loaded already from its entry point: test it as it is
        from .registry import get_registry

        get_registry()
        yield host.statuses[host.pm.get_name(plugin) or label]
        return
    register_plugin(plugin, name=label)
    try:
        from .registry import get_registry

        get_registry()  # calls the hooks, so the status below is complete
        yield get_host().statuses[label]
    finally:
        unregister_plugin(plugin)


def spec_problems(spec: BackboneSpec) -> list[str]:
    """Build ``spec``'s model (random weights, its input size) and say where the spec disagrees with it."""
    from .backbone import build, spec_mismatches

    return spec_mismatches(spec, build(spec, None, spec.input_size, seed=0))


def assert_spec_matches(spec: BackboneSpec) -> None:
    problems = spec_problems(spec)
    assert not problems, f"{spec.id}: " + "; ".join(problems)


def _fixture() -> Any:
    import pytest

    @pytest.fixture
    def tlzoo_plugin() -> Iterator[Callable[..., Any]]:
        """Register plugins for one test: ``status = tlzoo_plugin(module)``; fails if the plugin reports errors."""
        opened: list[Any] = []

        def register(plugin: object, name: str | None = None, *, allow_errors: bool = False) -> Any:
            context = registered(plugin, name)
            status = context.__enter__()
            opened.append(context)
            if not allow_errors:
                assert status.ok, f"plugin {status.name!r}: " + "; ".join(status.errors)
            return status

        yield register
        for context in reversed(opened):
            context.__exit__(None, None, None)

    return tlzoo_plugin


try:  # a pytest plugin too, when pytest is there (pytest_plugins = ["tlzoo.testing"])
    tlzoo_plugin = _fixture()
except ImportError:  # pragma: no cover - tlzoo itself does not need pytest
    pass
