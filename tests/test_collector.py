"""tlzoo.collector: a plugin module's first import runs with Python's collector paused; in tlzoo's own process
what lives is then frozen (the garbage made before collected first); a library user's process is not frozen;
TLZOO_GC=default leaves the collector alone; a collector the program disabled stays disabled."""

from __future__ import annotations

import gc
import signal
import sys
import warnings
import weakref
from pathlib import Path

import pytest

from tlzoo import collector
from tlzoo.errors import PluginError
from tlzoo.plugins import load_object


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A module, not imported yet, that records whether the collector ran while it was imported."""
    (tmp_path / "gc_probe_module.py").write_text("import gc\nENABLED = gc.isenabled()\n")
    (tmp_path / "gc_broken_module.py").write_text("import gc\nraise ImportError(f'broken, collector on: {gc.isenabled()}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TLZOO_GC", raising=False)
    monkeypatch.setitem(collector._state, "own", False)
    was_enabled = gc.isenabled()
    gc.enable()
    yield "gc_probe_module:ENABLED"
    for name in ("gc_probe_module", "gc_broken_module"):
        sys.modules.pop(name, None)
    gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_library_process_pauses_the_collector_for_the_import_and_freezes_nothing(probe: str) -> None:
    frozen = gc.get_freeze_count()
    assert load_object(probe, "probe") is False  # the collector was off while the module ran
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_tlzoo_own_process_collects_the_garbage_then_freezes_what_lives(probe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    collector.own_process()
    garbage, alive = Cycle(), Cycle()
    gone = weakref.ref(garbage)
    del garbage
    assert gone() is not None  # a cycle: only the collector frees it
    assert load_object(probe, "probe") is False
    assert gone() is None  # collected before the freeze, not kept for the process's life
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert alive.me is alive


def test_an_imported_module_is_not_frozen_again(probe: str) -> None:
    collector.own_process()
    load_object(probe, "probe")
    gc.unfreeze()
    assert load_object(probe, "probe") is False  # the module's value, from sys.modules
    assert gc.get_freeze_count() == 0


def test_a_failed_import_resumes_the_collector(probe: str) -> None:
    collector.own_process()
    with pytest.raises(PluginError, match="broken, collector on: False"):
        load_object("gc_broken_module:X", "probe")
    assert gc.isenabled()


def test_tlzoo_gc_default_leaves_the_collector_alone(probe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLZOO_GC", "default")
    collector.own_process()
    assert load_object(probe, "probe") is True
    assert gc.get_freeze_count() == 0


def test_a_collector_the_program_disabled_stays_disabled(probe: str) -> None:
    collector.own_process()
    gc.disable()
    assert load_object(probe, "probe") is False
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_nested_pauses_resume_once_when_the_outer_one_ends(probe: str) -> None:
    with collector.paused_for_import():
        with collector.paused_for_import():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_cli_says_the_process_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlzoo.cli import app

    monkeypatch.setitem(collector._state, "own", False)
    monkeypatch.setattr(sys, "argv", ["tlzoo", "--help"])
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler stays out of pytest
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_:  # and so do its warning settings
        app.main()
    assert exit_.value.code == 0
    assert collector._state["own"] is True
