"""The one place connector types are registered: `type:` in the config file -> class."""

from __future__ import annotations

from typing import Any

from leadhub.connectors.form import FormConnector
from leadhub.connectors.imap import ImapConnector
from leadhub.connectors.jivo import JivoConnector
from leadhub.connectors.mango import MangoConnector
from leadhub.connectors.order import OrderConnector
from leadhub.connectors.shopify import ShopifyConnector
from leadhub.connectors.sipuni import SipuniConnector
from leadhub.connectors.telegram import TelegramConnector
from leadhub.connectors.telephony import TelephonyConnector
from leadhub.connectors.tilda import TildaConnector
from leadhub.connectors.twilio import TwilioConnector
from leadhub.connectors.woocommerce import WooCommerceConnector
from leadhub.connectors.woocommerce_poll import WooCommercePollConnector
from leadhub.connectors.zadarma import ZadarmaConnector

CONNECTOR_TYPES: dict[str, Any] = {
    connector.type: connector
    for connector in (
        FormConnector,
        OrderConnector,
        ShopifyConnector,
        TildaConnector,
        WooCommerceConnector,
        WooCommercePollConnector,
        TwilioConnector,
        ZadarmaConnector,
        MangoConnector,
        SipuniConnector,
        TelephonyConnector,
        TelegramConnector,
        JivoConnector,
        ImapConnector,
    )
}
