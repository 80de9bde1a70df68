"""LLDP (and CDP, EDP, FDP, SONMP) neighbours, as lldpd heard them, read through lldpcli.

lldpd keeps what its neighbours announce; its client ``lldpcli`` asks it over a
unix control socket. hostcore runs ``lldpcli -f json0 show neighbors details``:
``json0`` is the stable shape, where every element is a list of objects and
every value a string, except the attributes lldpcli spells ``yes``/``no`` or
``on``/``off``, which become booleans. Plain ``-f json`` flattens one-element
lists and turns names into keys, so its shape flips with the number of
interfaces and neighbours.

Everything a neighbour announces is untrusted: any host on the link can send
an LLDP frame. lldpcli escapes it into valid JSON, but the text itself may
hold terminal escapes, line breaks, bidi overrides and invisible characters,
and reach 511 bytes (LLDP) or more (CDP). :func:`parse_neighbours` turns line
breaks and tabs into spaces, drops the other control and format characters,
and cuts each string to a bound, so a name shows as what it is in a terminal,
a log or a browser.

lldpcli's output never reaches a client: a reply it cannot parse is
:class:`~hostcore.errors.CommandFailed` naming what was wrong, not what was
printed. Without lldpd (lldpcli exits 1, printing nothing on stdout and
"unable to connect to socket PATH: <strerror>" on stderr) or without lldpcli,
the answer is :class:`~hostcore.errors.Unavailable` naming lldpd.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hostcore.errors import CommandFailed, CommandNotFound, Unavailable
from hostcore.runner import CommandResult, Runner, describe_exit

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 255
"""Bound of names, identifiers and port descriptions; LLDP allows 255 octets for each."""
MAX_DESCRIPTION_CHARS = 1024
"""Bound of a system description; CDP's software version often runs to several lines."""
MAX_MANAGEMENT_ADDRESSES = 16
MAX_CAPABILITIES = 16
_ELLIPSIS = "…"
_LOGGED_STDERR_CHARS = 1000
# lldpcli's "Time" column: "0 day, 00:00:05", "3 days, 01:02:03"; "too much" past its buffer.
_AGE = re.compile(r"(\d{1,9}) days?, (\d{2}):(\d{2}):(\d{2})")
_SECONDS_PER_DAY = 86400
# Unicode categories a displayed name must not carry: controls (Cc), invisible
# formatting such as bidi overrides and zero-width joiners (Cf), and lone
# surrogates (Cs), which JSON can spell but UTF-8 cannot encode. Line and
# paragraph separators (Zl, Zp) become spaces, like the whitespace controls.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_BREAK_CATEGORIES = frozenset({"Zl", "Zp"})


class LldpOutputError(ValueError):
    """lldpcli's output is not the JSON it prints; the message never quotes the output."""


class LldpCapabilityRead(BaseModel):
    """A system capability the neighbour announced (IEEE 802.1AB, table 8-4)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        max_length=MAX_TEXT_CHARS,
        description='As lldpd names it: "Bridge", "Router", "Wlan", "Station", "Repeater", '
        '"Tel", "Docsis", "Other", "CVLAN", "SVLAN", "TPMR".',
    )
    enabled: bool = Field(description="Whether the capability is in use, not only supported.")


class LldpNeighbourRead(BaseModel):
    """A neighbour lldpd heard on one of our ports.

    Text comes from the neighbour, cleaned: no control or invisible characters,
    line breaks as spaces, cut with an ellipsis at the bound.
    """

    model_config = ConfigDict(frozen=True)

    protocol: str = Field(
        max_length=MAX_TEXT_CHARS,
        description='Heard by: "LLDP", "CDPv1", "CDPv2", "EDP", "FDP" or "SONMP".',
    )
    local_port: str = Field(max_length=MAX_TEXT_CHARS, description="Our interface it was heard on.")
    chassis_id: str | None = Field(
        max_length=MAX_TEXT_CHARS, description="The neighbour's chassis identifier."
    )
    chassis_id_type: str | None = Field(
        max_length=MAX_TEXT_CHARS,
        description='How to read chassis_id: "mac", "ip", "ifname", "ifalias", "local" '
        '(free text), or "unhandled" (a subtype lldpd does not decode; chassis_id is null).',
    )
    system_name: str | None = Field(
        max_length=MAX_TEXT_CHARS, description="The neighbour's host name."
    )
    system_description: str | None = Field(
        max_length=MAX_DESCRIPTION_CHARS,
        description="What the neighbour says it is (CDP: platform and software version).",
    )
    port_id: str | None = Field(
        max_length=MAX_TEXT_CHARS, description="The neighbour's identifier of its port."
    )
    port_id_type: str | None = Field(
        max_length=MAX_TEXT_CHARS,
        description='How to read port_id: "mac", "ip", "ifname", "ifalias", "local" '
        '(free text), or "unhandled" (a subtype lldpd does not decode; port_id is null).',
    )
    port_description: str | None = Field(
        max_length=MAX_TEXT_CHARS, description="The neighbour's description of its port."
    )
    capabilities: list[LldpCapabilityRead] = Field(
        max_length=MAX_CAPABILITIES,
        description="Capabilities the neighbour announced; empty when it announced none.",
    )
    management_addresses: list[str] = Field(
        max_length=MAX_MANAGEMENT_ADDRESSES,
        description="Addresses the neighbour announced for managing it (IPv4, IPv6).",
    )
    ttl_s: int | None = Field(
        ge=0,
        le=65535,
        description="How long, in seconds, the neighbour asked for its announcement to be kept.",
    )
    vlan_id: int | None = Field(
        ge=1, le=4094, description="The port VLAN ID (PVID) the neighbour announced, if any."
    )
    age_s: int | None = Field(
        ge=0,
        description="Seconds since lldpd first heard the neighbour or its announcement last "
        "changed.",
    )


def lldpcli_argv(control_socket: Path | None) -> list[str]:
    """The lldpcli command; ``control_socket`` comes from configuration, never from a request."""
    socket_option = ["-u", str(control_socket)] if control_socket is not None else []
    return ["lldpcli", "-f", "json0", *socket_option, "show", "neighbors", "details"]


async def read_neighbours(
    runner: Runner, *, control_socket: Path | None, timeout_s: float
) -> list[LldpNeighbourRead]:
    """The neighbours lldpd knows of, in lldpcli's order (by local port).

    ``control_socket`` is lldpd's (``lldpd -u``); ``None`` is lldpcli's default.
    Raises ``Unavailable`` when lldpcli is missing or lldpd cannot be reached,
    ``CommandTimeout`` when lldpcli outlives ``timeout_s`` and ``CommandFailed``
    when it fails otherwise or prints what :func:`parse_neighbours` rejects.
    """
    try:
        result = await runner.run(lldpcli_argv(control_socket), timeout_s=timeout_s)
    except CommandNotFound:
        raise Unavailable(
            "lldpcli is not installed (package lldpd), or hostcore's user may not run it "
            "(Debian's lldpcli is for root and the adm group)"
        ) from None
    if not result.ok:
        _raise_for_failure(result, control_socket)
    if result.stdout_truncated:
        raise CommandFailed("lldpcli printed more than hostcore keeps of a command's output")
    try:
        return parse_neighbours(result.stdout)
    except LldpOutputError as exc:
        raise CommandFailed(f"lldpcli printed output hostcore cannot read: {exc}") from exc


def _raise_for_failure(result: CommandResult, control_socket: Path | None) -> None:
    """Name the cause when lldpcli could not reach lldpd; otherwise its exit status only.

    lldpcli says which on stderr; that text quotes paths and system errors, so
    it goes to the log and only decides which message the client gets.
    """
    stderr = result.stderr_text
    detail = f"lldpcli {describe_exit(result.returncode)}"
    cannot_connect = "unable to connect to socket" in stderr
    # A host without lldpd is an expected state, not a fault worth a warning per request.
    logger.log(
        logging.DEBUG if cannot_connect else logging.WARNING,
        "%s; stderr ends: %r",
        detail,
        stderr[-_LOGGED_STDERR_CHARS:],
    )
    where = f"at {control_socket}" if control_socket is not None else "(lldpcli's default)"
    if cannot_connect:
        if "Permission denied" in stderr:
            # lldpcli is set-user-ID _lldpd: the socket, and every directory
            # above it, must let that user in, as lldpd's own socket does.
            raise Unavailable(f"lldpd's control socket {where} cannot be opened: permission denied")
        raise Unavailable(f"lldpd is not running: its control socket {where} cannot be reached")
    raise CommandFailed(detail)


# --- parsing ------------------------------------------------------------------------


def parse_neighbours(raw: bytes) -> list[LldpNeighbourRead]:
    """The neighbours in ``lldpcli -f json0 show neighbors details`` output.

    Keys lldpcli may add in later versions are ignored, and ones older versions
    leave out read as ``None`` (the TTL moved from the chassis to the port in
    lldpd 0.9.7; both are read). Anything else lldpcli would not print (not
    JSON, too deeply nested, a string where a list belongs) raises
    :class:`LldpOutputError`.
    """
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LldpOutputError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise LldpOutputError(f"not UTF-8 (at byte {exc.start})") from None
    except RecursionError:
        raise LldpOutputError("JSON nested too deeply") from None
    except ValueError:
        # Number literals too long to convert, among others.
        raise LldpOutputError("JSON with values Python cannot read") from None
    if not isinstance(document, dict) or "lldp" not in document:
        raise LldpOutputError("the top level is not an object with an lldp key")
    neighbours: list[LldpNeighbourRead] = []
    for index, section in enumerate(_objects(document, "lldp", "")):
        where = f"lldp[{index}]"
        for position, interface in enumerate(_objects(section, "interface", where)):
            neighbours.append(_neighbour(interface, f"{where}.interface[{position}]"))
    return neighbours


def _neighbour(interface: dict[str, Any], where: str) -> LldpNeighbourRead:
    chassis = _first_object(interface, "chassis", where)
    port = _first_object(interface, "port", where)
    chassis_where, port_where = f"{where}.chassis[0]", f"{where}.port[0]"
    chassis_id = _first_object(chassis, "id", chassis_where)
    port_id = _first_object(port, "id", port_where)
    local_port = _clean(_attribute(interface, "name", where), MAX_TEXT_CHARS)
    protocol = _clean(_attribute(interface, "via", where), MAX_TEXT_CHARS)
    if local_port is None or protocol is None:
        raise LldpOutputError(f"{where} has no interface name or protocol")
    ttl = _data(port, "ttl", port_where) or _data(chassis, "ttl", chassis_where)
    ttl_where = f"{port_where}.ttl" if "ttl" in port else f"{chassis_where}.ttl"
    return LldpNeighbourRead(
        protocol=protocol,
        local_port=local_port,
        chassis_id=_clean(_optional_attribute(chassis_id, "value", chassis_where), MAX_TEXT_CHARS),
        chassis_id_type=_clean(
            _optional_attribute(chassis_id, "type", chassis_where), MAX_TEXT_CHARS
        ),
        system_name=_clean(_data(chassis, "name", chassis_where), MAX_TEXT_CHARS),
        system_description=_clean(_data(chassis, "descr", chassis_where), MAX_DESCRIPTION_CHARS),
        port_id=_clean(_optional_attribute(port_id, "value", port_where), MAX_TEXT_CHARS),
        port_id_type=_clean(_optional_attribute(port_id, "type", port_where), MAX_TEXT_CHARS),
        port_description=_clean(_data(port, "descr", port_where), MAX_TEXT_CHARS),
        capabilities=_capabilities(chassis, chassis_where),
        management_addresses=_management_addresses(chassis, chassis_where),
        ttl_s=_whole_number(ttl, ttl_where),
        vlan_id=_port_vlan_id(interface, where),
        age_s=_age_seconds(_optional_attribute(interface, "age", where)),
    )


def _capabilities(chassis: dict[str, Any], where: str) -> list[LldpCapabilityRead]:
    capabilities: list[LldpCapabilityRead] = []
    for index, capability in enumerate(_objects(chassis, "capability", where)):
        if len(capabilities) == MAX_CAPABILITIES:
            break
        name = _clean(_attribute(capability, "type", where), MAX_TEXT_CHARS)
        enabled = capability.get("enabled")
        if name is None or not isinstance(enabled, bool):
            raise LldpOutputError(f"{where}.capability[{index}] lacks a type or an enabled flag")
        capabilities.append(LldpCapabilityRead(name=name, enabled=enabled))
    return capabilities


def _management_addresses(chassis: dict[str, Any], where: str) -> list[str]:
    addresses: list[str] = []
    for value in _data_list(chassis, "mgmt-ip", where):
        address = _clean(value, MAX_TEXT_CHARS)
        if address is not None and address not in addresses:
            addresses.append(address)
        if len(addresses) == MAX_MANAGEMENT_ADDRESSES:
            break
    return addresses


def _port_vlan_id(interface: dict[str, Any], where: str) -> int | None:
    """The VLAN lldpcli marks ``"pvid": true``; lldpd lists the PVID even without a name."""
    for index, vlan in enumerate(_objects(interface, "vlan", where)):
        if vlan.get("pvid") is True:
            vlan_where = f"{where}.vlan[{index}]"
            vid = _whole_number(_attribute(vlan, "vlan-id", vlan_where), f"{vlan_where}.vlan-id")
            # A PVID of 0 means "none"; 4095 is reserved. The wire allows 16 bits.
            return vid if vid is not None and 1 <= vid <= 4094 else None
    return None


def _age_seconds(age: str | None) -> int | None:
    match = _AGE.fullmatch(age or "")
    if match is None:
        return None
    days, hours, minutes, seconds = (int(group) for group in match.groups())
    return days * _SECONDS_PER_DAY + hours * 3600 + minutes * 60 + seconds


# --- json0's building blocks ----------------------------------------------------------
#
# lldpcli's writer makes every tag a list of objects, every attribute a string
# (or a boolean for yes/no/on/off) and every piece of data an object {"value": ...}.


def _objects(parent: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    """The list of objects under ``key``; absent is empty."""
    items = parent.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LldpOutputError(f"{_path(where, key)} is not a list of objects")
    return items


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _first_object(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    items = _objects(parent, key, where)
    return items[0] if items else {}


def _attribute(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str):
        raise LldpOutputError(f"{_path(where, key)} is not a string")
    return value


def _optional_attribute(parent: dict[str, Any], key: str, where: str) -> str | None:
    return _attribute(parent, key, where) if key in parent else None


def _data_list(parent: dict[str, Any], key: str, where: str) -> list[str]:
    return [
        _attribute(item, "value", f"{where}.{key}[{index}]")
        for index, item in enumerate(_objects(parent, key, where))
    ]


def _data(parent: dict[str, Any], key: str, where: str) -> str | None:
    values = _data_list(parent, key, where)
    return values[0] if values else None


def _whole_number(text: str | None, where: str) -> int | None:
    if text is None:
        return None
    # lldpd prints TTLs and VLAN IDs from 16-bit fields; a long run of digits is
    # not lldpcli's, and would cost a quadratic conversion.
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > 65535:
        raise LldpOutputError(f"{where} is not a whole number from 0 to 65535")
    return int(text)


def _clean(text: str | None, limit: int) -> str | None:
    """``text`` safe to show, or ``None`` when nothing is left.

    Each run of line breaks and other whitespace controls becomes one space,
    other invisible characters are dropped, the ends are trimmed, and a text
    longer than ``limit`` characters is cut to ``limit``, the last an ellipsis.
    """
    if text is None:
        return None
    kept: list[str] = []
    in_break = False
    for character in text:
        category = unicodedata.category(character)
        if category in _BREAK_CATEGORIES or (category == "Cc" and character.isspace()):
            if in_break:
                continue
            character, in_break = " ", True
        elif category in _DROPPED_CATEGORIES:
            continue
        else:
            in_break = False
        if character.isspace():
            if kept:
                kept.append(character)
        elif len(kept) < limit:
            kept.append(character)
        else:
            return "".join(kept[: limit - 1]).rstrip() + _ELLIPSIS
    return "".join(kept).rstrip() or None
