"""The device's public address, as a configured service on the internet sees it.

Off unless ``public_ip_url`` is set: asking makes an outbound request, which is
why it has a scope of its own (``network:internet``). One request at a time is
made, its answer kept for ``public_ip_cache_s``, so a dashboard polling it does
not hammer a third party. Only an IP address is ever taken from the answer; what
else the service sends is neither kept nor repeated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from datetime import UTC, datetime

from hostcore.builtin.network.models import PublicIpRead
from hostcore.errors import Unavailable, UpstreamFailed, UpstreamTimeout

MAX_ANSWER_BYTES = 256


class PublicAddress:
    def __init__(self, url: str | None, *, timeout_s: float, cache_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._kept: tuple[float, PublicIpRead] | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def get(self) -> PublicIpRead:
        if self.url is None:
            raise Unavailable(
                "no public-IP service is configured (set [plugins.network] public_ip_url)"
            )
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:  # callers arriving together share one outbound request
            kept = self._kept
            if kept is not None and time.monotonic() - kept[0] < self.cache_s:
                return kept[1].model_copy(update={"cached": True})
            address = await self._fetch(self.url)
            answer = PublicIpRead(address=address, fetched_at=datetime.now(UTC), cached=False)
            self._kept = (time.monotonic(), answer)
            return answer

    async def _fetch(self, url: str) -> str:
        """The address the service answers, within ``timeout_s`` for the whole exchange
        (httpx's own timeout bounds each read; a service dripping bytes would outlast it)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._get(url)
        except TimeoutError as error:
            raise UpstreamTimeout(
                f"the public-IP service did not answer within {self.timeout_s:g} s"
            ) from error
        try:
            address = ipaddress.ip_address(body.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError) as error:
            raise UpstreamFailed("the public-IP service did not answer an IP address") from error
        if (
            getattr(address, "scope_id", None)
            or address.is_multicast
            or address.is_unspecified
            or address.is_loopback
            or address.is_link_local
        ):
            raise UpstreamFailed("the public-IP service answered an address no host has")
        return str(address)

    async def _get(self, url: str) -> bytes:
        import httpx2

        try:
            async with (
                httpx2.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client,
                client.stream("GET", url, headers={"Accept": "text/plain"}) as response,
            ):
                if response.status_code != 200:
                    raise UpstreamFailed(
                        f"the public-IP service answered HTTP {response.status_code}"
                    )
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise UpstreamFailed("the public-IP service sent more than an address")
                return body
        except httpx2.TimeoutException as error:
            raise TimeoutError from error
        except httpx2.HTTPError as error:
            raise UpstreamFailed("the public-IP service could not be reached") from error
