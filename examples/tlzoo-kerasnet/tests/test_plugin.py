"""The plugin's own tests, written with tlzoo's testing helpers (run from this folder: pytest tests)."""

from __future__ import annotations

import tlzoo_kerasnet
from tlzoo.specgen import check
from tlzoo_kerasnet.drafts import DRAFTS

pytest_plugins = ["tlzoo.testing"]


def test_registers_cleanly_and_the_spec_matches_the_model(tlzoo_plugin):
    import tlzoo.testing

    status = tlzoo_plugin(tlzoo_kerasnet, "kerasnet-test")
    assert status.backbones == ["keras/kerasnet"]
    [spec] = tlzoo_kerasnet.register_backbones()
    tlzoo.testing.assert_spec_matches(spec)


def test_shipped_json_is_current():
    assert check(DRAFTS, tlzoo_kerasnet.SPECS) == []
