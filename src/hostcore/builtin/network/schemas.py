"""Settings and request models of the network plugin; names are validated strictly here.

An interface name (:data:`hostcore.netnames.InterfaceName`) is only ever compared
with the names a netlink dump returns and sent back to the kernel as a number
(the index): it never becomes a path or a command-line argument. A namespace name is a plain
file name under the namespace directory, looked up in its listing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field

from hostcore.netnames import InterfaceName
from hostcore.netns import NETNS_DIR_DEFAULT

VLAN_ID_MIN, VLAN_ID_MAX = 1, 4094
_ROUTE_TABLE = r"^(main|local|default|all|[0-9]{1,10})$"
ROUTE_TABLES = {"default": 253, "main": 254, "local": 255}
MAX_ROUTE_TABLE = 2**32 - 1


LinkState = Literal["up", "down"]


def route_table_number(table: str) -> int | None:
    """The kernel's number of a table name (None: every table)."""
    if table == "all":
        return None
    number = ROUTE_TABLES.get(table)
    return int(table) if number is None else number


def check_route_table(table: str) -> str:
    if (route_table_number(table) or 0) > MAX_ROUTE_TABLE:
        raise ValueError(f"a route table is a number up to {MAX_ROUTE_TABLE}")
    return table


RouteTable = Annotated[
    str, Field(pattern=_ROUTE_TABLE, max_length=10), AfterValidator(check_route_table)
]


class NetworkSettings(BaseModel):
    """``[plugins.network]``."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(
        Path("/"),
        description="Where /sys/class/net and the DHCP clients' lease files are read from.",
    )
    netns_dir: Path = Field(
        NETNS_DIR_DEFAULT, description="Where named network namespaces are (ip netns)."
    )
    protected_interfaces: list[InterfaceName] = Field(
        default_factory=list,
        description="Interfaces nobody may set down through the API.",
    )
    protect_caller_interface: bool = Field(
        True,
        description=(
            "Also refuse to set down the interface the caller's own connection comes in "
            "through (when the caller's address is not known, every interface carrying a "
            "default route)."
        ),
    )
    lldpd_socket: Path | None = Field(
        None, description="lldpd's control socket, when not its default /run/lldpd.socket."
    )
    lldp_timeout_s: float = Field(5.0, gt=0, le=60)
    dbus_timeout_s: float = Field(5.0, gt=0, le=60, description="For systemd-resolved.")
    public_ip_url: AnyHttpUrl | None = Field(
        None,
        description=(
            "A URL that answers the caller's public address as plain text (such as "
            "https://api.ipify.org). Off unless set: GET /public-ip makes an outbound call."
        ),
    )
    public_ip_timeout_s: float = Field(5.0, gt=0, le=60)
    public_ip_cache_s: float = Field(300.0, ge=0, le=86400)


# Request bodies are strict: JSON's own types only, extra keys refused.
STRICT_BODY = ConfigDict(strict=True, extra="forbid")


class LinkStateUpdate(BaseModel):
    model_config = STRICT_BODY

    state: LinkState


class VlanCreate(BaseModel):
    model_config = STRICT_BODY

    parent: InterfaceName = Field(description="The Ethernet interface the VLAN rides on.")
    vlan_id: int = Field(ge=VLAN_ID_MIN, le=VLAN_ID_MAX, description="The 802.1Q id.")
    name: InterfaceName | None = Field(
        None, description="The new link's name; default <parent>.<vlan_id>."
    )
