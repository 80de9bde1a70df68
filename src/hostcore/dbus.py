"""What every hostcore client of a system daemon on D-Bus shares: the bus address, the
daemon's identity, and what a D-Bus error reply means for the caller.

Light on purpose (the standard library and ``hostcore.errors``): plugins import
it to name their daemons without loading a D-Bus library. The daemon's own error
message never reaches a client (it quotes arguments, paths and host state); the
answer names the daemon, the call and the D-Bus error name.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostcore.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HostcoreError,
    NotFound,
    Unavailable,
)

DEFAULT_SYSTEM_BUS_ADDRESS = "unix:path=/run/dbus/system_bus_socket"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
SYSTEMD_NAME = "org.freedesktop.systemd1"


@dataclass(frozen=True)
class DBusService:
    """A daemon: the name messages give it, its bus name, main object and interface."""

    label: str
    name: str
    path: str
    interface: str
    # Error names that mean "nothing found for what was asked" from this daemon (404).
    not_found: frozenset[str] = frozenset()

    @property
    def title(self) -> str:
        return f"{self.label} ({self.name})"


class DBusCallFailed(HostcoreError):
    """A daemon answered a D-Bus call with an error that has no more specific meaning."""

    status_code = 502


_SERVICE_MISSING = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)
_NO_ANSWER = frozenset(
    {
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Timeout",
        "org.freedesktop.DBus.Error.TimedOut",
    }
)
_DENIED = frozenset(
    {
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.AuthFailed",
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
        "org.freedesktop.PolicyKit1.Error.NotAuthorized",
    }
)
_BAD_REQUEST = frozenset(
    {
        "org.freedesktop.DBus.Error.InvalidArgs",
        "org.freedesktop.systemd1.JobTypeNotApplicable",
    }
)
_UNSUPPORTED = frozenset(
    {
        "org.freedesktop.DBus.Error.UnknownMethod",
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.freedesktop.DBus.Error.UnknownProperty",
        "org.freedesktop.DBus.Error.NotSupported",
    }
)
# The host's state stands in the way (logind passes systemd's errors on: a masked reboot.target).
_CONFLICT = frozenset(
    {
        "org.freedesktop.systemd1.UnitMasked",
        "org.freedesktop.systemd1.OnlyByDependency",
        "org.freedesktop.systemd1.TransactionIsDestructive",
        "org.freedesktop.systemd1.TransactionOrderIsCyclic",
        "org.freedesktop.login1.OperationInProgress",
        "org.freedesktop.login1.BlockedByInhibitorLock",
    }
)


def dbus_error(service: DBusService, member: str, name: str) -> HostcoreError:
    """The hostcore error for a D-Bus error reply named ``name`` from ``service`` to ``member``."""
    if name in _SERVICE_MISSING:
        return Unavailable(f"{service.title} is not running")
    if name.startswith("org.freedesktop.DBus.Error.Spawn.") or (
        service.name != SYSTEMD_NAME and name == "org.freedesktop.systemd1.NoSuchUnit"
    ):
        return Unavailable(f"{service.title} could not be started ({name})")
    if name in _NO_ANSWER:
        return Unavailable(f"{service.label} did not answer {member} ({name})")
    if name in _DENIED:
        return Forbidden(f"{service.label} refused {member}: {name}")
    if name in service.not_found:
        return NotFound(f"{service.label} found nothing for {member}: {name}")
    if name in _CONFLICT:
        return Conflict(f"{service.label} refused {member}: {name}")
    if name in _BAD_REQUEST:
        return BadRequest(f"{service.label} rejected {member}: {name}")
    if name in _UNSUPPORTED:
        return Unavailable(f"{service.label} does not support {member} ({name})")
    return DBusCallFailed(f"{service.label} failed {member}: {name}")


def describe_address(address: str) -> str:
    """The socket path of a plain ``unix:path=`` address, else the address itself."""
    prefix = "unix:path="
    if address.startswith(prefix) and "," not in address and ";" not in address:
        return address[len(prefix) :]
    return address
