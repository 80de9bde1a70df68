"""One lazily made, self-healing connection to the system D-Bus, for every daemon client.

* Made on first use, to ``address`` or ``$DBUS_SYSTEM_BUS_ADDRESS`` (read at each
  connection, as every D-Bus client does), within ``timeout_s``.
* Callers arriving together share one attempt; one caller giving up does not
  cancel it for the others.
* Forgotten as soon as it drops (a watcher reads why), so the next use connects
  again; ``on_lost`` lets the owner drop what it kept for that connection.
* A connection belongs to the event loop that made it: :meth:`close` it before
  that loop ends; used from a new loop, it connects afresh.

What goes wrong becomes an :class:`~hostcore.errors.Unavailable` naming the bus,
raised from what connecting raised (a client may tell "no bus daemon at all",
an ``OSError``, from an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from dbus_fast import BusType, Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import AuthError, InvalidAddressError

from hostcore.dbus import DEFAULT_SYSTEM_BUS_ADDRESS, DBusService, dbus_error, describe_address
from hostcore.errors import BadRequest, Conflict, HostcoreError, NotFound, Unavailable

logger = logging.getLogger(__name__)

CLOSE_GRACE_S = 1.0
_NOT_RUNNING = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)


class BusConnection:
    def __init__(
        self,
        *,
        address: str | None = None,
        timeout_s: float,
        on_lost: Callable[[MessageBus], None] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self._address = address
        self._on_lost = on_lost
        self._bus: MessageBus | None = None
        self._bus_loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Task[MessageBus] | None = None
        self._watchers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return (
            self._address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS_ADDRESS
        )

    @property
    def current(self) -> MessageBus | None:
        """The connection, if one is made (it may have dropped unnoticed yet)."""
        return self._bus

    @property
    def connected(self) -> bool:
        """Whether a connection is up (as far as this process has noticed yet)."""
        return self._bus is not None and self._bus.connected

    async def get(self) -> MessageBus:
        loop = asyncio.get_running_loop()
        bus = self._bus
        if bus is not None and self._bus_loop is loop and bus.connected:
            return bus
        if bus is not None and self._bus_loop is not loop:
            # Only the loop that made a connection can use it (or close it fully).
            self.forget(bus)
            bus.disconnect()
        task = self._connecting
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._connecting = loop.create_task(self._connect())
            # Callers may all have timed out before it fails; nobody else reads its error.
            task.add_done_callback(_consume_exception)
        # Shielded: one caller giving up must not cancel the connection others wait for.
        return await asyncio.shield(task)

    async def call(
        self,
        service: DBusService,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        path: str | None = None,
        interface: str | None = None,
        timeout_s: float | None = None,
        errors: Callable[[str, str], HostcoreError | None] | None = None,
        autostart: bool = True,
    ) -> list[Any]:
        """Call ``member`` on ``service`` (its main object and interface unless given); the
        reply's body. ``autostart=False``: a daemon that is not running is not started by
        the bus (D-Bus activation), it is a 503.

        A D-Bus error reply becomes :func:`hostcore.dbus.dbus_error`'s answer, unless
        ``errors(name, message)`` (the daemon's own error names) has a better one; the
        daemon's message is only logged, never put in an answer. ``timeout_s`` (default:
        the connection's) bounds the whole call.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        message = Message(
            destination=service.name,
            path=path or service.path,
            interface=interface or service.interface,
            member=member,
            signature=signature,
            body=list(body),
            flags=MessageFlag.NONE if autostart else MessageFlag.NO_AUTOSTART,
        )
        bus: MessageBus | None = None
        try:
            async with asyncio.timeout(timeout):
                bus = await self.get()
                reply = await bus.call(message)
        except TimeoutError:
            if bus is None:
                where = describe_address(self.address)
                raise Unavailable(
                    f"the system D-Bus ({where}) did not answer within {timeout:g} s"
                ) from None
            raise Unavailable(f"{service.label} did not answer within {timeout:g} s") from None
        except (OSError, EOFError) as exc:
            raise self._lost_during(bus, service, exc) from exc
        if reply is None:
            # dbus-fast ends calls pending on a connection that closed without an error.
            raise self._lost_during(bus, service, None)
        if reply.message_type is MessageType.ERROR:
            name = reply.error_name or ""
            text = str(reply.body[0]) if reply.body else ""
            error = (errors(name, text) if errors is not None else None) or dbus_error(
                service, member, name
            )
            raise logged(error, reply)
        return list(reply.body)

    def _lost_during(
        self, bus: MessageBus | None, service: DBusService, exc: BaseException | None
    ) -> Unavailable:
        if bus is not None:
            self.forget(bus)
        reason = f": {exc}" if exc is not None and str(exc) else ""
        return Unavailable(
            f"the system D-Bus connection was lost while calling {service.label}{reason}"
        )

    async def _connect(self) -> MessageBus:
        address = self.address
        where = describe_address(address)
        try:
            async with asyncio.timeout(self.timeout_s):
                bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        except TimeoutError:
            raise Unavailable(
                f"the system D-Bus ({where}) did not answer within {self.timeout_s:g} s"
            ) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise Unavailable(f"the system D-Bus is not available ({where}: {reason})") from exc
        except (AuthError, EOFError) as exc:
            # The bus's refusal text is its own business; the log has it.
            logger.warning("the system D-Bus (%s) refused the connection: %r", where, str(exc))
            raise Unavailable(f"the system D-Bus ({where}) refused the connection") from exc
        except InvalidAddressError as exc:
            raise Unavailable(f"the system D-Bus address {address!r} is invalid: {exc}") from exc
        logger.debug("connected to the system D-Bus at %s as %s", where, bus.unique_name)
        self._bus, self._bus_loop = bus, asyncio.get_running_loop()
        watcher = asyncio.create_task(self._watch(bus))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return bus

    async def _watch(self, bus: MessageBus) -> None:
        """Forget the connection as soon as it drops, so the next use makes a new one."""
        try:
            await disconnected(bus)
        except Exception as exc:
            logger.info("the system D-Bus connection dropped: %r", exc)
        self.forget(bus)

    def forget(self, bus: MessageBus) -> None:
        """Stop using ``bus`` (it dropped, or a call found it broken)."""
        if self._bus is bus:
            self._bus = self._bus_loop = None
        if self._on_lost is not None:
            self._on_lost(bus)

    async def close(self) -> None:
        """Disconnect; a later use connects again."""
        loop = asyncio.get_running_loop()
        connecting, self._connecting = self._connecting, None
        if connecting is not None and connecting.get_loop() is loop and not connecting.done():
            connecting.cancel()
            await asyncio.wait([connecting])
        bus, bus_loop = self._bus, self._bus_loop
        self._bus = self._bus_loop = None
        if bus is not None:
            bus.disconnect()
            if bus_loop is loop:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_GRACE_S):
                        await disconnected(bus)
        for watcher in [watcher for watcher in self._watchers if watcher.get_loop() is loop]:
            watcher.cancel()


async def match_rule(bus: MessageBus, rule: str, *, timeout_s: float, remove: bool = False) -> None:
    """Ask the bus to pass ``bus`` the signals ``rule`` matches (``remove``: no longer).
    :class:`~hostcore.errors.Unavailable` when the bus refuses or does not answer in time."""
    member = "RemoveMatch" if remove else "AddMatch"
    message = Message(
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member=member,
        signature="s",
        body=[rule],
    )
    try:
        async with asyncio.timeout(timeout_s):
            reply = await bus.call(message)
    except TimeoutError:
        raise Unavailable(f"the system D-Bus did not answer {member} in time") from None
    if reply is None or reply.message_type is MessageType.ERROR:
        raise Unavailable(f"the system D-Bus refused {member} ({reply and reply.error_name})")


def logged(error: HostcoreError, reply: Message) -> HostcoreError:
    """``error``, after logging the daemon's message that its detail leaves out.

    A refusal the request caused (a bad argument, an unknown object, a state in the
    way) is routine, so DEBUG; anything else says the host or hostcore needs a look.
    """
    if isinstance(error, BadRequest | NotFound | Conflict):
        level = logging.DEBUG
    elif reply.error_name in _NOT_RUNNING:
        level = logging.INFO  # the host's state, said in the answer; no fault of anyone's
    else:
        level = logging.WARNING
    text = str(reply.body[0]) if reply.body else ""
    logger.log(level, "%s; the daemon said %s: %r", error.detail, reply.error_name, text)
    return error


async def disconnected(bus: MessageBus) -> None:
    """Wait until ``bus`` disconnects; raises what broke it, if anything did."""
    # Shielded: dbus-fast awaits its one disconnect future directly, so a waiter that is
    # cancelled would cancel that future for every other waiter (close() among them).
    await asyncio.shield(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]  # dbus-fast leaves it unannotated


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
