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
    table's subscription), one event per interface and burst."""
    import asyncio

    from hostcore.builtin.network.models import LinkEventRead

    service: NetworkService = app.state.network
    pending: dict[int, bool] = {}  # index -> removed
    arrived = asyncio.Event()

    def on_message(message: Any) -> None:
        index = message.get("index")  # a link's, or the interface an address is on
        if isinstance(index, int):
            pending[index] = message.get("event") == "RTM_DELLINK"
            arrived.set()

    with service.table.listening(on_message):
        known = {i.index: i.name for i in await service.interfaces()}
        while True:
            watcher = await service.table.watching()  # made again if it ended
            waiting = asyncio.create_task(arrived.wait())
            try:
                await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if not arrived.is_set():  # the subscription ended: subscribe again, unhurried
                await asyncio.sleep(RESUBSCRIBE_AFTER_S)
                continue
            await asyncio.sleep(LINK_EVENT_COALESCE_S)
            arrived.clear()
            changes, pending = dict(pending), {}
            current = {i.index: i for i in await service.interfaces()}
            for index, removed in changes.items():
                interface = None if removed else current.get(index)
                name = interface.name if interface is not None else known.get(index)
                if name is None:
                    continue  # came and went within one burst
                change = "removed" if interface is None else "changed"
                if interface is not None and index not in known:
                    change = "added"
                publish(LinkEventRead(change=change, index=index, name=name, interface=interface))
            known = {index: interface.name for index, interface in current.items()}


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
