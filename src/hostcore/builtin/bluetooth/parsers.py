"""BlueZ's objects as the API shows them (pure: properties in, models out).

Properties newer BlueZ versions added (``Bonded`` 5.69, ``PowerState`` 5.66,
``PreferredBearer`` 5.79) are null when the daemon does not have them.
"""

from __future__ import annotations

from typing import Any

from hostcore.builtin.bluetooth.schemas import AdapterRead, DeviceRead, UuidRead

BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"
# Assigned numbers (Bluetooth SIG, "16-bit UUIDs"): the services a phone or a device of
# this kind commonly offers.
SERVICE_NAMES = {
    0x1101: "Serial Port",
    0x1103: "Dial-up Networking",
    0x1105: "OBEX Object Push",
    0x1106: "OBEX File Transfer",
    0x1108: "Headset",
    0x110A: "Audio Source",
    0x110B: "Audio Sink",
    0x110C: "A/V Remote Control Target",
    0x110D: "Advanced Audio Distribution",
    0x110E: "A/V Remote Control",
    0x110F: "A/V Remote Control Controller",
    0x1112: "Headset Audio Gateway",
    0x1115: "PAN User (PANU)",
    0x1116: "Network Access Point (NAP)",
    0x1117: "Group Ad-hoc Network (GN)",
    0x111E: "Handsfree",
    0x111F: "Handsfree Audio Gateway",
    0x1124: "Human Interface Device",
    0x112F: "Phonebook Access Server",
    0x1132: "Message Access Server",
    0x1133: "Message Notification Server",
    0x1200: "PnP Information",
    0x1203: "Generic Audio",
    0x1800: "Generic Access",
    0x1801: "Generic Attribute",
    0x180A: "Device Information",
    0x180D: "Heart Rate",
    0x180F: "Battery",
    0x1812: "Human Interface Device over GATT",
    0x181C: "User Data",
    0x184E: "Audio Stream Control",
    0x1850: "Published Audio Capabilities",
}


def uuid_read(uuid: str) -> UuidRead:
    """A service UUID, named when it is a SIG-assigned one this table knows."""
    text = uuid.lower()
    name = None
    if text.endswith(BASE_UUID_SUFFIX) and text.startswith("0000"):
        try:
            name = SERVICE_NAMES.get(int(text[4:8], 16))
        except ValueError:
            name = None
    return UuidRead(uuid=text, name=name)


def adapter_name(path: str) -> str:
    """``hci0`` of ``/org/bluez/hci0`` (and of its devices' paths)."""
    parts = path.split("/")
    return parts[3] if len(parts) > 3 else path


def _int(props: dict[str, Any], name: str) -> int | None:
    value = props.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(props: dict[str, Any], name: str) -> str | None:
    value = props.get(name)
    return value if isinstance(value, str) else None


def _bool(props: dict[str, Any], name: str) -> bool | None:
    value = props.get(name)
    return value if isinstance(value, bool) else None


def _uuids(props: dict[str, Any]) -> list[UuidRead]:
    values = props.get("UUIDs")
    if not isinstance(values, list):
        return []
    return [uuid_read(value) for value in values if isinstance(value, str)]


def parse_adapter(path: str, props: dict[str, Any]) -> AdapterRead:
    roles = props.get("Roles")
    return AdapterRead(
        name=adapter_name(path),
        address=_text(props, "Address") or "",
        address_type=_text(props, "AddressType"),
        system_name=_text(props, "Name"),
        alias=_text(props, "Alias"),
        device_class=_int(props, "Class"),
        powered=bool(props.get("Powered")),
        power_state=_text(props, "PowerState"),
        discoverable=bool(props.get("Discoverable")),
        discoverable_timeout_s=_int(props, "DiscoverableTimeout") or 0,
        pairable=bool(props.get("Pairable")),
        pairable_timeout_s=_int(props, "PairableTimeout") or 0,
        discovering=bool(props.get("Discovering")),
        roles=[role for role in roles if isinstance(role, str)] if isinstance(roles, list) else [],
        uuids=_uuids(props),
    )


def parse_device(path: str, props: dict[str, Any]) -> DeviceRead:
    return DeviceRead(
        address=(_text(props, "Address") or "").upper(),
        adapter=adapter_name(path),
        address_type=_text(props, "AddressType"),
        name=_text(props, "Name"),
        alias=_text(props, "Alias"),
        device_class=_int(props, "Class"),
        appearance=_int(props, "Appearance"),
        icon=_text(props, "Icon"),
        paired=bool(props.get("Paired")),
        bonded=_bool(props, "Bonded"),
        trusted=bool(props.get("Trusted")),
        blocked=bool(props.get("Blocked")),
        connected=bool(props.get("Connected")),
        rssi_dbm=_int(props, "RSSI"),
        tx_power_dbm=_int(props, "TxPower"),
        services_resolved=_bool(props, "ServicesResolved"),
        legacy_pairing=_bool(props, "LegacyPairing"),
        preferred_bearer=_text(props, "PreferredBearer"),
        uuids=_uuids(props),
    )
