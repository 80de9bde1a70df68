"""The system D-Bus clients against fake daemons on a private bus."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hostcore.builtin.system import dbus as dbus_module
from hostcore.builtin.system.dbus import (
    HOSTNAMED,
    LOGIND,
    SYSTEMD,
    TIMEDATED,
    SystemBus,
)
from hostcore.dbus import DBusCallFailed, DBusService, dbus_error
from hostcore.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HostcoreError,
    NotFound,
    Unavailable,
)
from tests.builtin.system.fakes import (
    ACCESS_DENIED,
    FIXED_NOW_USEC,
    NOT_AUTHORIZED,
    FakeServices,
    FakeServicesFactory,
    PrivateBus,
    UnitState,
)
from tests.helpers import wait_until

# A call timeout no test waits out: where the bus must fail for another reason, at once.
NEVER_S = 3600.0
# Bounds a wait that only a hang would reach.
HANG_GUARD_S = 30.0


@pytest.fixture
async def system_bus() -> AsyncIterator[SystemBus]:
    bus = SystemBus(timeout_s=2.0)
    yield bus
    await bus.close()


# --- systemd ------------------------------------------------------------------------


async def test_unit_reads_the_state_of_a_running_service(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    unit = await system_bus.unit("ssh.service")

    assert unit.model_dump() == {
        "name": "ssh.service",
        "description": "OpenBSD Secure Shell server",
        "load_state": "loaded",
        "active_state": "active",
        "sub_state": "running",
        "unit_file_state": "enabled",
        "since": FIXED_NOW_USEC / 1_000_000,
        "main_pid": 612,
    }
    assert fake_services.systemd.called("LoadUnit") == [("ssh.service",)]


async def test_unit_never_active_has_no_since_and_no_pid(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    unit = await system_bus.unit("nginx.service")

    assert (unit.active_state, unit.sub_state) == ("inactive", "dead")
    assert unit.since is None
    assert unit.main_pid is None


async def test_unit_that_is_not_a_service_has_no_main_pid(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    unit = await system_bus.unit("fstrim.timer")

    assert unit.sub_state == "waiting"
    assert unit.main_pid is None


async def test_unit_unknown_to_systemd_is_not_found(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    with pytest.raises(NotFound, match=r"unit 'nosuch\.service' not found"):
        await system_bus.unit("nosuch.service")


async def test_unit_without_a_unit_file_is_not_found(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    # Real systemd loads any name and reports LoadState "not-found".
    with pytest.raises(NotFound, match=r"'ghost\.service' not found"):
        await system_bus.unit("ghost.service")


@pytest.mark.parametrize(
    ("method", "member", "name", "active_state"),
    [
        ("start_unit", "StartUnit", "nginx.service", "active"),
        ("stop_unit", "StopUnit", "ssh.service", "inactive"),
        ("restart_unit", "RestartUnit", "systemd-timesyncd.service", "active"),
    ],
)
async def test_unit_jobs_are_queued_with_mode_replace(
    fake_services: FakeServices,
    system_bus: SystemBus,
    method: str,
    member: str,
    name: str,
    active_state: str,
) -> None:
    job = await getattr(system_bus, method)(name)

    assert job.unit == name
    assert job.action == method.removesuffix("_unit")
    assert job.job == "/org/freedesktop/systemd1/job/1"
    assert fake_services.systemd.called(member) == [(name, "replace")]
    assert (await system_bus.unit(name)).active_state == active_state


async def test_starting_an_unknown_unit_is_not_found(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    with pytest.raises(NotFound) as caught:
        await system_bus.start_unit("nosuch.service")

    assert caught.value.detail == "unit 'nosuch.service' not found"


async def test_starting_a_masked_unit_is_a_conflict(
    fake_services_factory: FakeServicesFactory, system_bus: SystemBus
) -> None:
    fake_services_factory(units={"cups.service": UnitState("CUPS", load_state="masked")})

    with pytest.raises(Conflict) as caught:
        await system_bus.start_unit("cups.service")

    assert caught.value.detail == ("systemd refused StartUnit: org.freedesktop.systemd1.UnitMasked")


async def test_a_polkit_refusal_is_forbidden(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    fake_services.systemd.errors["StopUnit"] = (
        NOT_AUTHORIZED,
        "Interactive authentication required.",
    )

    with pytest.raises(Forbidden) as caught:
        await system_bus.stop_unit("ssh.service")

    assert caught.value.detail == (
        "systemd refused StopUnit: org.freedesktop.PolicyKit1.Error.NotAuthorized"
    )


# --- logind -------------------------------------------------------------------------


async def test_reboot_now_asks_logind_without_interaction(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    before = time.time()

    action = await system_bus.reboot(0)

    assert fake_services.logind.calls == [("Reboot", (False,))]
    assert action.action == "reboot"
    assert action.delay_s == 0
    assert before <= action.at <= time.time()


async def test_power_off_now(fake_services: FakeServices, system_bus: SystemBus) -> None:
    action = await system_bus.power_off()

    assert fake_services.logind.calls == [("PowerOff", (False,))]
    assert action.action == "poweroff"


@pytest.mark.parametrize(("method", "kind"), [("reboot", "reboot"), ("power_off", "poweroff")])
async def test_a_delay_schedules_the_shutdown_in_logind(
    fake_services: FakeServices, system_bus: SystemBus, method: str, kind: str
) -> None:
    before = time.time()

    action = await getattr(system_bus, method)(90)

    assert fake_services.logind.scheduled is not None
    scheduled_kind, usec = fake_services.logind.scheduled
    assert scheduled_kind == kind
    assert before + 90 <= usec / 1_000_000 <= time.time() + 90
    assert action.at == usec / 1_000_000
    assert action.delay_s == 90
    assert fake_services.logind.called("Reboot") == []
    assert fake_services.logind.called("PowerOff") == []


async def test_a_negative_delay_is_a_programming_error(system_bus: SystemBus) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        await system_bus.reboot(-1)


# --- hostnamed ----------------------------------------------------------------------


async def test_hostname_reads_all_three_names(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    fake_services.hostnamed.pretty_hostname = "Kitchen Panel"

    names = await system_bus.hostname()

    assert names.model_dump() == {
        "hostname": "device",
        "static_hostname": "device",
        "pretty_hostname": "Kitchen Panel",
    }


async def test_unset_names_are_none(fake_services: FakeServices, system_bus: SystemBus) -> None:
    fake_services.hostnamed.static_hostname = ""

    names = await system_bus.hostname()

    assert names.static_hostname is None
    assert names.pretty_hostname is None


async def test_set_hostname_sets_static_then_transient_without_interaction(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    names = await system_bus.set_hostname("kitchen")

    assert [call for call in fake_services.hostnamed.calls] == [
        ("SetStaticHostname", ("kitchen", False)),
        ("SetHostname", ("kitchen", False)),
    ]
    assert (names.hostname, names.static_hostname) == ("kitchen", "kitchen")


async def test_a_hostname_the_daemon_rejects_is_a_bad_request(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    with pytest.raises(BadRequest) as caught:
        await system_bus.set_hostname("-bad-")

    assert caught.value.detail == (
        "hostnamed rejected SetStaticHostname: org.freedesktop.DBus.Error.InvalidArgs"
    )


# --- timedated ----------------------------------------------------------------------


async def test_time_settings(fake_services: FakeServices, system_bus: SystemBus) -> None:
    before = time.time()
    settings = await system_bus.time_settings()
    after = time.time()

    assert settings.timezone == "UTC"
    assert (settings.local_rtc, settings.can_ntp, settings.ntp) == (False, True, True)
    assert settings.ntp_synchronized is True
    assert before - 1e-6 <= settings.time <= after, "the clock as read during the call (in µs)"
    assert settings.rtc_time is None


async def test_time_settings_with_a_hardware_clock(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    fake_services.timedated.rtc_usec = FIXED_NOW_USEC

    settings = await system_bus.time_settings()

    assert settings.rtc_time == pytest.approx(FIXED_NOW_USEC / 1_000_000, abs=0.5)


async def test_set_timezone(fake_services: FakeServices, system_bus: SystemBus) -> None:
    settings = await system_bus.set_timezone("Europe/Berlin")

    assert fake_services.timedated.calls == [("SetTimezone", ("Europe/Berlin", False))]
    assert settings.timezone == "Europe/Berlin"


async def test_a_timezone_the_daemon_rejects_is_a_bad_request(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    with pytest.raises(BadRequest) as caught:
        await system_bus.set_timezone("Mars/Olympus")

    assert caught.value.detail == (
        "timedated rejected SetTimezone: org.freedesktop.DBus.Error.InvalidArgs"
    )


# --- what is missing ----------------------------------------------------------------


async def test_no_bus_is_unavailable_at_once_and_names_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_path = tmp_path / "system_bus_socket"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={socket_path}")
    bus = SystemBus(timeout_s=NEVER_S)

    # The connect fails: the call does not wait out its (here endless) timeout.
    with pytest.raises(Unavailable) as caught:
        async with asyncio.timeout(HANG_GUARD_S):
            await bus.hostname()

    assert caught.value.detail == (
        f"the system D-Bus is not available ({socket_path}: No such file or directory)"
    )
    await bus.close()


async def test_a_socket_nobody_listens_on_is_unavailable(tmp_path: Path) -> None:
    socket_path = tmp_path / "system_bus_socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(socket_path))
        bus = SystemBus(address=f"unix:path={socket_path}", timeout_s=5.0)

        with pytest.raises(Unavailable, match=r"not available \(.*: Connection refused\)"):
            await bus.unit("ssh.service")
    await bus.close()


async def test_the_default_address_is_the_standard_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)

    assert SystemBus().address == "unix:path=/run/dbus/system_bus_socket"


@pytest.mark.parametrize(
    ("absent", "call", "detail"),
    [
        ("systemd1", "unit", "systemd (org.freedesktop.systemd1) is not running"),
        ("login1", "reboot", "logind (org.freedesktop.login1) is not running"),
        ("hostname1", "hostname", "hostnamed (org.freedesktop.hostname1) is not running"),
        ("timedate1", "time_settings", "timedated (org.freedesktop.timedate1) is not running"),
    ],
)
async def test_a_daemon_not_on_the_bus_is_unavailable_by_name(
    fake_services_factory: FakeServicesFactory,
    system_bus: SystemBus,
    absent: str,
    call: str,
    detail: str,
) -> None:
    fake_services_factory(absent={absent})
    args = ("ssh.service",) if call == "unit" else ()

    with pytest.raises(Unavailable) as caught:
        await getattr(system_bus, call)(*args)

    assert caught.value.detail == detail


async def test_an_unresponsive_daemon_does_not_hold_up_calls_to_the_others(
    fake_services_factory: FakeServicesFactory,
) -> None:
    services = fake_services_factory(unresponsive={"hostname1"})
    bus = SystemBus(timeout_s=NEVER_S)  # the stuck call cannot end on its own in this test
    stuck = asyncio.create_task(bus.set_hostname("kitchen"))
    await wait_until(lambda: bool(services.swallowed), HANG_GUARD_S, "the call to hang")

    settings = await bus.time_settings()

    assert not stuck.done(), "timedated answered while hostnamed still had the call"
    assert settings.timezone == "UTC"
    assert services.swallowed == [("hostname1", "SetStaticHostname")]
    stuck.cancel()
    await bus.close()


async def test_an_unresponsive_daemon_times_out_and_says_so(
    fake_services_factory: FakeServicesFactory,
) -> None:
    services = fake_services_factory(unresponsive={"hostname1"})
    bus = SystemBus(timeout_s=0.5)

    with pytest.raises(Unavailable) as caught:
        await bus.set_hostname("kitchen")

    assert caught.value.detail == "hostnamed did not answer within 0.5 s"
    assert services.swallowed == [("hostname1", "SetStaticHostname")], "sent, never answered"
    await bus.close()


async def test_a_late_answer_does_not_confuse_later_calls(
    fake_services: FakeServices,
) -> None:
    fake_services.hostnamed.delays["SetStaticHostname"] = 0.4
    bus = SystemBus(timeout_s=0.2)

    with pytest.raises(Unavailable, match=r"hostnamed did not answer within 0\.2 s"):
        await bus.set_hostname("kitchen")
    # The fake finishes the call after the client gave up; its late reply comes now.
    await wait_until(
        lambda: fake_services.hostnamed.static_hostname == "kitchen",
        HANG_GUARD_S,
        "the late call to finish",
    )

    assert (await bus.hostname()).static_hostname == "kitchen"
    assert fake_services.hostnamed.called("SetHostname") == []
    await bus.close()


@pytest.mark.parametrize(
    ("error", "raised", "detail"),
    [
        (ACCESS_DENIED, Forbidden, f"hostnamed refused SetStaticHostname: {ACCESS_DENIED}"),
        (
            "org.freedesktop.DBus.Error.UnknownMethod",
            Unavailable,
            "hostnamed does not support SetStaticHostname "
            "(org.freedesktop.DBus.Error.UnknownMethod)",
        ),
        (
            "org.freedesktop.hostname1.Weird",
            DBusCallFailed,
            "hostnamed failed SetStaticHostname: org.freedesktop.hostname1.Weird",
        ),
    ],
)
async def test_daemon_errors_map_to_hostcore_errors(
    fake_services: FakeServices,
    system_bus: SystemBus,
    error: str,
    raised: type[Exception],
    detail: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.builtin.system.dbus")
    fake_services.hostnamed.errors["SetStaticHostname"] = (error, "nope: /etc/secret")

    with pytest.raises(raised) as caught:
        await system_bus.set_hostname("kitchen")

    assert str(caught.value) == detail
    (record,) = [r for r in caplog.records if "nope: /etc/secret" in r.getMessage()]
    assert record.levelname == "WARNING"


@pytest.mark.parametrize(
    ("service", "name", "raised"),
    [
        (SYSTEMD, "org.freedesktop.systemd1.NoSuchUnit", NotFound),
        (SYSTEMD, "org.freedesktop.DBus.Error.UnknownObject", NotFound),
        (HOSTNAMED, "org.freedesktop.systemd1.NoSuchUnit", Unavailable),  # failed activation
        (HOSTNAMED, "org.freedesktop.DBus.Error.UnknownObject", DBusCallFailed),
        (TIMEDATED, "org.freedesktop.DBus.Error.Spawn.ChildExited", Unavailable),
        (LOGIND, "org.freedesktop.DBus.Error.NoReply", Unavailable),
        (LOGIND, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", Forbidden),
        (LOGIND, "org.freedesktop.DBus.Error.InvalidArgs", BadRequest),
        (SYSTEMD, "org.freedesktop.systemd1.UnitMasked", Conflict),
        (LOGIND, "org.freedesktop.systemd1.UnitMasked", Conflict),  # reboot.target masked
        (LOGIND, "org.freedesktop.login1.OperationInProgress", Conflict),
    ],
)
def test_dbus_error_mapping(service: object, name: str, raised: type[Exception]) -> None:
    assert type(dbus_error(service, "Member", name)) is raised  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "org.freedesktop.DBus.Error.Spawn.ChildExited",
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.systemd1.NoSuchUnit",
        "org.freedesktop.systemd1.UnitMasked",
        "org.freedesktop.DBus.Error.InvalidArgs",
        "org.freedesktop.DBus.Error.NotSupported",
        "org.example.Unheard.Of",
    ],
)
async def test_an_answer_names_the_daemons_error_but_never_quotes_its_message(
    fake_services: FakeServices, system_bus: SystemBus, name: str
) -> None:
    fake_services.systemd.errors["StopUnit"] = (name, "Unit /home/alice/secret exploded")

    with pytest.raises(HostcoreError) as caught:
        await system_bus.stop_unit("ssh.service")

    assert "secret" not in caught.value.detail and "exploded" not in caught.value.detail
    assert name in caught.value.detail or "'ssh.service'" in caught.value.detail


async def test_a_bus_that_refuses_authentication_is_unavailable_without_its_reason(
    tmp_path: Path,
) -> None:
    socket_path = tmp_path / "refusing_bus_socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(socket_path))
        server.listen(1)

        def refuse() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(1024)  # the NUL byte and AUTH EXTERNAL
                connection.sendall(b"REJECTED SECRET-MECHANISM-LIST\r\n")
                connection.recv(1024)

        refusing = threading.Thread(target=refuse, daemon=True)
        refusing.start()
        bus = SystemBus(address=f"unix:path={socket_path}", timeout_s=2.0)

        with pytest.raises(Unavailable) as caught:
            await bus.hostname()
        await bus.close()
        refusing.join(timeout=2.0)

    assert caught.value.detail == f"the system D-Bus ({socket_path}) refused the connection"


# --- the connection -----------------------------------------------------------------


async def test_it_connects_lazily_once_for_concurrent_first_calls(
    fake_services: FakeServices,
) -> None:
    bus = SystemBus(timeout_s=2.0)
    assert not bus.connected

    results = await asyncio.gather(*(bus.unit("ssh.service") for _ in range(10)))

    assert {unit.name for unit in results} == {"ssh.service"}
    assert len(await _connections(bus)) == 1 + 4  # hostcore's and the four fakes'
    await bus.close()


BUS_DAEMON = DBusService(
    "dbus-daemon", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus"
)


async def _connections(bus: SystemBus) -> list[str]:
    """The unique names on the bus, asked of the bus daemon itself."""
    (names,) = await bus.call(BUS_DAEMON, "ListNames")
    return [name for name in names if name.startswith(":")]


async def test_it_reconnects_after_the_bus_restarts(
    private_bus_daemon: PrivateBus, fake_services: FakeServices, system_bus: SystemBus
) -> None:
    assert (await system_bus.hostname()).hostname == "device"
    fake_services.stop()
    private_bus_daemon.restart()
    fake_services.start()

    await _until_disconnected(system_bus)
    assert (await system_bus.hostname()).hostname == "device"
    assert system_bus.connected


async def test_a_drop_not_yet_noticed_fails_one_call_then_it_reconnects(
    private_bus_daemon: PrivateBus, fake_services: FakeServices, system_bus: SystemBus
) -> None:
    await system_bus.hostname()
    fake_services.stop()
    private_bus_daemon.restart()
    fake_services.start()

    loop = asyncio.get_running_loop()
    unretrieved: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["exception"]))
    try:
        # No await since the restart: the loop has not seen the old socket close yet.
        # (A call, not hostname(): that one would answer from what hostnamed last said.)
        with pytest.raises(Unavailable, match="connection was lost while calling hostnamed"):
            await system_bus.get_properties(HOSTNAMED, HOSTNAMED.interface)
        assert (await system_bus.hostname()).hostname == "device"
        gc.collect()
    finally:
        loop.set_exception_handler(None)

    # dbus-fast fails the call but drops the futures of the failed write unread
    # (asyncio logs them when collected); they are that write's error, nothing else.
    assert all(isinstance(error, OSError) for error in unretrieved)


async def _until_disconnected(bus: SystemBus) -> None:
    await wait_until(lambda: not bus.connected, HANG_GUARD_S, "the client to notice the drop")


async def test_a_call_in_flight_when_the_bus_dies_fails_at_once(
    private_bus_daemon: PrivateBus, fake_services_factory: FakeServicesFactory
) -> None:
    services = fake_services_factory(unresponsive={"hostname1"})
    bus = SystemBus(timeout_s=NEVER_S)  # only the lost connection can end the call
    await bus.time_settings()
    stuck = asyncio.create_task(bus.hostname())
    await wait_until(lambda: bool(services.swallowed), HANG_GUARD_S, "the call to hang")

    private_bus_daemon.stop()
    with pytest.raises(Unavailable, match="connection was lost while calling hostnamed"):
        async with asyncio.timeout(HANG_GUARD_S):
            await stuck
    services.stop()

    with pytest.raises(Unavailable, match="the system D-Bus is not available"):
        await bus.time_settings()
    private_bus_daemon.start()
    services.start()
    assert (await bus.time_settings()).timezone == "UTC"
    await bus.close()


async def test_a_daemon_exiting_mid_call_is_unavailable_at_once(
    fake_services_factory: FakeServicesFactory,
) -> None:
    services = fake_services_factory(unresponsive={"hostname1"})
    bus = SystemBus(timeout_s=NEVER_S)  # only the daemon's exit can end the call
    stuck = asyncio.create_task(bus.hostname())
    await wait_until(lambda: bool(services.swallowed), HANG_GUARD_S, "the call to hang")

    services.stop()

    with pytest.raises(Unavailable) as caught:
        async with asyncio.timeout(HANG_GUARD_S):
            await stuck
    assert caught.value.detail == (
        "hostnamed did not answer GetAll (org.freedesktop.DBus.Error.NoReply)"
    )
    await bus.close()


async def test_close_then_use_again(fake_services: FakeServices) -> None:
    bus = SystemBus(timeout_s=2.0)
    await bus.close()  # before any connection: nothing to do
    await bus.hostname()

    await bus.close()
    await bus.close()

    assert (await bus.hostname()).hostname == "device"
    await bus.close()


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SystemBus(timeout_s=0)


def test_closed_in_one_event_loop_it_works_in_the_next(fake_services: FakeServices) -> None:
    """As across test clients: each runs the app's lifespan (closing the bus) on its own loop."""
    bus = SystemBus(timeout_s=2.0)

    async def use() -> str:
        try:
            return (await bus.hostname()).hostname
        finally:
            await bus.close()

    assert asyncio.run(use()) == asyncio.run(use()) == "device"


def test_the_fakes_answer_a_synchronous_caller_on_another_loop(
    fake_services: FakeServices,
) -> None:
    """As the lead's TestClient tests will: the app's loop is not the test's."""

    async def read() -> str:
        bus = SystemBus(timeout_s=2.0)
        try:
            return (await bus.hostname()).hostname
        finally:
            await bus.close()

    assert asyncio.run(read()) == "device"


# --- units kept current by systemd's signals -------------------------------------------------


async def until_unit(bus: SystemBus, name: str, active_state: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while (await bus.unit(name)).active_state != active_state:
        assert time.monotonic() < deadline, f"{name} never became {active_state}"
        await asyncio.sleep(0.01)


async def test_a_unit_read_once_is_answered_from_memory_and_follows_its_signals(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    first = await system_bus.unit("ssh.service")
    assert fake_services.systemd.called("Subscribe") == [()]
    assert await system_bus.unit("ssh.service") == first
    fake_services.change_unit("ssh.service", active_state="failed", sub_state="failed", main_pid=0)
    await until_unit(system_bus, "ssh.service", "failed")
    changed = await system_bus.unit("ssh.service")
    assert (changed.sub_state, changed.main_pid) == ("failed", None)
    assert fake_services.systemd.called("LoadUnit") == [("ssh.service",)], "no second read"


async def test_a_unit_started_through_hostcore_is_seen_running_at_once_after_its_signal(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    assert (await system_bus.unit("nginx.service")).active_state == "inactive"
    await system_bus.start_unit("nginx.service")
    await until_unit(system_bus, "nginx.service", "active")
    assert (await system_bus.unit("nginx.service")).since is not None


async def test_without_a_subscription_every_read_asks_systemd(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    fake_services.systemd.errors["Subscribe"] = (ACCESS_DENIED, "no")
    await system_bus.unit("ssh.service")
    await system_bus.unit("ssh.service")
    assert len(fake_services.systemd.called("LoadUnit")) == 2
    assert len(fake_services.systemd.called("Subscribe")) == 1, "not asked again"


async def test_after_the_bus_restarts_units_are_read_again(
    private_bus_daemon: PrivateBus, fake_services: FakeServices, system_bus: SystemBus
) -> None:
    await system_bus.unit("ssh.service")
    fake_services.stop()
    private_bus_daemon.restart()
    fake_services.start()
    await _until_disconnected(system_bus)
    fake_services.systemd.units["ssh.service"].active_state = "inactive"  # signalled to nobody
    assert (await system_bus.unit("ssh.service")).active_state == "inactive"
    assert len(fake_services.systemd.called("LoadUnit")) == 2


async def test_a_unit_systemd_does_not_know_is_asked_again_only_after_a_daemon_reload(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    for _ in range(3):
        with pytest.raises(NotFound):
            await system_bus.unit("hostapd.service")
    assert fake_services.systemd.called("LoadUnit") == [("hostapd.service",)]
    fake_services.daemon_reload({})
    deadline = time.monotonic() + HANG_GUARD_S
    while len(fake_services.systemd.called("LoadUnit")) < 2:
        assert time.monotonic() < deadline, "the reload never reached the client"
        with pytest.raises(NotFound):
            await system_bus.unit("hostapd.service")
        await asyncio.sleep(0.01)


# --- hostnamed's and timedated's answers, kept by their signals ----------------------


async def until_names(bus: SystemBus, hostname: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while (await bus.hostname()).hostname != hostname:
        assert time.monotonic() < deadline, f"the hostname never became {hostname}"
        await asyncio.sleep(0.01)


async def test_hostnameds_answer_is_kept_until_it_signals_a_change(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    first = await system_bus.hostname()
    assert await system_bus.hostname() == first
    assert fake_services.property_reads("hostname1") == 1, "the second answered from memory"
    fake_services.change_names(hostname="hall", pretty_hostname="Hall Panel")  # another client
    await until_names(system_bus, "hall")
    assert (await system_bus.hostname()).pretty_hostname == "Hall Panel"
    assert fake_services.property_reads("hostname1") == 2, "read once more, after the signal"


async def test_a_different_key_reads_hostnamed_again(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    await system_bus.hostname(key="a")
    await system_bus.hostname(key="a")
    fake_services.hostnamed.hostname = "renamed"  # as by sethostname(2): hostnamed says nothing
    assert (await system_bus.hostname(key="a")).hostname == "device", "the same key: kept"
    assert (await system_bus.hostname(key="b")).hostname == "renamed"
    assert fake_services.property_reads("hostname1") == 2


async def test_a_name_hostcore_sets_is_answered_at_once(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    await system_bus.hostname()
    assert (await system_bus.set_hostname("kitchen")).hostname == "kitchen"
    assert (await system_bus.hostname()).static_hostname == "kitchen"


async def test_timedateds_settings_are_kept_until_it_signals_and_the_clock_is_always_now(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    first = await system_bus.time_settings()
    await asyncio.sleep(0.05)
    second = await system_bus.time_settings()
    assert fake_services.property_reads("timedate1") == 1
    assert second.time - first.time >= 0.04, "the clock is this process's, not the kept one"
    fake_services.change_time_settings(timezone="Asia/Tokyo")
    deadline = time.monotonic() + HANG_GUARD_S
    while (await system_bus.time_settings()).timezone != "Asia/Tokyo":
        assert time.monotonic() < deadline, "the time zone never changed"
        await asyncio.sleep(0.01)
    assert fake_services.property_reads("timedate1") == 2


async def test_what_timedated_does_not_signal_is_read_again_after_a_while(
    fake_services: FakeServices, system_bus: SystemBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbus_module, "TIME_MAX_AGE_S", 0.05)
    fake_services.timedated.rtc_usec = FIXED_NOW_USEC
    assert (await system_bus.time_settings()).ntp_synchronized is True
    fake_services.timedated.ntp_synchronized = False  # the kernel's state: never signalled
    await asyncio.sleep(0.03)
    kept = await system_bus.time_settings()
    assert kept.ntp_synchronized is True, "still within the age"
    assert kept.rtc_time is not None and kept.rtc_time >= FIXED_NOW_USEC / 1e6 + 0.03
    await asyncio.sleep(0.05)
    assert (await system_bus.time_settings()).ntp_synchronized is False


async def test_a_timezone_hostcore_sets_is_answered_at_once(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    await system_bus.time_settings()
    assert (await system_bus.set_timezone("Europe/Berlin")).timezone == "Europe/Berlin"
    assert (await system_bus.time_settings()).timezone == "Europe/Berlin"


async def test_the_daemons_answers_are_kept_even_when_systemd_refuses_a_subscription(
    fake_services: FakeServices, system_bus: SystemBus
) -> None:
    fake_services.systemd.errors["Subscribe"] = (ACCESS_DENIED, "no")
    await system_bus.hostname()
    await system_bus.hostname()
    assert fake_services.property_reads("hostname1") == 1


async def test_after_the_bus_restarts_the_daemons_are_read_again(
    private_bus_daemon: PrivateBus, fake_services: FakeServices, system_bus: SystemBus
) -> None:
    await system_bus.hostname()
    fake_services.stop()
    private_bus_daemon.restart()
    fake_services.start()
    await _until_disconnected(system_bus)
    fake_services.hostnamed.hostname = "after"  # signalled to nobody
    assert (await system_bus.hostname()).hostname == "after"
