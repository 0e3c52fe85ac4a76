"""The outbound POST's sorting of failures, without a server: what can never work is not retried."""

from __future__ import annotations

import pytest

from leadhub.triggers.actions.base import Permanent
from leadhub.triggers.actions.http import post


@pytest.mark.parametrize("url", ["http://", "http://[::1/hook", "http://user:token@:80/hook"])
async def test_an_invalid_url_fails_without_naming_it(url: str) -> None:
    """A rendered URL aiohttp cannot use was a Transient error retried for hours; it also must not be echoed
    (it may carry a token)."""
    with pytest.raises(Permanent) as failure:
        await post(None, url, b"{}", {}, seconds=2, label="webhook")
    assert str(failure.value) == "webhook: not a valid URL"
