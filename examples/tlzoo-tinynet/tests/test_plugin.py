"""The plugin's own tests, written with tlzoo's testing helpers (run from this folder: pytest tests)."""

from __future__ import annotations

import tlzoo_tinynet
from tlzoo.specgen import check
from tlzoo_tinynet.drafts import DRAFTS

pytest_plugins = ["tlzoo.testing"]


def test_registers_cleanly_and_the_spec_matches_the_model(tlzoo_plugin):
    import tlzoo.testing

    status = tlzoo_plugin(tlzoo_tinynet, "tinynet-test")
    assert status.backbones == ["torch/tinynet"]
    [spec] = tlzoo_tinynet.register_backbones()
    tlzoo.testing.assert_spec_matches(spec)


def test_shipped_json_is_current():
    assert check(DRAFTS, tlzoo_tinynet.SPECS) == []
