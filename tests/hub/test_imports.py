"""What a daemon with one form connector loads: modules of features it does not use stay out of memory."""

from __future__ import annotations

import subprocess
import sys

# Each is loaded when its feature is used: a connector type when configured, alembic when there is something
# to migrate (tests/store/test_migrations.py; `leadhub run` migrates in a child, tests/hub/test_migrate_child.py),
# aiosmtplib when a rule sends e-mail.
NOT_FOR_A_FORM = ("alembic", "imapclient", "aiosmtplib", "leadhub.connectors.imap", "leadhub.connectors.telegram")

LOAD_A_FORM_CONFIG = f"""
import sys
from leadhub.hub import cli, daemon
from leadhub.hub.config import config_from_dict
from leadhub.connectors.registry import CONNECTOR_TYPES

config = config_from_dict({{"connectors": [{{"name": "site-form", "type": "form"}}]}}, env={{}})
assert CONNECTOR_TYPES[config.connectors[0].type].type == "form"
print(" ".join(name for name in {NOT_FOR_A_FORM!r} if name in sys.modules))
"""


def test_a_form_only_configuration_loads_no_other_connector_nor_alembic() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_A_FORM_CONFIG], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported although unused: {result.stdout.strip()}"


def test_unknown_connector_type_is_none_and_every_type_is_listed() -> None:
    from leadhub.connectors.registry import CONNECTOR_TYPES

    assert CONNECTOR_TYPES.get("fax") is None
    assert "fax" not in CONNECTOR_TYPES
    assert {"form", "imap", "telegram", "woocommerce_poll"} <= set(CONNECTOR_TYPES)
    assert len(CONNECTOR_TYPES) == len(list(CONNECTOR_TYPES.values()))
