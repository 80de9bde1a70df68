"""BlueZ's properties as the API shows them."""

from __future__ import annotations

from hostcore.builtin.bluetooth.parsers import adapter_name, parse_adapter, parse_device, uuid_read


def test_known_services_are_named_and_others_kept_as_they_are() -> None:
    assert uuid_read("00001116-0000-1000-8000-00805F9B34FB").name == "Network Access Point (NAP)"
    assert uuid_read("00001101-0000-1000-8000-00805f9b34fb").name == "Serial Port"
    vendor = uuid_read("6E400001-B5A3-F393-E0A9-E50E24DCCA9E")
    assert vendor.name is None and vendor.uuid == "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
    assert uuid_read("0000zzzz-0000-1000-8000-00805f9b34fb").name is None


def test_a_device_of_an_older_bluez_has_no_bonded_nor_preferred_bearer() -> None:
    device = parse_device(
        "/org/bluez/hci1/dev_AA_BB_CC_DD_EE_FF",
        {
            "Address": "aa:bb:cc:dd:ee:ff",
            "AddressType": "public",
            "Alias": "Pixel 8",
            "Class": 0x5A020C,
            "Paired": True,
            "Trusted": False,
            "Blocked": False,
            "Connected": True,
            "RSSI": -61,
            "UUIDs": ["00001115-0000-1000-8000-00805f9b34fb"],
        },
    )
    assert device.address == "AA:BB:CC:DD:EE:FF" and device.adapter == "hci1"
    assert device.bonded is None and device.preferred_bearer is None and device.name is None
    assert device.rssi_dbm == -61 and device.uuids[0].name == "PAN User (PANU)"


def test_an_adapter_with_odd_values_still_reads() -> None:
    adapter = parse_adapter(
        "/org/bluez/hci0",
        {"Address": "00:1A:7D:DA:71:13", "Powered": False, "Roles": ["central", 3], "Class": True},
    )
    assert adapter.name == "hci0" and adapter.roles == ["central"] and adapter.device_class is None
    assert adapter.power_state is None and adapter.discoverable_timeout_s == 0
    assert adapter_name("/org/bluez/hci12/dev_X") == "hci12"
