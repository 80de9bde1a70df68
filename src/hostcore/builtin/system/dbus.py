"""Typed clients for systemd, logind, hostnamed and timedated on the system D-Bus.

:class:`SystemBus` owns one connection to the system bus, made lazily on first
use (to ``$DBUS_SYSTEM_BUS_ADDRESS`` when set, as every D-Bus client does) and
made again after it drops. Calls share the connection without a lock, so a slow
daemon holds up only the requests that wait for it, and every call is bounded
by a timeout.

What can go wrong becomes a hostcore error naming what is missing: no bus, a
daemon not running or not answering in time → :class:`~hostcore.errors.Unavailable`;
an unknown unit → :class:`~hostcore.errors.NotFound`; arguments a daemon rejects
→ :class:`~hostcore.errors.BadRequest`; a polkit or bus policy refusal →
:class:`~hostcore.errors.Forbidden`; any other D-Bus error → :class:`DBusCallFailed`.
The answer names the daemon, the call and the D-Bus error name; the daemon's
own message goes to the log only, since it quotes arguments, paths and state
of the host.

Callers validate names (units, hostnames, time zones) before they get here;
object paths always come from the daemon (``LoadUnit``), never from input.

Reads are answered from memory where the daemons' signals keep it current: a unit's
state once read (systemd's ``PropertiesChanged`` after ``Subscribe``), hostnamed's
and timedated's answers (their ``PropertiesChanged``). Memory is only trusted on the
connection the signals arrive on; a read a signal overtakes is answered but not
kept; the caller's ``key`` (the files a daemon reads, which others may change
without it) must match; see :meth:`SystemBus.hostname` and
:meth:`SystemBus.time_settings` for what each keeps and for how long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from pydantic import BaseModel, Field

from hostcore.dbus import (
    PROPERTIES_INTERFACE,
    DBusService,
)
from hostcore.dbus_connection import BusConnection, match_rule
from hostcore.errors import (
    HostcoreError,
    NotFound,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0

UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"

_USEC_PER_S = 1_000_000
# Closing waits this long for the bus to acknowledge; the socket is shut down either way.
# The state changes of every unit, which systemd signals to subscribed clients.
UNIT_SIGNALS = (
    "type='signal',sender='org.freedesktop.systemd1',"
    "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
    "path_namespace='/org/freedesktop/systemd1/unit'"
)
# The manager's: a unit loaded or gone, unit files changed, a daemon reload.
MANAGER_SIGNALS = (
    "type='signal',sender='org.freedesktop.systemd1',"
    "interface='org.freedesktop.systemd1.Manager',path='/org/freedesktop/systemd1'"
)
_MANAGER_CHANGES = frozenset({"UnitNew", "UnitRemoved", "UnitFilesChanged", "Reloading"})
# hostnamed's and timedated's: a name, the time zone, NTP or the RTC mode changed.
HOSTNAMED_SIGNALS = (
    "type='signal',sender='org.freedesktop.hostname1',"
    "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
    "path='/org/freedesktop/hostname1'"
)
TIMEDATED_SIGNALS = (
    "type='signal',sender='org.freedesktop.timedate1',"
    "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
    "path='/org/freedesktop/timedate1'"
)
SIGNAL_RULES = (UNIT_SIGNALS, MANAGER_SIGNALS, HOSTNAMED_SIGNALS, TIMEDATED_SIGNALS)
# timedated signals its settings (Timezone, LocalRTC, NTP), not NTPSynchronized, CanNTP
# or the hardware clock, which change without it: its answer is read again this often.
TIME_MAX_AGE_S = 10.0
# A property systemd signals, and the UnitRead field it sets (with its conversion).
_UNIT_FIELDS: dict[str, tuple[str, Any]] = {
    "ActiveState": ("active_state", str),
    "SubState": ("sub_state", str),
    "LoadState": ("load_state", str),
    "Description": ("description", str),
    "UnitFileState": ("unit_file_state", lambda value: str(value) or None),
    "ActiveEnterTimestamp": ("since", lambda value: _epoch_or_none(int(value))),
    "MainPID": ("main_pid", lambda value: int(value) or None),
}


@dataclass(frozen=True)
class _Kept:
    """A daemon's answer kept in memory: what it was read for, and when (monotonic)."""

    key: Hashable
    props: dict[str, Any]
    read_at: float


SYSTEMD = DBusService(
    "systemd",
    "org.freedesktop.systemd1",
    "/org/freedesktop/systemd1",
    "org.freedesktop.systemd1.Manager",
    # Only systemd's own names mean "no such unit": a daemon started on demand can
    # fail to activate with NoSuchUnit too, and that means the daemon is missing.
    not_found=frozenset(
        {
            "org.freedesktop.systemd1.NoSuchUnit",
            "org.freedesktop.systemd1.NoSuchJob",
            "org.freedesktop.DBus.Error.UnknownObject",
        }
    ),
)
LOGIND = DBusService(
    "logind",
    "org.freedesktop.login1",
    "/org/freedesktop/login1",
    "org.freedesktop.login1.Manager",
)
HOSTNAMED = DBusService(
    "hostnamed",
    "org.freedesktop.hostname1",
    "/org/freedesktop/hostname1",
    "org.freedesktop.hostname1",
)
TIMEDATED = DBusService(
    "timedated",
    "org.freedesktop.timedate1",
    "/org/freedesktop/timedate1",
    "org.freedesktop.timedate1",
)
# The daemons whose answers are kept, by the object path their signals come from.
_KEPT_DAEMONS = {HOSTNAMED.path: HOSTNAMED.name, TIMEDATED.path: TIMEDATED.name}


# --- schemas ------------------------------------------------------------------------


class UnitRead(BaseModel):
    """A systemd unit's state, as ``systemctl status`` shows it."""

    name: str = Field(description="The unit's primary name (an alias resolves to it).")
    description: str
    load_state: str = Field(description="loaded, masked, error, ...")
    active_state: str = Field(description="active, inactive, failed, activating, ...")
    sub_state: str = Field(description="running, exited, dead, ...: depends on the unit type.")
    unit_file_state: str | None = Field(
        None, description="enabled, disabled, static, ...; None when systemd does not say."
    )
    since: float | None = Field(
        description="When the unit last entered the active state (epoch seconds); None if never."
    )
    main_pid: int | None = Field(
        None, description="The main process of a service; None when there is none."
    )


class UnitJobRead(BaseModel):
    """A start, stop or restart queued in systemd."""

    unit: str
    action: Literal["start", "stop", "restart"]
    job: str = Field(description="The job's D-Bus object path.")


class PowerActionRead(BaseModel):
    """A reboot or power-off logind accepted."""

    action: Literal["reboot", "poweroff"]
    delay_s: float
    at: float = Field(description="When it happens (epoch seconds).")


class HostnameRead(BaseModel):
    hostname: str = Field(description="The hostname in use (the kernel's).")
    static_hostname: str | None = Field(description="The one in /etc/hostname; None if unset.")
    pretty_hostname: str | None = Field(description="A free-form name for people; None if unset.")


class TimeRead(BaseModel):
    timezone: str
    local_rtc: bool = Field(description="Whether the hardware clock keeps local time, not UTC.")
    can_ntp: bool = Field(description="Whether an NTP service is installed.")
    ntp: bool = Field(description="Whether NTP synchronisation is enabled.")
    ntp_synchronized: bool = Field(description="Whether the kernel reports the clock in sync.")
    time: float = Field(description="The system clock (epoch seconds).")
    rtc_time: float | None = Field(description="The hardware clock; None when there is none.")


# --- errors -------------------------------------------------------------------------


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


def _epoch_or_none(usec: int) -> float | None:
    return usec / _USEC_PER_S if usec else None


# --- the bus ------------------------------------------------------------------------


class SystemBus:
    """The calls hostcore makes to the system daemons, over one lazily made, self-healing
    connection (:class:`hostcore.dbus_connection.BusConnection`).

    ``address`` overrides ``$DBUS_SYSTEM_BUS_ADDRESS``, which is read at each
    (re)connection. ``timeout_s`` bounds every call, connecting included.

    A connection belongs to the event loop that made it: :meth:`close` it
    before that loop ends (the plugin's shutdown does), and the next loop
    connects afresh. Used from a new loop without that, it still connects
    again, but the old socket is only freed when collected.
    """

    def __init__(self, *, address: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self._bus_connection = BusConnection(
            address=address, timeout_s=timeout_s, on_lost=self._forget
        )
        # Units as systemd's signals keep them, by object path, while subscribed on
        # ``_subscribed`` (a connection); cleared when that connection goes.
        self._units: dict[str, UnitRead] = {}
        self._unit_paths: dict[str, str] = {}
        self._reading: dict[str, bool] = {}  # path -> whether a signal overtook the read
        self._missing: set[str] = set()  # names systemd knows no unit of
        self._manager_changes = 0  # manager signals seen: a unit may exist since
        self._subscribed: MessageBus | None = None
        # hostnamed's and timedated's answers, by bus name, while their signals reach
        # this process on ``_matched``; a signal bumps the daemon's generation.
        self._kept: dict[str, _Kept] = {}
        self._generations: dict[str, int] = {}
        self._matched: MessageBus | None = None
        self._handled: MessageBus | None = None  # the connection _on_message listens on
        self._refused: MessageBus | None = None  # the connection a subscription failed on
        self._subscribing: asyncio.Task[bool] | None = None

    @property
    def address(self) -> str:
        return self._bus_connection.address

    @property
    def connected(self) -> bool:
        """Whether a connection is up (as far as this process has noticed yet)."""
        return self._bus_connection.connected

    # -- connection --

    async def _connection(self) -> MessageBus:
        return await self._bus_connection.get()

    def _forget(self, bus: MessageBus) -> None:
        """Drop what was kept for ``bus``, a connection that is gone."""
        if self._matched is bus:
            self._matched = None
            self._kept.clear()
        if self._subscribed is bus:
            self._subscribed = None
            self._units.clear()
            self._unit_paths.clear()
            self._missing.clear()

    async def close(self) -> None:
        """Disconnect; a later call connects again."""
        await self._bus_connection.close()

    # -- calls --

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
    ) -> list[Any]:
        """Call ``member`` on ``service`` (on its main object unless ``path``); the reply body."""
        return await self._bus_connection.call(
            service,
            member,
            signature,
            body,
            path=path,
            interface=interface,
            timeout_s=timeout_s,
        )

    async def get_properties(
        self, service: DBusService, interface: str, *, path: str | None = None
    ) -> dict[str, Any]:
        """Every property of ``interface`` on the object, as plain values."""
        (values,) = await self.call(
            service, "GetAll", "s", [interface], path=path, interface=PROPERTIES_INTERFACE
        )
        return {name: _unwrap(value) for name, value in values.items()}

    async def get_property(
        self, service: DBusService, interface: str, name: str, *, path: str | None = None
    ) -> Any:
        (value,) = await self.call(
            service, "Get", "ss", [interface, name], path=path, interface=PROPERTIES_INTERFACE
        )
        return _unwrap(value)

    # -- systemd --

    async def unit(self, name: str) -> UnitRead:
        """A unit's state; ``NotFound`` when systemd knows no such unit.

        Answered from memory while subscribed to systemd's signals (a unit read once is
        kept current by its ``PropertiesChanged``), else by asking systemd (three
        calls). A read that a change overtakes is answered but not kept."""
        subscribed = await self._subscription()
        path = self._unit_paths.get(name)
        if subscribed is not None:
            if path is not None and path in self._units:
                return self._units[path]
            if name in self._missing:
                raise _no_such_unit(name)
        changes = self._manager_changes
        try:
            path = await self._unit_path(name)
            self._reading[path] = False
            try:
                unit = await self._read_unit(name, path)
            finally:
                overtaken = self._reading.pop(path, True)
        except NotFound:
            # Kept while subscribed, unless a unit may have appeared meanwhile.
            if (
                subscribed is not None
                and self._subscribed is subscribed
                and self._manager_changes == changes
            ):
                self._missing.add(name)
            raise
        if subscribed is not None and self._subscribed is subscribed and not overtaken:
            self._unit_paths[name] = path
            self._units[path] = unit
        return unit

    def known_unit(self, name: str) -> UnitRead | None:
        """A unit as the signals keep it, without a call or a task: None when it has to
        be read (:meth:`unit`); ``NotFound`` when systemd knows no such unit."""
        subscribed = self._subscribed
        current = self._bus_connection.current
        if subscribed is None or subscribed is not current or not subscribed.connected:
            return None
        path = self._unit_paths.get(name)
        if path is not None and path in self._units:
            return self._units[path]
        if name in self._missing:
            raise _no_such_unit(name)
        return None

    async def _subscription(self) -> MessageBus | None:
        """The connection on which systemd's unit signals reach this process, subscribing
        once per connection; None when that cannot be had (every read asks systemd)."""
        try:
            bus = await self._connection()
        except HostcoreError:
            return None
        if self._subscribed is bus:
            return bus
        if self._refused is bus:
            return None  # refused on this connection: not asked again until the next one
        task = self._subscribing
        if task is None or task.done():
            task = self._subscribing = asyncio.ensure_future(self._subscribe(bus))
        return bus if await asyncio.shield(task) and self._subscribed is bus else None

    async def _subscribe(self, bus: MessageBus) -> bool:
        if self._handled is not bus:
            bus.add_message_handler(self._on_message)
            self._handled = bus
        try:
            async with asyncio.timeout(self.timeout_s):
                for rule in SIGNAL_RULES:
                    await match_rule(bus, rule, timeout_s=self.timeout_s)
                if self._bus_connection.current is bus:
                    # hostnamed's and timedated's signals arrive from here on, whether or
                    # not systemd takes the subscription below.
                    self._kept.clear()
                    self._matched = bus
                await self.call(SYSTEMD, "Subscribe")
        except (HostcoreError, TimeoutError, OSError, EOFError):
            logger.info("not subscribed to systemd's unit signals: units are read each time")
            self._refused = bus
            return False
        if self._bus_connection.current is bus:
            self._units.clear()
            self._unit_paths.clear()
            self._missing.clear()
            self._subscribed = bus
        return self._subscribed is bus

    def _on_message(self, message: Message) -> None:
        """A unit's PropertiesChanged: its cached state follows (invalidated: forgotten).
        A manager's signal that units came, went or were reloaded: every unit not found
        may exist now (and after a reload every unit is read again). hostnamed's or
        timedated's PropertiesChanged: its kept answer is forgotten."""
        if (
            message.message_type is MessageType.SIGNAL
            and message.member == "PropertiesChanged"
            and message.interface == PROPERTIES_INTERFACE
            and message.path in _KEPT_DAEMONS
        ):
            name = _KEPT_DAEMONS[str(message.path)]
            self._generations[name] = self._generations.get(name, 0) + 1
            self._kept.pop(name, None)
            return
        if (
            message.message_type is MessageType.SIGNAL
            and message.interface == SYSTEMD.interface
            and message.member in _MANAGER_CHANGES
        ):
            self._manager_changes += 1
            self._missing.clear()
            if message.member == "Reloading":
                self._units.clear()
            return
        if (
            message.message_type is not MessageType.SIGNAL
            or message.member != "PropertiesChanged"
            or message.interface != PROPERTIES_INTERFACE
            or not (message.path or "").startswith("/org/freedesktop/systemd1/unit/")
        ):
            return
        path = str(message.path)
        if path in self._reading:
            self._reading[path] = True
        unit = self._units.get(path)
        if unit is None:
            return
        try:
            _interface, changed, invalidated = message.body
            update = {}
            for name, value in changed.items():
                if name in _UNIT_FIELDS:
                    field, convert = _UNIT_FIELDS[name]
                    update[field] = convert(_unwrap(value))
        except (ValueError, TypeError, AttributeError):
            invalidated = True  # a signal not shaped as systemd's: read the unit again
        if invalidated:
            self._units.pop(path, None)
        elif update:
            self._units[path] = unit.model_copy(update=update)

    async def _read_unit(self, name: str, path: str) -> UnitRead:
        props = await self.get_properties(SYSTEMD, UNIT_INTERFACE, path=path)
        if props.get("LoadState") == "not-found":
            raise _no_such_unit(name)
        unit_id = str(props.get("Id") or name)
        main_pid: int | None = None
        if unit_id.endswith(".service"):
            pid = await self.get_property(SYSTEMD, SERVICE_INTERFACE, "MainPID", path=path)
            main_pid = int(pid) or None
        return UnitRead(
            name=unit_id,
            description=props["Description"],
            load_state=props["LoadState"],
            active_state=props["ActiveState"],
            sub_state=props["SubState"],
            unit_file_state=props.get("UnitFileState") or None,
            since=_epoch_or_none(props.get("ActiveEnterTimestamp", 0)),
            main_pid=main_pid,
        )

    async def _unit_path(self, name: str) -> str:
        # LoadUnit, unlike GetUnit, also answers for a unit not loaded right now.
        with _unit_not_found(name):
            (path,) = await self.call(SYSTEMD, "LoadUnit", "s", [name])
        return str(path)

    async def start_unit(self, name: str) -> UnitJobRead:
        return await self._unit_job("start", "StartUnit", name)

    async def stop_unit(self, name: str) -> UnitJobRead:
        return await self._unit_job("stop", "StopUnit", name)

    async def restart_unit(self, name: str) -> UnitJobRead:
        return await self._unit_job("restart", "RestartUnit", name)

    async def _unit_job(
        self, action: Literal["start", "stop", "restart"], member: str, name: str
    ) -> UnitJobRead:
        # "replace": the request wins over a queued job for the unit, as with systemctl.
        with _unit_not_found(name):
            (job,) = await self.call(SYSTEMD, member, "ss", [name, "replace"])
        return UnitJobRead(unit=name, action=action, job=str(job))

    # -- logind --

    async def reboot(self, delay_s: float = 0.0) -> PowerActionRead:
        """Reboot now, or schedule it ``delay_s`` seconds from now (cancellable in logind)."""
        return await self._shutdown("reboot", "Reboot", delay_s)

    async def power_off(self, delay_s: float = 0.0) -> PowerActionRead:
        """Power off now, or schedule it ``delay_s`` seconds from now."""
        return await self._shutdown("poweroff", "PowerOff", delay_s)

    async def _shutdown(
        self, action: Literal["reboot", "poweroff"], member: str, delay_s: float
    ) -> PowerActionRead:
        if delay_s < 0:
            raise ValueError(f"delay_s must not be negative, got {delay_s!r}")
        now = time.time()
        # logind answers once the shutdown job is queued; the host then stops its
        # services in order, so hostcore's graceful stop still sends this reply.
        if delay_s == 0:
            # interactive=False: never wait for a polkit password prompt.
            await self.call(LOGIND, member, "b", [False])
            return PowerActionRead(action=action, delay_s=0.0, at=now)
        at_usec = int((now + delay_s) * _USEC_PER_S)
        await self.call(LOGIND, "ScheduleShutdown", "st", [action, at_usec])
        return PowerActionRead(action=action, delay_s=delay_s, at=at_usec / _USEC_PER_S)

    # -- hostnamed and timedated --

    async def _watching(self) -> MessageBus | None:
        """The connection hostnamed's and timedated's signals reach this process on,
        subscribing once per connection; None when they do not (every read asks).
        Raises what stops a connection, as a call would."""
        await self._connection()
        await self._subscription()
        bus = self._bus_connection.current
        if bus is not None and self._matched is bus and bus.connected:
            return bus
        return None

    def _drop(self, service: DBusService) -> None:
        """Forget a daemon's kept answer (hostcore just changed it)."""
        self._generations[service.name] = self._generations.get(service.name, 0) + 1
        self._kept.pop(service.name, None)

    async def _properties(
        self, service: DBusService, key: Hashable, max_age_s: float | None = None
    ) -> _Kept:
        """The daemon's properties: kept ones while its signals reach this process, they
        were read for ``key`` and are younger than ``max_age_s``; else read (and kept,
        unless a signal overtook the read)."""
        watching = await self._watching()
        kept = self._kept.get(service.name)
        if (
            watching is not None
            and kept is not None
            and kept.key == key
            and (max_age_s is None or time.monotonic() - kept.read_at < max_age_s)
        ):
            return kept
        generation = self._generations.get(service.name, 0)
        props = await self.get_properties(service, service.interface)
        fresh = _Kept(key, props, time.monotonic())
        if (
            watching is not None
            and self._matched is watching
            and self._generations.get(service.name, 0) == generation
        ):
            self._kept[service.name] = fresh
        return fresh

    async def hostname(self, key: Hashable = None) -> HostnameRead:
        """The three names. Kept while hostnamed's signals arrive and ``key`` stays the
        same: the caller passes what hostnamed reads its answer from (the kernel's
        hostname, the files), which others may change without telling hostnamed."""
        props = (await self._properties(HOSTNAMED, key)).props
        return HostnameRead(
            hostname=props["Hostname"],
            static_hostname=props.get("StaticHostname") or None,
            pretty_hostname=props.get("PrettyHostname") or None,
        )

    async def set_hostname(self, name: str) -> HostnameRead:
        """Make ``name`` the static (persistent) and the running hostname."""
        self._drop(HOSTNAMED)
        await self.call(HOSTNAMED, "SetStaticHostname", "sb", [name, False])
        await self.call(HOSTNAMED, "SetHostname", "sb", [name, False])
        self._drop(HOSTNAMED)
        return await self.hostname()

    async def time_settings(self, key: Hashable = None) -> TimeRead:
        """The clock and its settings. timedated's answer is kept while its signals
        arrive, ``key`` (the caller's view of /etc/localtime) stays the same, and for
        at most :data:`TIME_MAX_AGE_S` (what it does not signal). ``time`` is always this
        process's clock; the hardware clock is advanced by the time since it was read."""
        kept = await self._properties(TIMEDATED, key, TIME_MAX_AGE_S)
        props = kept.props
        rtc = _epoch_or_none(props.get("RTCTimeUSec", 0))
        return TimeRead(
            timezone=props["Timezone"],
            local_rtc=props["LocalRTC"],
            can_ntp=props["CanNTP"],
            ntp=props["NTP"],
            ntp_synchronized=props["NTPSynchronized"],
            time=time.time(),
            rtc_time=None if rtc is None else rtc + (time.monotonic() - kept.read_at),
        )

    async def set_timezone(self, timezone: str) -> TimeRead:
        self._drop(TIMEDATED)
        await self.call(TIMEDATED, "SetTimezone", "sb", [timezone, False])
        self._drop(TIMEDATED)
        return await self.time_settings()


def _no_such_unit(name: str) -> NotFound:
    return NotFound(f"unit {name!r} not found")


@contextlib.contextmanager
def _unit_not_found(name: str) -> Iterator[None]:
    """Word systemd's "no such unit" by the unit's (validated) name."""
    try:
        yield
    except NotFound:
        raise _no_such_unit(name) from None
