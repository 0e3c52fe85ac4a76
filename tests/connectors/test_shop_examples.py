"""The shop example configuration a new user starts from is valid as written."""

from __future__ import annotations

import yaml

from leadhub.hub.config import config_from_dict
from tests.helpers import REPO


def test_the_shop_example_config_is_valid() -> None:
    raw = yaml.safe_load((REPO / "examples" / "shop.yaml").read_text())
    config = config_from_dict(raw, env={})
    assert [c.type for c in config.connectors] == ["shopify", "woocommerce", "woocommerce_poll", "tilda", "order"]
