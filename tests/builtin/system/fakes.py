# ruff: noqa: N802 - the fakes' methods are D-Bus members, named as the real daemons name them
"""Fake systemd, logind, hostnamed and timedated on a private D-Bus daemon.

The fakes speak the real interfaces (names, paths, signatures, error names) for
the parts hostcore uses, record every call and never touch the host. They run
on their own event loop in a thread, so they answer both async tests and
synchronous ``TestClient`` tests, whose app runs on yet another loop.

Each daemon has its own connection, as on a real host, so one can be absent
(never connected) or unresponsive (its connection swallows method calls)
while the others answer.

Also here: ``ScriptedRunner``, a runner that answers journalctl from a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

from dbus_fast import (
    BusType,
    DBusError,
    Message,
    MessageType,
    NameFlag,
    PropertyAccess,
    RequestNameReply,
)
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from hostcore.config import RunnerSettings
from hostcore.runner import CommandResult, Runner

T = TypeVar("T")
NoOutput = Annotated[None, DBusSignature("")]

SERVICE_KEYS = ("systemd1", "login1", "hostname1", "timedate1")
# Bounds every wait on the daemon or the fakes' thread, so a broken fixture fails, not hangs.
STARTUP_TIMEOUT_S = 5.0

INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
NOT_AUTHORIZED = "org.freedesktop.PolicyKit1.Error.NotAuthorized"

# 2024-05-01T12:00:00Z, in the microseconds D-Bus uses for timestamps.
FIXED_NOW_USEC = 1_714_564_800_000_000


# --- the private bus daemon ---------------------------------------------------------

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """A ``dbus-daemon`` of our own on a fixed socket path, so it can be restarted in place.

    No service directories are configured: a name nobody owns is
    ``ServiceUnknown`` at once, never an activation attempt.
    """

    def __init__(self) -> None:
        # A short directory: a unix socket path must fit in 108 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="hc-dbus-"))
        self.socket = self.directory / "system_bus_socket"
        self.config = self.directory / "bus.conf"
        self.config.write_text(_BUS_CONFIG.format(socket=self.socket))
        self.address = f"unix:path={self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the daemon; its address, as it printed it but without the guid."""
        executable = shutil.which("dbus-daemon")
        if executable is None:
            raise RuntimeError("dbus-daemon is not installed")
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [executable, f"--config-file={self.config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        printed = self._read_address_line(self.process)
        address = printed.split(",guid=")[0]
        if address != self.address:
            self.stop()
            raise RuntimeError(f"dbus-daemon printed {printed!r}, expected {self.address!r}")
        return address

    @staticmethod
    def _read_address_line(process: subprocess.Popen[bytes]) -> str:
        assert process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
            if not ready:
                process.kill()
                process.wait(STARTUP_TIMEOUT_S)
                raise RuntimeError("dbus-daemon did not print its address in time")
            chunk = os.read(process.stdout.fileno(), 256)
            if not chunk:
                process.wait(STARTUP_TIMEOUT_S)
                raise RuntimeError(f"dbus-daemon exited with {process.returncode}")
            line += chunk
        return line.decode().strip()

    def stop(self) -> None:
        """Stop the daemon (its clients see their connections drop)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STARTUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STARTUP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> str:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- the fakes ----------------------------------------------------------------------


class FakeDaemon(ServiceInterface):
    """Records calls; ``errors[member]`` makes a method fail, ``delays[member]`` makes it slow.

    Delays must stay bounded: the fakes' loop cancels whatever still runs on stop.
    A method without output returns ``NoOutput``: dbus-fast reads ``-> None`` as
    a missing signature.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.errors: dict[str, tuple[str, str]] = {}
        self.delays: dict[str, float] = {}

    async def _enter(self, member: str, *args: Any) -> None:
        self.calls.append((member, args))
        if (delay := self.delays.get(member)) is not None:
            await asyncio.sleep(delay)
        if (error := self.errors.get(member)) is not None:
            raise DBusError(*error)

    def called(self, member: str) -> list[tuple[Any, ...]]:
        """The arguments of every call to ``member``, oldest first."""
        return [args for name, args in self.calls if name == member]


def unit_path(name: str) -> str:
    """The object path systemd gives a unit: every byte but [A-Za-z0-9] as _xx."""
    escaped = "".join(
        char if char.isascii() and char.isalnum() else f"_{ord(char):02x}" for char in name
    )
    return f"/org/freedesktop/systemd1/unit/{escaped}"


@dataclass
class UnitState:
    description: str
    active_state: str = "active"
    sub_state: str = "running"
    load_state: str = "loaded"
    unit_file_state: str = "enabled"
    active_enter_usec: int = FIXED_NOW_USEC
    main_pid: int = 0


def default_units() -> dict[str, UnitState]:
    return {
        "ssh.service": UnitState("OpenBSD Secure Shell server", main_pid=612),
        "nginx.service": UnitState(
            "A high performance web server",
            active_state="inactive",
            sub_state="dead",
            active_enter_usec=0,
        ),
        "systemd-timesyncd.service": UnitState(
            "Network Time Synchronization", active_state="failed", sub_state="failed"
        ),
        "fstrim.timer": UnitState("Discard unused blocks once a week", sub_state="waiting"),
        "ghost.service": UnitState(
            "ghost.service",
            active_state="inactive",
            sub_state="dead",
            load_state="not-found",
            unit_file_state="",
            active_enter_usec=0,
        ),
    }


class FakeUnit(ServiceInterface):
    """org.freedesktop.systemd1.Unit of one unit."""

    def __init__(self, unit_id: str, state: UnitState) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")
        self.unit_id = unit_id
        self.state = state

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> DBusStr:
        return self.unit_id

    @dbus_property(access=PropertyAccess.READ)
    def Description(self) -> DBusStr:
        return self.state.description

    @dbus_property(access=PropertyAccess.READ)
    def LoadState(self) -> DBusStr:
        return self.state.load_state

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> DBusStr:
        return self.state.active_state

    @dbus_property(access=PropertyAccess.READ)
    def SubState(self) -> DBusStr:
        return self.state.sub_state

    @dbus_property(access=PropertyAccess.READ)
    def UnitFileState(self) -> DBusStr:
        return self.state.unit_file_state

    @dbus_property(access=PropertyAccess.READ)
    def ActiveEnterTimestamp(self) -> DBusUInt64:
        return self.state.active_enter_usec


class FakeServiceUnit(ServiceInterface):
    """org.freedesktop.systemd1.Service of a .service unit."""

    def __init__(self, state: UnitState) -> None:
        super().__init__("org.freedesktop.systemd1.Service")
        self.state = state

    @dbus_property(access=PropertyAccess.READ)
    def MainPID(self) -> DBusUInt32:
        return self.state.main_pid


class FakeSystemd(FakeDaemon):
    """org.freedesktop.systemd1.Manager over a dict of units; jobs finish at once.

    As systemd does, a unit's ``PropertiesChanged`` signals (its state, its main pid)
    are emitted only while some client has called ``Subscribe``; :meth:`change` alters
    a unit as if it had changed by itself (a crash, a timer)."""

    def __init__(self, units: dict[str, UnitState] | None = None) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.units = default_units() if units is None else units
        self._jobs = 0
        self.subscribed = 0
        self._exported: dict[str, list[ServiceInterface]] = {}
        self._reloading = False

    def objects(self) -> list[tuple[str, ServiceInterface]]:
        """What to export besides the manager: each unit's object."""
        exported: list[tuple[str, ServiceInterface]] = []
        for name, state in self.units.items():
            interfaces: list[ServiceInterface] = [FakeUnit(name, state)]
            if name.endswith(".service"):
                interfaces.append(FakeServiceUnit(state))
            self._exported[name] = interfaces
            exported += [(unit_path(name), interface) for interface in interfaces]
        return exported

    @dbus_method()
    async def Subscribe(self) -> NoOutput:
        await self._enter("Subscribe")
        self.subscribed += 1

    @dbus_method()
    async def Unsubscribe(self) -> NoOutput:
        await self._enter("Unsubscribe")
        self.subscribed = max(0, self.subscribed - 1)

    @dbus_signal()
    def Reloading(self) -> DBusBool:
        return self._reloading

    def daemon_reload(self, units: dict[str, UnitState]) -> None:
        """``systemctl daemon-reload`` after ``units`` were installed: signalled before and
        after, as systemd does (to subscribed clients). New units get no object here, so
        install only units the test reads as not found."""
        if self.subscribed:
            self._reloading = True
            self.Reloading()
        self.units.update(units)
        if self.subscribed:
            self._reloading = False
            self.Reloading()

    def change(self, name: str, **fields: Any) -> None:
        """Set ``UnitState`` fields of a unit and signal it, as systemd would."""
        state = self._known(name)
        for field_name, value in fields.items():
            setattr(state, field_name, value)
        self._signal(name)

    def _signal(self, name: str) -> None:
        if not self.subscribed:
            return
        state = self.units[name]
        for interface in self._exported.get(name, ()):
            if isinstance(interface, FakeUnit):
                interface.emit_properties_changed(
                    {
                        "ActiveState": state.active_state,
                        "SubState": state.sub_state,
                        "ActiveEnterTimestamp": state.active_enter_usec,
                    }
                )
            elif isinstance(interface, FakeServiceUnit):
                interface.emit_properties_changed({"MainPID": state.main_pid})

    def _known(self, name: str) -> UnitState:
        state = self.units.get(name)
        if state is None:
            raise DBusError(NO_SUCH_UNIT, f"Unit {name} not found.")
        return state

    def _job(self) -> str:
        self._jobs += 1
        return f"/org/freedesktop/systemd1/job/{self._jobs}"

    @dbus_method()
    async def LoadUnit(self, name: DBusStr) -> DBusObjectPath:
        await self._enter("LoadUnit", name)
        self._known(name)
        return unit_path(name)

    @dbus_method()
    async def GetUnit(self, name: DBusStr) -> DBusObjectPath:
        await self._enter("GetUnit", name)
        if self._known(name).load_state == "not-found":
            raise DBusError(NO_SUCH_UNIT, f"Unit {name} not loaded.")
        return unit_path(name)

    def _run(self, name: str, *, active: bool) -> str:
        state = self._known(name)
        if state.load_state == "not-found":
            raise DBusError(NO_SUCH_UNIT, f"Unit {name} not found.")
        if state.load_state == "masked":
            raise DBusError("org.freedesktop.systemd1.UnitMasked", f"Unit {name} is masked.")
        if active:
            state.active_state, state.sub_state = "active", "running"
            state.active_enter_usec = int(time.time() * 1_000_000)
        else:
            state.active_state, state.sub_state = "inactive", "dead"
        self._signal(name)
        return self._job()

    @dbus_method()
    async def StartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        await self._enter("StartUnit", name, mode)
        return self._run(name, active=True)

    @dbus_method()
    async def StopUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        await self._enter("StopUnit", name, mode)
        return self._run(name, active=False)

    @dbus_method()
    async def RestartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        await self._enter("RestartUnit", name, mode)
        return self._run(name, active=True)


class FakeLogind(FakeDaemon):
    """org.freedesktop.login1.Manager: records reboots and power-offs, does nothing."""

    SHUTDOWN_TYPES = frozenset({"reboot", "poweroff", "halt", "dry-reboot", "dry-poweroff"})

    def __init__(self) -> None:
        super().__init__("org.freedesktop.login1.Manager")
        self.scheduled: tuple[str, int] | None = None

    @dbus_method()
    async def Reboot(self, interactive: DBusBool) -> NoOutput:
        await self._enter("Reboot", interactive)

    @dbus_method()
    async def PowerOff(self, interactive: DBusBool) -> NoOutput:
        await self._enter("PowerOff", interactive)

    @dbus_method()
    async def ScheduleShutdown(self, kind: DBusStr, usec: DBusUInt64) -> NoOutput:
        await self._enter("ScheduleShutdown", kind, usec)
        if kind not in self.SHUTDOWN_TYPES:
            raise DBusError(INVALID_ARGS, f"Unsupported shutdown type: {kind}")
        self.scheduled = (kind, usec)

    @dbus_method()
    async def CancelScheduledShutdown(self) -> DBusBool:
        await self._enter("CancelScheduledShutdown")
        cancelled, self.scheduled = self.scheduled is not None, None
        return cancelled


_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class FakeHostnamed(FakeDaemon):
    """org.freedesktop.hostname1; as hostnamed does, a name it sets is signalled
    (``PropertiesChanged``) before the call is answered."""

    def __init__(self) -> None:
        super().__init__("org.freedesktop.hostname1")
        self.hostname = "device"
        self.static_hostname = "device"
        self.pretty_hostname = ""

    @dbus_property(access=PropertyAccess.READ)
    def Hostname(self) -> DBusStr:
        return self.hostname

    @dbus_property(access=PropertyAccess.READ)
    def StaticHostname(self) -> DBusStr:
        return self.static_hostname

    @dbus_property(access=PropertyAccess.READ)
    def PrettyHostname(self) -> DBusStr:
        return self.pretty_hostname

    @staticmethod
    def _check(name: str, which: str) -> None:
        if not _HOSTNAME.match(name):
            raise DBusError(INVALID_ARGS, f"Invalid {which}hostname '{name}'")

    @dbus_method()
    async def SetStaticHostname(self, name: DBusStr, interactive: DBusBool) -> NoOutput:
        await self._enter("SetStaticHostname", name, interactive)
        self._check(name, "static ")
        self.static_hostname = name
        self.emit_properties_changed({"StaticHostname": name})

    @dbus_method()
    async def SetHostname(self, name: DBusStr, interactive: DBusBool) -> NoOutput:
        await self._enter("SetHostname", name, interactive)
        self._check(name, "")
        self.hostname = name
        self.emit_properties_changed({"Hostname": name})


class FakeTimedated(FakeDaemon):
    """org.freedesktop.timedate1 with a few installed time zones and no RTC by default.

    As timedated does, it signals the settings it changes (Timezone, LocalRTC, NTP),
    never NTPSynchronized, CanNTP or the clocks."""

    ZONES = frozenset({"UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"})

    def __init__(self) -> None:
        super().__init__("org.freedesktop.timedate1")
        self.timezone = "UTC"
        self.local_rtc = False
        self.can_ntp = True
        self.ntp = True
        self.ntp_synchronized = True
        self.rtc_usec = 0

    @dbus_property(access=PropertyAccess.READ)
    def Timezone(self) -> DBusStr:
        return self.timezone

    @dbus_property(access=PropertyAccess.READ)
    def LocalRTC(self) -> DBusBool:
        return self.local_rtc

    @dbus_property(access=PropertyAccess.READ)
    def CanNTP(self) -> DBusBool:
        return self.can_ntp

    @dbus_property(access=PropertyAccess.READ)
    def NTP(self) -> DBusBool:
        return self.ntp

    @dbus_property(access=PropertyAccess.READ)
    def NTPSynchronized(self) -> DBusBool:
        return self.ntp_synchronized

    @dbus_property(access=PropertyAccess.READ)
    def TimeUSec(self) -> DBusUInt64:
        return int(time.time() * 1_000_000)

    @dbus_property(access=PropertyAccess.READ)
    def RTCTimeUSec(self) -> DBusUInt64:
        return self.rtc_usec

    @dbus_method()
    async def SetTimezone(self, timezone: DBusStr, interactive: DBusBool) -> NoOutput:
        await self._enter("SetTimezone", timezone, interactive)
        if timezone not in self.ZONES:
            raise DBusError(INVALID_ARGS, f"Invalid or not installed time zone '{timezone}'")
        self.timezone = timezone
        self.emit_properties_changed({"Timezone": timezone})


# --- running them -------------------------------------------------------------------


@dataclass
class _Daemon:
    key: str
    bus_name: str
    path: str
    interface: FakeDaemon
    extra: Callable[[], list[tuple[str, ServiceInterface]]] = field(default=list)


class OnItsOwnLoop:
    """A fake daemon (or several) served by an event loop on a thread of its own, as a
    real daemon answers from another process: ``start()`` runs ``_connect()`` there,
    ``stop()`` runs ``_disconnect()`` and ends the thread (safe to call twice)."""

    thread_name = "fake-dbus"

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(STARTUP_TIMEOUT_S):
            raise RuntimeError(f"the loop of {self.thread_name} did not start")
        try:
            self._run(self._connect())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._disconnect())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STARTUP_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(STARTUP_TIMEOUT_S)


class FakeServices(OnItsOwnLoop):
    """The four fakes, each on its own connection to ``address``, served from a thread.

    ``absent`` names (``"systemd1"``, ``"login1"``, ``"hostname1"``,
    ``"timedate1"``) are never connected. A name in ``unresponsive`` (a set
    that may change while running) gets no answer to any method call; each such
    call is noted in ``swallowed``, so a test can wait until one is hanging.
    """

    thread_name = "fake-dbus-services"

    def __init__(
        self,
        address: str,
        *,
        unresponsive: Collection[str] = (),
        absent: Collection[str] = (),
        units: dict[str, UnitState] | None = None,
    ) -> None:
        unknown = (set(unresponsive) | set(absent)) - set(SERVICE_KEYS)
        if unknown:
            raise ValueError(f"unknown fake services {sorted(unknown)}; known: {SERVICE_KEYS}")
        self.address = address
        self.unresponsive: set[str] = set(unresponsive)
        # (service key, member) of each call an unresponsive fake received and never answered.
        self.swallowed: list[tuple[str, str]] = []
        # (service key, member) of every method call a fake received, Properties' included.
        self.received: list[tuple[str, str]] = []
        self.absent: frozenset[str] = frozenset(absent)
        self.systemd = FakeSystemd(units)
        self.logind = FakeLogind()
        self.hostnamed = FakeHostnamed()
        self.timedated = FakeTimedated()
        self._daemons = [
            _Daemon(
                "systemd1",
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
                self.systemd,
                self.systemd.objects,
            ),
            _Daemon("login1", "org.freedesktop.login1", "/org/freedesktop/login1", self.logind),
            _Daemon(
                "hostname1",
                "org.freedesktop.hostname1",
                "/org/freedesktop/hostname1",
                self.hostnamed,
            ),
            _Daemon(
                "timedate1",
                "org.freedesktop.timedate1",
                "/org/freedesktop/timedate1",
                self.timedated,
            ),
        ]
        self._buses: list[MessageBus] = []

    def daemon_reload(self, units: dict[str, UnitState]) -> None:
        """A daemon reload that installs ``units``, in the fakes' own thread."""

        async def reload() -> None:
            self.systemd.daemon_reload(units)

        self._run(reload())

    def change_unit(self, name: str, **fields: Any) -> None:
        """Change a unit as if by itself, in the fakes' own thread (systemd signals it)."""

        async def change() -> None:
            self.systemd.change(name, **fields)

        self._run(change())

    def property_reads(self, key: str) -> int:
        """How many times ``key``'s properties were read all at once (GetAll)."""
        return self.received.count((key, "GetAll"))

    def change_names(self, **names: str) -> None:
        """Change hostnamed's names as another client would through it (it signals them):
        ``hostname``, ``static_hostname``, ``pretty_hostname``."""
        properties = {
            "hostname": "Hostname",
            "static_hostname": "StaticHostname",
            "pretty_hostname": "PrettyHostname",
        }

        async def change() -> None:
            for field_name, value in names.items():
                setattr(self.hostnamed, field_name, value)
            self.hostnamed.emit_properties_changed({properties[n]: v for n, v in names.items()})

        self._run(change())

    def change_time_settings(self, **settings: Any) -> None:
        """Change what timedated signals as another client would through it:
        ``timezone``, ``local_rtc``, ``ntp``."""
        properties = {"timezone": "Timezone", "local_rtc": "LocalRTC", "ntp": "NTP"}

        async def change() -> None:
            for field_name, value in settings.items():
                setattr(self.timedated, field_name, value)
            self.timedated.emit_properties_changed({properties[n]: v for n, v in settings.items()})

        self._run(change())

    async def _connect(self) -> None:
        for daemon in self._daemons:
            if daemon.key in self.absent:
                continue
            bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
            self._buses.append(bus)
            bus.add_message_handler(self._muter(daemon.key))
            bus.export(daemon.path, daemon.interface)
            for path, interface in daemon.extra():
                bus.export(path, interface)
            reply = await bus.request_name(daemon.bus_name, NameFlag.DO_NOT_QUEUE)
            if reply is not RequestNameReply.PRIMARY_OWNER:
                raise RuntimeError(f"{daemon.bus_name} is already taken on {self.address}")

    def _muter(self, key: str) -> Callable[[Message], bool]:
        def swallow(message: Message) -> bool:
            if message.message_type is MessageType.METHOD_CALL:
                self.received.append((key, str(message.member)))
            # True marks the message handled, so no reply is ever sent.
            if message.message_type is MessageType.METHOD_CALL and key in self.unresponsive:
                self.swallowed.append((key, str(message.member)))
                return True
            return False

        return swallow

    async def _disconnect(self) -> None:
        buses, self._buses = self._buses, []
        for bus in buses:
            bus.disconnect()
        for bus in buses:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        # Slow fake methods (delays) may still be sleeping; they must not outlive the test.
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


FakeServicesFactory = Callable[..., FakeServices]
"""``fake_services_factory``: ``make(unresponsive=..., absent=..., units=...)`` -> started fakes."""


def bus_calls(services: FakeServices) -> int:
    """How many method calls the four fakes have answered."""
    return sum(
        len(fake.calls)
        for fake in (services.systemd, services.logind, services.hostnamed, services.timedated)
    )


class ScriptedRunner(Runner):
    """Answers every command with one result (or error) and remembers what it was asked."""

    def __init__(
        self,
        stdout: bytes = b"",
        *,
        returncode: int = 0,
        stderr: bytes = b"",
        error: Exception | None = None,
    ) -> None:
        super().__init__(RunnerSettings())
        self.stdout, self.returncode, self.stderr, self.error = stdout, returncode, stderr, error
        self.commands: list[tuple[list[str], float | None]] = []

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = False,
    ) -> CommandResult:
        self.commands.append((list(argv), timeout_s))
        if self.error is not None:
            raise self.error
        return CommandResult(tuple(argv), self.returncode, self.stdout, self.stderr, 0.01)
