"""The one place connector types are registered: `type:` in the config file -> class.

A type's module is imported the first time the type is looked up, so a daemon holds in memory the
connectors its configuration names, not all fourteen (IMAP alone brings imapclient and its e-mail
modules). Iterating the registry imports every type, as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

# type -> "module:class"; each class's own `type` must equal its key (tests/test_project.py checks).
_CLASSES: dict[str, str] = {
    "form": "leadhub.connectors.form:FormConnector",
    "order": "leadhub.connectors.order:OrderConnector",
    "shopify": "leadhub.connectors.shopify:ShopifyConnector",
    "tilda": "leadhub.connectors.tilda:TildaConnector",
    "woocommerce": "leadhub.connectors.woocommerce:WooCommerceConnector",
    "woocommerce_poll": "leadhub.connectors.woocommerce_poll:WooCommercePollConnector",
    "twilio": "leadhub.connectors.twilio:TwilioConnector",
    "zadarma": "leadhub.connectors.zadarma:ZadarmaConnector",
    "mango": "leadhub.connectors.mango:MangoConnector",
    "sipuni": "leadhub.connectors.sipuni:SipuniConnector",
    "telephony": "leadhub.connectors.telephony:TelephonyConnector",
    "telegram": "leadhub.connectors.telegram:TelegramConnector",
    "jivo": "leadhub.connectors.jivo:JivoConnector",
    "imap": "leadhub.connectors.imap:ImapConnector",
}


class ConnectorTypes(Mapping[str, Any]):
    """A read-only mapping of type name to connector class that imports a class when it is first asked for."""

    def __init__(self, classes: dict[str, str]) -> None:
        self._classes = classes
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            module, _, attribute = self._classes[name].partition(":")  # KeyError for an unknown type
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)


CONNECTOR_TYPES = ConnectorTypes(_CLASSES)
