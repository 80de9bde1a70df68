"""The built-in ``network`` plugin: interfaces, addresses, routes, DNS, DHCP, VLANs, LLDP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hostcore.builtin.network.schemas import NetworkSettings
from hostcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from pydantic import BaseModel

    from hostcore.builtin.network.service import NetworkService
    from hostcore.events import Publish, Topic

# A burst of changes (a link going up brings carrier, addresses, routes) is one event
# per interface, sent this long after the first of them.
LINK_EVENT_COALESCE_S = 0.1
RESUBSCRIBE_AFTER_S = 1.0

# The server code (router, service, pyroute2) is imported by the hooks that need it,
# never at import: the command line loads this module to list every plugin's commands.


@hookimpl
def hostcore_settings_model() -> type[BaseModel]:
    return NetworkSettings


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {
        "network:read": "Read interfaces, addresses, routes, neighbours, DNS, leases, LLDP.",
        "network:control": "Set interfaces up or down; add and delete VLANs.",
        "network:internet": "Ask an internet service for the device's public address.",
    }


@hookimpl
def hostcore_event_topics() -> list[Topic]:
    from hostcore.events import Topic

    return [
        Topic(
            "network.links",
            "network:read",
            source=_link_events,
            description="An interface of the device's own namespace appeared, changed "
            "(state, carrier, addresses …) or went away, with its state now.",
        )
    ]


async def _link_events(app: FastAPI, publish: Publish) -> None:
    """While someone listens: the kernel's link and address notifications (the link
    table's subscription), one event per interface and burst.

    When the subscription was lost (notifications overflowed its queue) and is made
    again, what changed meanwhile is found by comparing the interface list with the
    last one seen, so no interface's appearing, change or removal goes unreported. A
    failed read is retried, unhurried, rather than ending the stream."""
    import asyncio
    import logging

    from hostcore.builtin.network.models import InterfaceRead, LinkEventRead
    from hostcore.errors import HostcoreError

    service: NetworkService = app.state.network
    pending: set[int] = set()  # the interfaces notified about since the last events
    arrived = asyncio.Event()

    def on_message(message: Any) -> None:
        index = message.get("index")  # a link's, or the interface an address is on
        if isinstance(index, int):
            pending.add(index)
            arrived.set()

    def publish_changes(
        seen: dict[int, InterfaceRead], now: dict[int, InterfaceRead], indexes: set[int]
    ) -> None:
        for index in sorted(indexes):
            interface, before = now.get(index), seen.get(index)
            if interface is not None:
                change = "changed" if before is not None else "added"
                event = LinkEventRead(
                    change=change, index=index, name=interface.name, interface=interface
                )
                publish(event)
            elif before is not None:  # (neither: it came and went within one burst)
                publish(
                    LinkEventRead(change="removed", index=index, name=before.name, interface=None)
                )

    with service.table.listening(on_message):
        seen: dict[int, InterfaceRead] | None = None
        subscription: asyncio.Task[None] | None = None
        while True:
            try:
                watcher = await service.table.watching()  # made again if it ended
                if watcher is not subscription:
                    # A new subscription: compare everything with what was last seen.
                    subscription = watcher
                    now = {i.index: i for i in await service.interfaces()}
                    if seen is not None:
                        differ = {i for i in {*seen, *now} if seen.get(i) != now.get(i)}
                        publish_changes(seen, now, differ)
                    seen = now
                waiting = asyncio.create_task(arrived.wait())
                try:
                    await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
                if not arrived.is_set():  # the subscription ended: make it again, unhurried
                    await asyncio.sleep(RESUBSCRIBE_AFTER_S)
                    continue
                await asyncio.sleep(LINK_EVENT_COALESCE_S)
                arrived.clear()
                changes = set(pending)
                pending.clear()
                now = {i.index: i for i in await service.interfaces()}
                publish_changes(seen or {}, now, changes)
                seen = now
            except HostcoreError:
                logging.getLogger(__name__).warning("network.links: reading failed; retrying")
                await asyncio.sleep(RESUBSCRIBE_AFTER_S)


@hookimpl
def hostcore_routes() -> APIRouter:
    from hostcore.builtin.network.router import build_router

    return build_router()


@hookimpl
async def hostcore_startup(app: FastAPI, config: NetworkSettings) -> None:
    from hostcore.builtin.network.service import NetworkService

    app.state.network = NetworkService(config, app.state.runner)


@hookimpl
async def hostcore_shutdown(app: FastAPI) -> None:
    service: NetworkService | None = getattr(app.state, "network", None)
    if service is not None:
        await service.stop()


@hookimpl
def hostcore_health(app: FastAPI) -> dict[str, Any]:
    service: NetworkService | None = getattr(app.state, "network", None)
    if service is None:
        return {"status": "down", "detail": "not started"}
    return {"status": "ok"}
