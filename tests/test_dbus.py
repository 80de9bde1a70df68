"""hostcore.dbus: a daemon's D-Bus error replies mean the same for every plugin."""

from __future__ import annotations

import pytest

from hostcore.dbus import DBusCallFailed, DBusService, dbus_error, describe_address
from hostcore.errors import HostcoreError, NotFound, Unavailable

RESOLVED = DBusService(
    "systemd-resolved",
    "org.freedesktop.resolve1",
    "/org/freedesktop/resolve1",
    "org.freedesktop.resolve1.Manager",
)
WITH_NOT_FOUND = DBusService(
    "bluez",
    "org.bluez",
    "/",
    "org.bluez.Adapter1",
    not_found=frozenset({"org.bluez.Error.DoesNotExist"}),
)


def test_describe_address() -> None:
    assert describe_address("unix:path=/run/dbus/system_bus_socket") == (
        "/run/dbus/system_bus_socket"
    )
    assert (
        describe_address("unix:abstract=/tmp/dbus-x,guid=1") == "unix:abstract=/tmp/dbus-x,guid=1"
    )


@pytest.mark.parametrize(
    ("service", "name", "raised"),
    [
        # A daemon started on demand that failed to start: missing, not "no such unit".
        (RESOLVED, "org.freedesktop.systemd1.NoSuchUnit", Unavailable),
        (RESOLVED, "org.freedesktop.DBus.Error.ServiceUnknown", Unavailable),
        (RESOLVED, "org.freedesktop.DBus.Error.UnknownObject", DBusCallFailed),
        (WITH_NOT_FOUND, "org.bluez.Error.DoesNotExist", NotFound),
        (WITH_NOT_FOUND, "org.bluez.Error.Failed", DBusCallFailed),
    ],
)
def test_a_daemons_own_not_found_names_are_404_and_the_rest_keep_their_meaning(
    service: DBusService, name: str, raised: type[HostcoreError]
) -> None:
    error = dbus_error(service, "Member", name)
    assert type(error) is raised
    assert service.label in error.detail
