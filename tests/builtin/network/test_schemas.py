from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from hostcore.builtin.network.schemas import (
    LinkStateUpdate,
    RouteTable,
    VlanCreate,
    route_table_number,
)
from hostcore.netnames import InterfaceName
from hostcore.netns import NamespaceName

IFNAME = TypeAdapter(InterfaceName)
NETNS = TypeAdapter(NamespaceName)
TABLE = TypeAdapter(RouteTable)


@pytest.mark.parametrize(
    "name", ["eth0", "wlan0", "enp0s31f6", "br-lan", "eth0.100", "a" * 15, "veth_x@y", "-lead"]
)
def test_interface_names_the_kernel_accepts_pass(name: str) -> None:
    assert IFNAME.validate_python(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 16,  # IFNAMSIZ counts the NUL
        "é" * 8,  # 16 bytes in UTF-8
        ".",
        "..",
        "eth/0",
        "../etc",
        "eth0:1",  # an alias label, not a link
        "eth 0",
        "eth\t0",
        "eth\n0",
        "eth\x000",
        "eth\x7f",
    ],
)
def test_names_the_kernel_would_refuse_are_422_without_echoing_them(name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        IFNAME.validate_python(name)
    if len(name) > 2:  # "." and ".." are named by the rule itself
        assert all(name not in error["msg"] for error in raised.value.errors())


@pytest.mark.parametrize("name", ["blue", "hc1a2b", "ns_1.test-2", "a" * 64])
def test_namespace_names_are_plain_file_names(name: str) -> None:
    assert NETNS.validate_python(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "-x", "a/b", "a" * 65, "a b", "ü"])
def test_a_namespace_name_never_becomes_a_path_elsewhere(name: str) -> None:
    with pytest.raises(ValidationError):
        NETNS.validate_python(name)


@pytest.mark.parametrize(
    ("table", "number"),
    [("main", 254), ("local", 255), ("default", 253), ("all", None), ("100", 100), ("0", 0)],
)
def test_route_tables_by_name_or_number(table: str, number: int | None) -> None:
    assert route_table_number(TABLE.validate_python(table)) == number


@pytest.mark.parametrize("table", ["4294967296", "9999999999", "-1", "MAIN", "1e3", ""])
def test_a_route_table_beyond_32_bits_or_unknown_is_refused(table: str) -> None:
    with pytest.raises(ValidationError):
        TABLE.validate_python(table)


def test_bodies_are_strict_json_types() -> None:
    assert LinkStateUpdate.model_validate({"state": "up"}).state == "up"
    with pytest.raises(ValidationError):
        LinkStateUpdate.model_validate({"state": "UP"})
    with pytest.raises(ValidationError):
        VlanCreate.model_validate({"parent": "eth0", "vlan_id": "5"})
    with pytest.raises(ValidationError):
        VlanCreate.model_validate({"parent": "eth0", "vlan_id": 5, "extra": 1})


@pytest.mark.parametrize("vlan_id", [0, 4095, -1, 2**31])
def test_vlan_ids_are_1_to_4094(vlan_id: int) -> None:
    with pytest.raises(ValidationError):
        VlanCreate.model_validate({"parent": "eth0", "vlan_id": vlan_id})
    assert VlanCreate.model_validate({"parent": "eth0", "vlan_id": 4094}).vlan_id == 4094
