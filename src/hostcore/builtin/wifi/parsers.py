"""nl80211 messages (as pyroute2 decodes them) turned into hostcore's models. Pure.

Names and numbers are those of the kernel's ``linux/nl80211.h``. A split wiphy
dump (``NL80211_ATTR_SPLIT_WIPHY_DUMP``) answers many messages per radio: one
with its capabilities, one per band, one per channel; :func:`merge_phys` folds
them. pyroute2 0.9.7 drops a band's number when it decodes the band, so it is
read from the attribute's header in the message buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from hostcore.builtin.wifi import ies

BANDS = {0: "2.4GHz", 1: "5GHz", 2: "60GHz", 3: "6GHz", 4: "S1GHz", 5: "LC"}
IFTYPES = {
    1: "adhoc",
    2: "managed",
    3: "ap",
    4: "ap_vlan",
    5: "wds",
    6: "monitor",
    7: "mesh_point",
    8: "p2p_client",
    9: "p2p_go",
    10: "p2p_device",
    11: "ocb",
    12: "nan",
}
# pyroute2's names of the supported types, as the API names them (station: managed).
IFTYPE_NAMES = {"station": "managed"}
CHANNEL_WIDTHS = {0: "20-noht", 1: "20", 2: "40", 3: "80", 4: "80+80", 5: "160", 6: "5", 7: "10"}
MBM_PER_DBM = 100
HT_CAP_40MHZ = 0x0002
VHT_CAP_WIDTH_SET = 0x000C  # 1: 160 MHz, 2: 160 and 80+80


class ChannelRead(BaseModel):
    frequency_mhz: int
    number: int | None
    disabled: bool
    no_ir: bool = Field(description="No initiating radiation: only passive scans, no AP here.")
    radar: bool = Field(description="DFS: radar detection is required.")
    max_power_dbm: float | None


class BandRead(BaseModel):
    band: str = Field(description="2.4GHz, 5GHz, 6GHz, 60GHz …")
    channels: list[ChannelRead]
    widths_mhz: list[int] = Field(description="Channel widths from the HT/VHT capabilities.")
    ht: bool
    vht: bool
    he: bool


class PhyRead(BaseModel):
    index: int
    name: str
    bands: list[BandRead]
    interface_types: list[str] = Field(description="managed, ap, monitor, mesh_point …")
    ciphers: list[str] = Field(description="CCMP, GCMP_256, TKIP …")


class WifiInterfaceRead(BaseModel):
    name: str
    index: int
    phy: int
    mac: str | None
    type: str = Field(description="managed, ap, monitor, … (the kernel's interface type).")
    frequency_mhz: int | None
    channel: int | None
    width: str | None = Field(description="20, 40, 80, 80+80, 160 (MHz) or 20-noht.")
    center_frequency_mhz: int | None
    tx_power_dbm: float | None
    netns: str | None = Field(None, description="The named namespace; null for the device's own.")


def channel_number(frequency_mhz: int) -> int | None:
    """The IEEE channel number of a frequency (802.11 Annex E), None off the known bands."""
    if frequency_mhz == 2484:
        return 14
    if 2407 < frequency_mhz < 2484:
        return (frequency_mhz - 2407) // 5
    if frequency_mhz == 5935:
        return 2
    if 5950 < frequency_mhz <= 7115:
        return (frequency_mhz - 5950) // 5
    if 4910 <= frequency_mhz <= 5895:
        return (frequency_mhz - 5000) // 5
    if 58320 <= frequency_mhz <= 70200:
        return (frequency_mhz - 56160) // 2160
    return None


def _attrs(message: Any) -> dict[str, Any]:
    return {slot[0]: slot[1] for slot in message["attrs"]}


def _cell_type(cell: Any) -> int:
    """An array cell's type (a band's number): pyroute2 drops it when decoding."""
    kind: int = struct.unpack_from("=H", cell.data, cell.offset + 2)[0] & 0x3FFF
    return kind


def merge_phys(messages: Iterable[Any]) -> list[PhyRead]:
    """The radios of a split wiphy dump, each merged from its messages."""
    phys: dict[int, dict[str, Any]] = {}
    for message in messages:
        attrs = _attrs(message)
        index = attrs.get("NL80211_ATTR_WIPHY")
        if not isinstance(index, int):
            continue
        phy = phys.setdefault(index, {"bands": {}})
        for name, value in attrs.items():
            if name != "NL80211_ATTR_WIPHY_BANDS":
                phy[name] = value
                continue
            for cell in value:
                band = phy["bands"].setdefault(_cell_type(cell), {"freqs": []})
                for key, part in ((slot[0], slot[1]) for slot in cell["attrs"]):
                    if key == "NL80211_BAND_ATTR_FREQS":
                        band["freqs"] += [_attrs(freq) for freq in part]
                    else:
                        band[key] = part
    return [_phy(index, phy) for index, phy in sorted(phys.items())]


def _phy(index: int, phy: dict[str, Any]) -> PhyRead:
    ciphers = [
        str(c).removeprefix("WLAN_CIPHER_SUITE_")
        for c in phy.get("NL80211_ATTR_CIPHER_SUITES") or ()
    ]
    types = [
        IFTYPE_NAMES.get(str(t), str(t)) for t in phy.get("NL80211_ATTR_SUPPORTED_IFTYPES") or ()
    ]
    return PhyRead(
        index=index,
        name=str(phy.get("NL80211_ATTR_WIPHY_NAME") or f"phy{index}"),
        bands=[_band(number, band) for number, band in sorted(phy["bands"].items())],
        interface_types=types,
        ciphers=ciphers,
    )


def _band(number: int, band: dict[str, Any]) -> BandRead:
    ht_capa = band.get("NL80211_BAND_ATTR_HT_CAPA")
    vht_capa = band.get("NL80211_BAND_ATTR_VHT_CAPA")
    widths = [20]
    if isinstance(ht_capa, int) and ht_capa & HT_CAP_40MHZ:
        widths.append(40)
    if vht_capa is not None:
        widths.append(80)
        if isinstance(vht_capa, int) and vht_capa & VHT_CAP_WIDTH_SET:
            widths.append(160)
    return BandRead(
        band=BANDS.get(number, str(number)),
        channels=[
            _channel(freq) for freq in band["freqs"] if "NL80211_FREQUENCY_ATTR_FREQ" in freq
        ],
        widths_mhz=widths,
        ht=ht_capa is not None,
        vht=vht_capa is not None,
        he=band.get("NL80211_BAND_ATTR_IFTYPE_DATA") is not None,
    )


def _channel(freq: dict[str, Any]) -> ChannelRead:
    frequency = int(freq["NL80211_FREQUENCY_ATTR_FREQ"])
    power = freq.get("NL80211_FREQUENCY_ATTR_MAX_TX_POWER")
    return ChannelRead(
        frequency_mhz=frequency,
        number=channel_number(frequency),
        disabled="NL80211_FREQUENCY_ATTR_DISABLED" in freq,
        no_ir="NL80211_FREQUENCY_ATTR_NO_IR" in freq,
        radar="NL80211_FREQUENCY_ATTR_RADAR" in freq,
        max_power_dbm=power / MBM_PER_DBM if isinstance(power, int) else None,
    )


def parse_interface(message: Any, netns: str | None = None) -> WifiInterfaceRead | None:
    """An interface of an interface dump made in ``netns`` (None: the device's own)."""
    attrs = _attrs(message)
    name, index = attrs.get("NL80211_ATTR_IFNAME"), attrs.get("NL80211_ATTR_IFINDEX")
    if not isinstance(name, str) or not isinstance(index, int):
        return None  # a wireless device without a netdev (a P2P device)
    frequency = attrs.get("NL80211_ATTR_WIPHY_FREQ")
    power = attrs.get("NL80211_ATTR_WIPHY_TX_POWER_LEVEL")
    width = attrs.get("NL80211_ATTR_CHANNEL_WIDTH")
    return WifiInterfaceRead(
        name=name,
        index=index,
        phy=int(attrs.get("NL80211_ATTR_WIPHY") or 0),
        mac=attrs.get("NL80211_ATTR_MAC"),
        type=IFTYPES.get(attrs.get("NL80211_ATTR_IFTYPE", 0), "unknown"),
        frequency_mhz=frequency if isinstance(frequency, int) else None,
        channel=channel_number(frequency) if isinstance(frequency, int) else None,
        width=CHANNEL_WIDTHS.get(width) if isinstance(width, int) else None,
        center_frequency_mhz=attrs.get("NL80211_ATTR_CENTER_FREQ1"),
        tx_power_dbm=power / MBM_PER_DBM if isinstance(power, int) else None,
        netns=netns,
    )


class SecurityRead(BaseModel):
    protocol: str = Field(description="open, WEP, WPA, WPA2, WPA2/WPA3 (transition), WPA3.")
    key_management: list[str] = Field(description="PSK, SAE, 802.1X, OWE, FT-PSK …")
    pairwise_ciphers: list[str]
    group_cipher: str | None


class BssRead(BaseModel):
    bssid: str
    ssid: str | None = Field(
        description="The network name when it is printable UTF-8; see ssid_hex otherwise."
    )
    ssid_hex: str = Field(description="The SSID's bytes, hex: exact whatever they are.")
    hidden: bool = Field(description="The SSID is absent, empty or all zero bytes.")
    frequency_mhz: int
    channel: int | None
    signal_dbm: float | None
    last_seen_ms: int | None = Field(description="Milliseconds since the BSS was last heard.")
    associated: bool
    security: SecurityRead


MAX_SSID_BYTES = 32


def _raw(parent: Any, name: str) -> bytes | None:
    """An attribute's payload bytes, not decoded by pyroute2 (IEs, the BSSID)."""
    for slot in parent["attrs"]:
        if slot[0] == name:
            cell = slot.cell[1]
            return bytes(cell.data[cell.offset + 4 : cell.offset + cell.length])
    return None


def _ssid_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def parse_bss(message: Any) -> BssRead | None:
    bss = message.get_attr("NL80211_ATTR_BSS")
    if bss is None:
        return None
    bssid = _raw(bss, "NL80211_BSS_BSSID")
    frequency = bss.get_attr("NL80211_BSS_FREQUENCY")
    if bssid is None or len(bssid) != 6 or not isinstance(frequency, int):
        return None
    data = (
        _raw(bss, "NL80211_BSS_INFORMATION_ELEMENTS") or _raw(bss, "NL80211_BSS_BEACON_IES") or b""
    )
    raw_ssid = (ies.ssid(data) or b"")[:MAX_SSID_BYTES]
    capability = int.from_bytes(_raw(bss, "NL80211_BSS_CAPABILITY") or b"\0\0", "little")
    offered = ies.security(data, capability)
    signal = _raw(bss, "NL80211_BSS_SIGNAL_MBM")
    seen = bss.get_attr("NL80211_BSS_SEEN_MS_AGO")
    return BssRead(
        bssid=bssid.hex(":"),
        ssid=_ssid_text(raw_ssid) if raw_ssid.strip(b"\0") else None,
        ssid_hex=raw_ssid.hex(),
        hidden=not raw_ssid.strip(b"\0"),
        frequency_mhz=frequency,
        channel=channel_number(frequency),
        signal_dbm=int.from_bytes(signal, "little", signed=True) / MBM_PER_DBM
        if signal is not None and len(signal) == 4
        else None,
        last_seen_ms=seen if isinstance(seen, int) else None,
        associated=bss.get_attr("NL80211_BSS_STATUS") == 1,
        security=SecurityRead(
            protocol=offered.protocol,
            key_management=offered.key_management,
            pairwise_ciphers=offered.pairwise,
            group_cipher=offered.group,
        ),
    )


class BitrateRead(BaseModel):
    mbps: float | None
    mode: str = Field(description="legacy, HT, VHT or HE.")
    mcs: int | None
    nss: int | None = Field(description="Spatial streams (VHT, HE).")
    guard_interval_us: float | None
    width_mhz: int


class StationRead(BaseModel):
    mac: str
    signal_dbm: int | None
    signal_avg_dbm: int | None
    tx_bitrate: BitrateRead | None
    rx_bitrate: BitrateRead | None
    rx_bytes: int | None
    tx_bytes: int | None
    rx_packets: int | None
    tx_packets: int | None
    tx_retries: int | None
    tx_failed: int | None
    connected_time_s: int | None
    inactive_time_ms: int | None


HE_GUARD_INTERVALS_US = {0: 0.8, 1: 1.6, 2: 3.2}
_WIDTH_FLAGS = (("160_MHZ_WIDTH", 160), ("80P80_MHZ_WIDTH", 160), ("80_MHZ_WIDTH", 80),
                ("40_MHZ_WIDTH", 40))  # fmt: skip


def _bitrate(rate: Any) -> BitrateRead | None:
    if rate is None:
        return None
    attrs = _attrs(rate)
    tenths = attrs.get("NL80211_RATE_INFO_BITRATE32") or attrs.get("NL80211_RATE_INFO_BITRATE")
    width = next((mhz for flag, mhz in _WIDTH_FLAGS if f"NL80211_RATE_INFO_{flag}" in attrs), 20)
    short_gi = "NL80211_RATE_INFO_SHORT_GI" in attrs
    if "NL80211_RATE_INFO_HE_MCS" in attrs:
        mode, mcs = "HE", attrs["NL80211_RATE_INFO_HE_MCS"]
        nss = attrs.get("NL80211_RATE_INFO_HE_NSS")
        gi: float | None = HE_GUARD_INTERVALS_US.get(attrs.get("NL80211_RATE_INFO_HE_GI", 0))
    elif "NL80211_RATE_INFO_VHT_MCS" in attrs:
        mode, mcs = "VHT", attrs["NL80211_RATE_INFO_VHT_MCS"]
        nss, gi = attrs.get("NL80211_RATE_INFO_VHT_NSS"), 0.4 if short_gi else 0.8
    elif "NL80211_RATE_INFO_MCS" in attrs:
        mode, mcs, nss, gi = "HT", attrs["NL80211_RATE_INFO_MCS"], None, 0.4 if short_gi else 0.8
    else:
        mode, mcs, nss, gi = "legacy", None, None, None
    return BitrateRead(
        mbps=tenths / 10 if isinstance(tenths, int) else None,
        mode=mode,
        mcs=mcs,
        nss=nss,
        guard_interval_us=gi,
        width_mhz=width,
    )


def parse_station(message: Any) -> StationRead | None:
    mac = message.get_attr("NL80211_ATTR_MAC")
    info = message.get_attr("NL80211_ATTR_STA_INFO")
    if not isinstance(mac, str) or info is None:
        return None
    attrs = _attrs(info)

    def number(name: str, wide: str | None = None) -> int | None:
        value = attrs.get(f"NL80211_STA_INFO_{wide}") if wide else None
        value = attrs.get(f"NL80211_STA_INFO_{name}") if value is None else value
        return value if isinstance(value, int) else None

    return StationRead(
        mac=mac,
        signal_dbm=number("SIGNAL"),
        signal_avg_dbm=number("SIGNAL_AVG"),
        tx_bitrate=_bitrate(attrs.get("NL80211_STA_INFO_TX_BITRATE")),
        rx_bitrate=_bitrate(attrs.get("NL80211_STA_INFO_RX_BITRATE")),
        rx_bytes=number("RX_BYTES", "RX_BYTES64"),
        tx_bytes=number("TX_BYTES", "TX_BYTES64"),
        rx_packets=number("RX_PACKETS"),
        tx_packets=number("TX_PACKETS"),
        tx_retries=number("TX_RETRIES"),
        tx_failed=number("TX_FAILED"),
        connected_time_s=number("CONNECTED_TIME"),
        inactive_time_ms=number("INACTIVE_TIME"),
    )


class LinkRead(BaseModel):
    """A managed interface's link to its access point; ``connected`` false and the rest
    null when it has none."""

    connected: bool
    ssid: str | None
    ssid_hex: str | None
    bssid: str | None
    frequency_mhz: int | None
    channel: int | None
    width: str | None
    station: StationRead | None = Field(description="What the kernel counts for the AP.")


REG_RULE_FLAGS = {
    1 << 0: "no-ofdm",
    1 << 1: "no-cck",
    1 << 2: "no-indoor",
    1 << 3: "no-outdoor",
    1 << 4: "dfs",
    1 << 5: "ptp-only",
    1 << 6: "ptmp-only",
    1 << 7: "no-ir",
    1 << 11: "auto-bw",
    1 << 12: "ir-concurrent",
    1 << 13: "no-ht40minus",
    1 << 14: "no-ht40plus",
    1 << 15: "no-80mhz",
    1 << 16: "no-160mhz",
}
DFS_REGIONS = {0: None, 1: "FCC", 2: "ETSI", 3: "JP"}
KHZ_PER_MHZ = 1000


class RegulatoryRuleRead(BaseModel):
    start_mhz: float
    end_mhz: float
    max_bandwidth_mhz: float
    max_eirp_dbm: float | None
    flags: list[str] = Field(description="dfs, no-ir, no-outdoor, auto-bw …")


class RegulatoryDomainRead(BaseModel):
    country: str | None = Field(description="ISO 3166 alpha-2, or 00 for the world domain.")
    dfs_region: str | None = Field(description="FCC, ETSI or JP.")
    phy: int | None = Field(description="The radio of a self-managed domain; null: global.")
    rules: list[RegulatoryRuleRead]


class RegulatoryRead(BaseModel):
    country: str | None
    dfs_region: str | None
    rules: list[RegulatoryRuleRead]
    self_managed: list[RegulatoryDomainRead] = Field(
        description="Radios whose firmware keeps its own domain (they ignore the global one)."
    )


def _dfs_region(value: object) -> str | None:
    if isinstance(value, str):  # pyroute2 may hand the byte over as hex text
        try:
            value = int(value, 16)
        except ValueError:
            return None
    return DFS_REGIONS.get(value) if isinstance(value, int) else None


def _rule(rule: Any) -> RegulatoryRuleRead | None:
    attrs = _attrs(rule)
    start, end = (
        attrs.get("NL80211_ATTR_FREQ_RANGE_START"),
        attrs.get("NL80211_ATTR_FREQ_RANGE_END"),
    )
    if not isinstance(start, int) or not isinstance(end, int):
        return None
    width = attrs.get("NL80211_ATTR_FREQ_RANGE_MAX_BW")
    eirp = attrs.get("NL80211_ATTR_POWER_RULE_MAX_EIRP")
    flags = attrs.get("NL80211_ATTR_REG_RULE_FLAGS")
    return RegulatoryRuleRead(
        start_mhz=start / KHZ_PER_MHZ,
        end_mhz=end / KHZ_PER_MHZ,
        max_bandwidth_mhz=width / KHZ_PER_MHZ if isinstance(width, int) else 0,
        max_eirp_dbm=eirp / MBM_PER_DBM if isinstance(eirp, int) else None,
        flags=[
            name for bit, name in REG_RULE_FLAGS.items() if isinstance(flags, int) and flags & bit
        ],
    )


def parse_regulatory(messages: Iterable[Any]) -> RegulatoryRead:
    domains = []
    for message in messages:
        attrs = _attrs(message)
        if "NL80211_ATTR_REG_RULES" not in attrs:
            continue  # the dump's ACK
        country = attrs.get("NL80211_ATTR_REG_ALPHA2")
        phy = attrs.get("NL80211_ATTR_WIPHY")
        domains.append(
            RegulatoryDomainRead(
                country=country if isinstance(country, str) and country.isprintable() else None,
                dfs_region=_dfs_region(attrs.get("NL80211_ATTR_DFS_REGION")),
                phy=phy if isinstance(phy, int) else None,
                rules=[r for rule in attrs["NL80211_ATTR_REG_RULES"] if (r := _rule(rule))],
            )
        )
    world = next((domain for domain in domains if domain.phy is None), None)
    return RegulatoryRead(
        country=world.country if world else None,
        dfs_region=world.dfs_region if world else None,
        rules=world.rules if world else [],
        self_managed=[domain for domain in domains if domain.phy is not None],
    )
