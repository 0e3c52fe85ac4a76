"""Hosts a value chose for an outbound request: public addresses only, so customer data (a name, a form field)
cannot aim a webhook at the hub's own loopback, the cloud's metadata service or the private network."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from leadhub.triggers.url_template import is_public


class NotPublic(OSError):
    """A host that is, or resolves only to, a loopback, private, link-local, multicast or reserved address."""


class PublicResolver(AbstractResolver):
    """The default resolver, keeping only public addresses: the check is on the addresses connected to, so a
    name that resolves to 127.0.0.1 (`localhost`, a wildcard-DNS service) is refused like the literal."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        public = [each for each in found if is_public(each["host"])]
        if not public:
            raise NotPublic(f"the url's host, which a value wrote, is not a public address ({len(found)} resolved)")
        return public

    async def close(self) -> None:
        await self._resolver.close()
