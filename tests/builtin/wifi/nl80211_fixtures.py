"""nl80211 fixtures built with pyroute2's own message classes (pyroute2 0.9.7).

Every fixture is the exact byte string the kernel would send for one netlink message
(header seq/pid left 0 and flags 0: the fake kernel stamps them per request). The same
shape comes out of a recorder on a real device (see recorder.md), and round-trips
through JSON (`Fixture.to_json` / `Fixture.from_json`, base64 per message).

Encoding notes (why the "encoder twins" below exist):

* Several pyroute2 nl80211 NLA classes are decode-only: ``bss.elementsBinary`` (the
  IEs), ``bss.TSF``, ``bss.SignalMBM``, ``bss.capability``, ``STAInfo.STAFlags``,
  ``supported_iftypes``, ``cipher_suites``, ``supported_commands``. The twins map those
  attributes to encodable types with the same wire format (``cdata``/``uint64``/
  ``int32``/``uint16``); decoding is always done with the REAL ``nl80211cmd``.
* pyroute2 encodes ``*array`` NLAs with 1-based cell types; the kernel numbers bands
  from 0 (NL80211_BAND_2GHZ = 0) and channels/reg rules from 0, and consumers need the
  band number. Arrays are therefore assembled here with explicit cell types
  (``nest()``), their cells still encoded by pyroute2's own nested classes.
* A subclass of an nlmsg class with a different ``nla_map`` must reset
  ``_nlmsg_base__compiled_nla = False``; otherwise it silently reuses the parent's
  compiled NLA table once the parent has been used (pyroute2 caches the table on the
  class and the flag is inherited).
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink import CTRL_CMD_NEWFAMILY, GENL_ID_CTRL, ctrlmsg
from pyroute2.netlink.nl80211 import (
    NL80211_CMD_GET_REG,
    NL80211_CMD_NEW_INTERFACE,
    NL80211_CMD_NEW_SCAN_RESULTS,
    NL80211_CMD_NEW_STATION,
    NL80211_CMD_NEW_WIPHY,
    NL80211_CMD_SCAN_ABORTED,
    NL80211_CMD_TRIGGER_SCAN,
    NL80211_NAMES,
    MarshalNl80211,
    nl80211cmd,
)

FORMAT = "hostcore-nl80211-fixture/1"

# A plausible dynamic family id and group ids (a real kernel assigns them at boot).
FAMILY_ID = 0x22
GROUPS = {
    "config": 5,
    "scan": 6,
    "regulatory": 7,
    "mlme": 8,
    "vendor": 9,
    "nan": 10,
    "testmode": 11,
}
NL80211_MAXATTR = 325  # NUM_NL80211_ATTR - 1 on 6.x kernels
GENERATION = 7  # cfg80211_rdev_list_generation

# nl80211.h values used below
BAND_2GHZ, BAND_5GHZ = 0, 1
IFTYPE = {
    "adhoc": 1,
    "station": 2,
    "ap": 3,
    "ap_vlan": 4,
    "monitor": 6,
    "mesh_point": 7,
    "p2p_client": 8,
    "p2p_go": 9,
    "p2p_device": 10,
}
CHAN_WIDTH_20_NOHT, CHAN_WIDTH_20, CHAN_WIDTH_40, CHAN_WIDTH_80 = 0, 1, 2, 3
NL80211_CHAN_NO_HT = 0
DFS_USABLE, DFS_UNAVAILABLE, DFS_AVAILABLE = 0, 1, 2
NL80211_DFS_ETSI = 2
RRF_NO_OUTDOOR, RRF_DFS, RRF_AUTO_BW = 1 << 3, 1 << 4, 1 << 11
RRF_NO_IR = 1 << 7
STA_FLAG = {
    "authorized": 1 << 1,
    "short_preamble": 1 << 2,
    "wme": 1 << 3,
    "mfp": 1 << 4,
    "authenticated": 1 << 5,
    "tdls_peer": 1 << 6,
    "associated": 1 << 7,
}
BSS_STATUS_ASSOCIATED = 1
CIPHER = {
    "WEP40": 0x000FAC01,
    "TKIP": 0x000FAC02,
    "CCMP": 0x000FAC04,
    "WEP104": 0x000FAC05,
    "AES_CMAC": 0x000FAC06,
    "GCMP": 0x000FAC08,
    "GCMP_256": 0x000FAC09,
    "CCMP_256": 0x000FAC0A,
    "BIP_GMAC_128": 0x000FAC0B,
    "BIP_GMAC_256": 0x000FAC0C,
    "BIP_CMAC_256": 0x000FAC0D,
}


# --------------------------------------------------------------------------- raw NLA helpers


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def nla(nla_type: int, payload: bytes) -> bytes:
    """One raw NLA (header + payload), padded."""
    return pad4(struct.pack("=HH", 4 + len(payload), nla_type) + payload)


def nest(cells: list[tuple[int, bytes]]) -> bytes:
    """The payload of a nest whose cells are numbered by the caller (kernel style)."""
    return b"".join(nla(t, p) for t, p in cells)


def encode_cell(cls: type, attrs: list, cell_type: int = 0) -> bytes:
    """Encode ``attrs`` with a pyroute2 nested NLA class; return the cell's PAYLOAD
    (the caller wraps it with the kernel's cell type)."""
    inst = cls()
    inst["attrs"] = attrs
    inst["header"]["type"] = cell_type
    inst.encode()
    data = bytes(inst.data)
    (length,) = struct.unpack_from("=H", data, 0)
    return data[4:length]


def flags_nest(names: list[str]) -> bytes:
    """A nest of NLA_FLAGs numbered by interface type (SUPPORTED_IFTYPES & co)."""
    return nest([(IFTYPE[n], b"") for n in names])


def u32s(values) -> bytes:
    return b"".join(struct.pack("=I", v) for v in values)


# --------------------------------------------------------------------------- encoder twins


def twin(
    base: type, overrides: dict[str, str], extra: list[tuple[int, str, str]] = (), **members: Any
) -> type:
    """A copy of ``base`` whose NLA table encodes the decode-only attributes."""
    table = [(i, name, overrides.get(name, kind)) for i, (name, kind) in enumerate(base.nla_map)]
    known = {i for i, _, _ in table}
    for index, name, kind in extra:
        if index in known:
            table[index] = (index, name, kind)
        else:
            table.append((index, name, kind))
    attrs = {"nla_map": tuple(table), "_nlmsg_base__compiled_nla": False, **members}
    return type(base.__name__ + "_enc", (base,), attrs)


BssEnc = twin(
    nl80211cmd.bss,
    {
        "NL80211_BSS_TSF": "uint64",
        "NL80211_BSS_CAPABILITY": "uint16",
        "NL80211_BSS_INFORMATION_ELEMENTS": "cdata",
        "NL80211_BSS_SIGNAL_MBM": "int32",
        "NL80211_BSS_BEACON_IES": "cdata",
        "NL80211_BSS_BSSID": "cdata",
        "NL80211_BSS_PRESP_DATA": "flag",
    },
    # kernel attributes after NL80211_BSS_PRESP_DATA (pyroute2 0.9.7 names 15
    # "NL80211_BSS_MAX" and knows nothing after it)
    extra=[
        (15, "NL80211_BSS_LAST_SEEN_BOOTTIME", "uint64"),
        (16, "NL80211_BSS_PAD", "hex"),
        (17, "NL80211_BSS_PARENT_TSF", "uint64"),
        (18, "NL80211_BSS_PARENT_BSSID", "cdata"),
        (19, "NL80211_BSS_CHAIN_SIGNAL", "cdata"),
        (20, "NL80211_BSS_FREQUENCY_OFFSET", "uint32"),
    ],
)
StaEnc = twin(
    nl80211cmd.STAInfo,
    {
        "NL80211_STA_INFO_STA_FLAGS": "cdata",
        "NL80211_STA_INFO_CHAIN_SIGNAL": "cdata",
        "NL80211_STA_INFO_CHAIN_SIGNAL_AVG": "cdata",
    },
)
Nl80211Enc = twin(
    nl80211cmd,
    {
        "NL80211_ATTR_WIPHY_BANDS": "cdata",
        "NL80211_ATTR_SUPPORTED_IFTYPES": "cdata",
        "NL80211_ATTR_SOFTWARE_IFTYPES": "cdata",
        "NL80211_ATTR_CIPHER_SUITES": "cdata",
        "NL80211_ATTR_SUPPORTED_COMMANDS": "cdata",
        "NL80211_ATTR_REG_RULES": "cdata",
        "NL80211_ATTR_SCAN_SSIDS": "cdata",
        "NL80211_ATTR_SCAN_FREQUENCIES": "cdata",
        "NL80211_ATTR_SPLIT_WIPHY_DUMP": "flag",
        "NL80211_ATTR_WIPHY_SELF_MANAGED_REG": "flag",
        "NL80211_ATTR_BSS": "bss",
        "NL80211_ATTR_STA_INFO": "STAInfo",
        "NL80211_ATTR_4ADDR": "uint8",
        "NL80211_ATTR_DFS_REGION": "uint8",
        "NL80211_ATTR_WIPHY_CHANNEL_TYPE": "uint32",
        "NL80211_ATTR_WIPHY_FRAG_THRESHOLD": "uint32",
        "NL80211_ATTR_WIPHY_RTS_THRESHOLD": "uint32",
        "NL80211_ATTR_FEATURE_FLAGS": "uint32",
        "NL80211_ATTR_MAX_REMAIN_ON_CHANNEL_DURATION": "uint32",
        "NL80211_ATTR_EXT_FEATURES": "cdata",
    },
    bss=BssEnc,
    STAInfo=StaEnc,
)


def message(cmd: int, attrs: list, *, family_id: int = FAMILY_ID) -> bytes:
    """One nl80211 message as the kernel sends it (seq/pid/flags 0, genl version 1)."""
    msg = Nl80211Enc()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg["header"]["type"] = family_id
    msg["header"]["flags"] = 0
    msg.encode()
    return bytes(msg.data)


def family_reply(family_id: int = FAMILY_ID, groups: dict[str, int] = GROUPS) -> bytes:
    """CTRL_CMD_NEWFAMILY for nl80211 (ops omitted; pyroute2 reads id and groups)."""
    msg = ctrlmsg()
    msg["cmd"] = CTRL_CMD_NEWFAMILY
    msg["version"] = 2
    msg["attrs"] = [
        ["CTRL_ATTR_FAMILY_NAME", "nl80211"],
        ["CTRL_ATTR_FAMILY_ID", family_id],
        ["CTRL_ATTR_VERSION", 1],
        ["CTRL_ATTR_HDRSIZE", 0],
        ["CTRL_ATTR_MAXATTR", NL80211_MAXATTR],
        # kernel numbers mcast group cells from 1: pyroute2's array encoder matches
        [
            "CTRL_ATTR_MCAST_GROUPS",
            [
                {"attrs": [["CTRL_ATTR_MCAST_GRP_NAME", name], ["CTRL_ATTR_MCAST_GRP_ID", gid]]}
                for name, gid in groups.items()
            ],
        ],
    ]
    msg["header"]["type"] = GENL_ID_CTRL
    msg.encode()
    return bytes(msg.data)


# --------------------------------------------------------------------------- phys


@dataclass
class Channel:
    freq: int
    power_mbm: int = 2000
    disabled: bool = False
    no_ir: bool = False
    radar: bool = False
    dfs_state: int = DFS_USABLE
    dfs_time_ms: int = 0
    cac_ms: int = 60000
    no_ht40_minus: bool = False
    no_ht40_plus: bool = False
    no_80: bool = False
    no_160: bool = True
    indoor_only: bool = False

    def attrs(self, large: bool) -> list:
        """nl80211_msg_put_channel(): ``large`` is the split dump's extra detail."""
        out: list = [["NL80211_FREQUENCY_ATTR_FREQ", self.freq]]
        if self.disabled:
            out.append(["NL80211_FREQUENCY_ATTR_DISABLED", True])
        if self.no_ir:
            out += [
                ["NL80211_FREQUENCY_ATTR_NO_IR", True],
                ["__NL80211_FREQUENCY_ATTR_NO_IBSS", True],
            ]
        if self.radar:
            out.append(["NL80211_FREQUENCY_ATTR_RADAR", True])
            if large:
                out += [
                    ["NL80211_FREQUENCY_ATTR_DFS_STATE", self.dfs_state],
                    ["NL80211_FREQUENCY_ATTR_DFS_TIME", self.dfs_time_ms],
                    ["NL80211_FREQUENCY_ATTR_DFS_CAC_TIME", self.cac_ms],
                ]
        if large:
            for flag, name in (
                (self.no_ht40_minus, "NO_HT40_MINUS"),
                (self.no_ht40_plus, "NO_HT40_PLUS"),
                (self.no_80, "NO_80MHZ"),
                (self.no_160, "NO_160MHZ"),
                (self.indoor_only, "INDOOR_ONLY"),
            ):
                if flag:
                    out.append(["NL80211_FREQUENCY_ATTR_" + name, True])
        if not self.disabled:
            out.append(["NL80211_FREQUENCY_ATTR_MAX_TX_POWER", self.power_mbm])
        return out


@dataclass
class Band:
    index: int
    channels: list[Channel]
    rates_100kbps: list[int]
    ht_capa: int | None = None
    ht_mcs_rx_mask: list[int] = field(default_factory=lambda: [0xFF] + [0] * 9)
    ampdu_factor: int = 3
    ampdu_density: int = 5
    vht_capa: int | None = None
    vht_mcs: dict | None = None
    he: list | None = None  # IFTYPE_DATA cells: list of attr lists

    def rateinfo(self) -> list:
        """nl80211_send_band_rateinfo(): the band nest's first split message."""
        out: list = []
        if self.ht_capa is not None:
            out += [
                [
                    "NL80211_BAND_ATTR_HT_MCS_SET",
                    {
                        "rx_mask": self.ht_mcs_rx_mask,
                        "rx_highest": 0,
                        "tx_params": 1,
                        "reserved": [0, 0, 0],
                    },
                ],
                ["NL80211_BAND_ATTR_HT_CAPA", self.ht_capa],
                ["NL80211_BAND_ATTR_HT_AMPDU_FACTOR", self.ampdu_factor],
                ["NL80211_BAND_ATTR_HT_AMPDU_DENSITY", self.ampdu_density],
            ]
        if self.vht_capa is not None:
            out += [
                ["NL80211_BAND_ATTR_VHT_MCS_SET", self.vht_mcs],
                ["NL80211_BAND_ATTR_VHT_CAPA", self.vht_capa],
            ]
        if self.he:
            cells = [
                (i + 1, encode_cell(nl80211cmd.band.iftype_data, attrs))
                for i, attrs in enumerate(self.he)
            ]
            out.append(["NL80211_BAND_ATTR_IFTYPE_DATA", nest(cells)])
        rates = [
            (
                i,
                encode_cell(
                    nl80211cmd.band.bitrate,
                    [["NL80211_BITRATE_ATTR_RATE", r]]
                    + (
                        [["NL80211_BITRATE_ATTR_2GHZ_SHORTPREAMBLE", True]]
                        if self.index == BAND_2GHZ and r in (20, 55, 110)
                        else []
                    ),
                ),
            )
            for i, r in enumerate(self.rates_100kbps)
        ]
        out.append(["NL80211_BAND_ATTR_RATES", nest(rates)])
        return out

    def freqs(self, indices, large: bool) -> list:
        cells = [
            (i, encode_cell(nl80211cmd.band.frequency, self.channels[i].attrs(large)))
            for i in indices
        ]
        return [["NL80211_BAND_ATTR_FREQS", nest(cells)]]


BandEnc = twin(
    nl80211cmd.band,
    {
        "NL80211_BAND_ATTR_FREQS": "cdata",
        "NL80211_BAND_ATTR_RATES": "cdata",
        "NL80211_BAND_ATTR_IFTYPE_DATA": "cdata",
    },
)


def bands_payload(parts: list[tuple[int, list]]) -> bytes:
    """NL80211_ATTR_WIPHY_BANDS payload: band cells numbered by band (0 = 2.4 GHz)."""
    return nest([(index, encode_cell(BandEnc, attrs)) for index, attrs in parts])


@dataclass
class Phy:
    index: int
    name: str
    mac: str
    iftypes: list[str]
    software_iftypes: list[str]
    ciphers: list[str]
    bands: list[Band]
    commands: list[int]
    max_scan_ssids: int = 10
    max_scan_ie_len: int = 2048
    antennas: tuple[int, int] = (0, 0)
    features: int = 0
    ext_features: bytes = b""
    max_roc_ms: int = 5000

    def head(self) -> list:
        return [
            ["NL80211_ATTR_WIPHY", self.index],
            ["NL80211_ATTR_WIPHY_NAME", self.name],
            ["NL80211_ATTR_GENERATION", GENERATION],
        ]

    def state_attrs(self) -> list[list]:
        """nl80211_send_wiphy() split states other than the bands, in kernel order."""
        return [
            [  # 0
                ["NL80211_ATTR_WIPHY_RETRY_SHORT", 7],
                ["NL80211_ATTR_WIPHY_RETRY_LONG", 4],
                ["NL80211_ATTR_WIPHY_FRAG_THRESHOLD", 0xFFFFFFFF],
                ["NL80211_ATTR_WIPHY_RTS_THRESHOLD", 0xFFFFFFFF],
                ["NL80211_ATTR_WIPHY_COVERAGE_CLASS", 0],
                ["NL80211_ATTR_MAX_NUM_SCAN_SSIDS", self.max_scan_ssids],
                ["NL80211_ATTR_MAX_NUM_SCHED_SCAN_SSIDS", 16],
                ["NL80211_ATTR_MAX_SCAN_IE_LEN", self.max_scan_ie_len],
                ["NL80211_ATTR_MAX_SCHED_SCAN_IE_LEN", self.max_scan_ie_len],
                ["NL80211_ATTR_MAX_MATCH_SETS", 16],
            ],
            [  # 1
                ["NL80211_ATTR_CIPHER_SUITES", u32s(CIPHER[c] for c in self.ciphers)],
                ["NL80211_ATTR_MAX_NUM_PMKIDS", 16],
                ["NL80211_ATTR_WIPHY_ANTENNA_AVAIL_TX", self.antennas[0]],
                ["NL80211_ATTR_WIPHY_ANTENNA_AVAIL_RX", self.antennas[1]],
            ],
            [["NL80211_ATTR_SUPPORTED_IFTYPES", flags_nest(self.iftypes)]],  # 2
            # 3: bands (see split_messages)
            [
                [
                    "NL80211_ATTR_SUPPORTED_COMMANDS",  # 4: cells numbered from 1
                    nest([(i + 1, struct.pack("=I", c)) for i, c in enumerate(self.commands)]),
                ]
            ],
            [["NL80211_ATTR_MAX_REMAIN_ON_CHANNEL_DURATION", self.max_roc_ms]],  # 5
            [["NL80211_ATTR_SOFTWARE_IFTYPES", flags_nest(self.software_iftypes)]],  # 7
            [["NL80211_ATTR_FEATURE_FLAGS", self.features]],  # 8
            [["NL80211_ATTR_MAC", self.mac]],  # 9
            [["NL80211_ATTR_EXT_FEATURES", self.ext_features]],  # 13-ish
        ]

    def split_messages(self) -> list[bytes]:
        """The split dump: one message per state, one per band header, one per channel."""
        states = self.state_attrs()
        out = [message(NL80211_CMD_NEW_WIPHY, self.head() + a) for a in states[:3]]
        for band in self.bands:
            out.append(
                message(
                    NL80211_CMD_NEW_WIPHY,
                    [
                        *self.head(),
                        [
                            "NL80211_ATTR_WIPHY_BANDS",
                            bands_payload([(band.index, band.rateinfo())]),
                        ],
                    ],
                )
            )
            for i in range(len(band.channels)):
                out.append(
                    message(
                        NL80211_CMD_NEW_WIPHY,
                        [
                            *self.head(),
                            [
                                "NL80211_ATTR_WIPHY_BANDS",
                                bands_payload([(band.index, band.freqs([i], large=True))]),
                            ],
                        ],
                    )
                )
        out += [message(NL80211_CMD_NEW_WIPHY, self.head() + a) for a in states[3:]]
        return out

    def unsplit_message(self) -> bytes:
        """The legacy one-message answer (small channel detail)."""
        attrs = self.head()
        states = self.state_attrs()
        for a in states[:3]:
            attrs += a
        attrs.append(
            [
                "NL80211_ATTR_WIPHY_BANDS",
                bands_payload(
                    [
                        (b.index, b.rateinfo() + b.freqs(range(len(b.channels)), large=False))
                        for b in self.bands
                    ]
                ),
            ]
        )
        for a in states[3:]:
            attrs += a
        return message(NL80211_CMD_NEW_WIPHY, attrs)


RATES_2G = [10, 20, 55, 110, 60, 90, 120, 180, 240, 360, 480, 540]
RATES_5G = [60, 90, 120, 180, 240, 360, 480, 540]


def channels_2g(de_13: bool = True) -> list[Channel]:
    chans = []
    for ch in range(1, 15):
        freq = 2484 if ch == 14 else 2407 + 5 * ch
        chans.append(
            Channel(
                freq,
                disabled=(ch == 14),
                no_ir=(ch in (12, 13) and not de_13),
                no_ht40_minus=ch < 5,
                no_ht40_plus=ch > 9,
            )
        )
    return chans


def channels_5g(*, max_dbm: int, ch144: bool, srd_no_ir: bool) -> list[Channel]:
    chans = []
    for ch in (36, 40, 44, 48):
        chans.append(Channel(5000 + 5 * ch, power_mbm=min(max_dbm, 23) * 100))
    for ch in (52, 56, 60, 64):
        chans.append(
            Channel(
                5000 + 5 * ch,
                power_mbm=min(max_dbm, 20) * 100,
                radar=True,
                no_ir=True,
                dfs_state=DFS_USABLE,
            )
        )
    for ch in (100, 104, 108, 112, 116, 120, 124, 128, 132, 136, 140, 144):
        chans.append(
            Channel(
                5000 + 5 * ch,
                power_mbm=min(max_dbm, 27) * 100,
                radar=True,
                no_ir=(ch != 100),
                dfs_state=DFS_AVAILABLE if ch == 100 else DFS_USABLE,
                dfs_time_ms=1_234_000 if ch == 100 else 0,
                disabled=(ch == 144 and not ch144),
            )
        )
    for ch in (149, 153, 157, 161, 165):
        chans.append(Channel(5000 + 5 * ch, power_mbm=1400, no_ir=srd_no_ir))
    return chans


COMMON_COMMANDS = [
    NL80211_NAMES[n]
    for n in (
        "NL80211_CMD_NEW_INTERFACE",
        "NL80211_CMD_SET_INTERFACE",
        "NL80211_CMD_NEW_KEY",
        "NL80211_CMD_START_AP",
        "NL80211_CMD_NEW_STATION",
        "NL80211_CMD_SET_BSS",
        "NL80211_CMD_AUTHENTICATE",
        "NL80211_CMD_ASSOCIATE",
        "NL80211_CMD_DEAUTHENTICATE",
        "NL80211_CMD_DISASSOCIATE",
        "NL80211_CMD_JOIN_IBSS",
        "NL80211_CMD_REMAIN_ON_CHANNEL",
        "NL80211_CMD_SET_TX_BITRATE_MASK",
        "NL80211_CMD_FRAME",
        "NL80211_CMD_FRAME_WAIT_CANCEL",
        "NL80211_CMD_SET_WIPHY_NETNS",
        "NL80211_CMD_SET_CHANNEL",
        "NL80211_CMD_START_SCHED_SCAN",
        "NL80211_CMD_PROBE_CLIENT",
        "NL80211_CMD_SET_NOACK_MAP",
        "NL80211_CMD_REGISTER_BEACONS",
        "NL80211_CMD_START_P2P_DEVICE",
        "NL80211_CMD_CONNECT",
        "NL80211_CMD_DISCONNECT",
    )
]


def rpi4_phy() -> Phy:
    """Raspberry Pi 4 / CM4 on-board BCM43455 (brcmfmac), 1x1 HT/VHT, no monitor mode."""
    return Phy(
        index=0,
        name="phy0",
        mac="dc:a6:32:12:34:56",
        iftypes=["adhoc", "station", "ap", "p2p_client", "p2p_go", "p2p_device"],
        software_iftypes=[],
        ciphers=["WEP40", "WEP104", "TKIP", "CCMP", "AES_CMAC"],
        bands=[
            Band(
                BAND_2GHZ, channels_2g(), RATES_2G, ht_capa=0x1062, ampdu_factor=3, ampdu_density=7
            ),
            Band(
                BAND_5GHZ,
                channels_5g(max_dbm=20, ch144=False, srd_no_ir=True),
                RATES_5G,
                ht_capa=0x1062,
                ampdu_factor=3,
                ampdu_density=7,
                vht_capa=0x0F8259B2,
                vht_mcs={
                    "rx_mcs_map": 0xFFFE,
                    "rx_highest": 433,
                    "tx_mcs_map": 0xFFFE,
                    "tx_highest": 433,
                },
            ),
        ],
        commands=COMMON_COMMANDS,
        max_scan_ssids=10,
        max_scan_ie_len=2048,
        features=0x2000_0000 | 0x0400_0000,
        ext_features=bytes([0x00, 0x00, 0x20, 0x00, 0x00]),
    )


HE_CAP_MAC = [0x01, 0x78, 0xC8, 0x1A, 0x40, 0x00]
HE_CAP_PHY = [0x0E, 0x3F, 0x02, 0x00, 0xFD, 0x09, 0x80, 0x0E, 0xCF, 0xF2, 0x00]
HE_MCS = {
    "rx_mcs_80": 0xFFFA,
    "tx_mcs_80": 0xFFFA,
    "rx_mcs_160": 0xFFFA,
    "tx_mcs_160": 0xFFFA,
    "rx_mcs_80p80": 0xFFFF,
    "tx_mcs_80p80": 0xFFFF,
}
HE_PPE = [0x61, 0x1C, 0xC7, 0x71]


def ax200_phy() -> Phy:
    """Intel Wi-Fi 6 AX200 (iwlwifi), 2x2 HT/VHT/HE, monitor capable, self-managed reg."""
    he_cells = [
        [
            ["NL80211_BAND_IFTYPE_ATTR_IFTYPES", {"attrs": [["NL80211_IFTYPE_STATION", True]]}],
            ["NL80211_BAND_IFTYPE_ATTR_HE_CAP_MAC", HE_CAP_MAC],
            ["NL80211_BAND_IFTYPE_ATTR_HE_CAP_PHY", HE_CAP_PHY],
            ["NL80211_BAND_IFTYPE_ATTR_HE_CAP_MCS_SET", HE_MCS],
            ["NL80211_BAND_IFTYPE_ATTR_HE_CAP_PPE", HE_PPE],
        ]
    ]
    return Phy(
        index=1,
        name="phy1",
        mac="a0:a4:c5:6e:7f:80",
        iftypes=["station", "ap", "monitor", "p2p_client", "p2p_go", "p2p_device"],
        software_iftypes=["monitor"],
        ciphers=[
            "WEP40",
            "WEP104",
            "TKIP",
            "CCMP",
            "AES_CMAC",
            "GCMP",
            "GCMP_256",
            "CCMP_256",
            "BIP_GMAC_128",
            "BIP_GMAC_256",
            "BIP_CMAC_256",
        ],
        bands=[
            Band(
                BAND_2GHZ,
                channels_2g(),
                RATES_2G,
                ht_capa=0x01FF,
                ht_mcs_rx_mask=[0xFF, 0xFF] + [0] * 8,
                ampdu_factor=3,
                ampdu_density=0,
                he=he_cells,
            ),
            Band(
                BAND_5GHZ,
                channels_5g(max_dbm=22, ch144=True, srd_no_ir=True),
                RATES_5G,
                ht_capa=0x01FF,
                ht_mcs_rx_mask=[0xFF, 0xFF] + [0] * 8,
                ampdu_factor=3,
                ampdu_density=0,
                vht_capa=0x039071F6,
                vht_mcs={
                    "rx_mcs_map": 0xFFFA,
                    "rx_highest": 0,
                    "tx_mcs_map": 0xFFFA,
                    "tx_highest": 0,
                },
                he=he_cells,
            ),
        ],
        commands=[*COMMON_COMMANDS, NL80211_NAMES["NL80211_CMD_CHANNEL_SWITCH"]],
        max_scan_ssids=20,
        max_scan_ie_len=422,
        antennas=(3, 3),
        features=0x5E0F_D400,
        ext_features=bytes([0x1A, 0x42, 0x90, 0x39, 0x0C, 0x08]),
    )


# --------------------------------------------------------------------------- interfaces


def interface(
    ifindex,
    name,
    phy,
    wdev,
    mac,
    iftype,
    *,
    freq=None,
    width=None,
    center1=None,
    channel_type=None,
    txpower_mbm=None,
    ssid=None,
) -> bytes:
    """nl80211_send_iface()."""
    attrs = [
        ["NL80211_ATTR_IFINDEX", ifindex],
        ["NL80211_ATTR_IFNAME", name],
        ["NL80211_ATTR_IFTYPE", iftype],
        ["NL80211_ATTR_WIPHY", phy],
        ["NL80211_ATTR_WDEV", wdev],
        ["NL80211_ATTR_MAC", mac],
        ["NL80211_ATTR_GENERATION", 42],
        ["NL80211_ATTR_4ADDR", 0],
    ]
    if freq is not None:
        attrs.append(["NL80211_ATTR_WIPHY_FREQ", freq])
        attrs.append(["NL80211_ATTR_CHANNEL_WIDTH", width])
        if channel_type is not None:
            attrs.append(["NL80211_ATTR_WIPHY_CHANNEL_TYPE", channel_type])
        attrs.append(["NL80211_ATTR_CENTER_FREQ1", center1 or freq])
    if txpower_mbm is not None:
        attrs.append(["NL80211_ATTR_WIPHY_TX_POWER_LEVEL", txpower_mbm])
    if ssid is not None:
        attrs.append(["NL80211_ATTR_SSID", ssid])
    return message(NL80211_CMD_NEW_INTERFACE, attrs)


WLAN0, WLAN1, MON0 = 3, 4, 5
AP_MAC = "3c:a6:2f:aa:bb:cc"  # AVM FRITZ!Box, 5 GHz VHT80, wlan0 associated
AP6_MAC = "3c:a6:2f:aa:bb:cd"  # same box, HE, wlan1 associated


def interfaces() -> list[bytes]:
    return [
        interface(
            WLAN0,
            "wlan0",
            0,
            0x1,
            "dc:a6:32:12:34:56",
            IFTYPE["station"],
            freq=5180,
            width=CHAN_WIDTH_80,
            center1=5210,
            txpower_mbm=3100,
            ssid="HomeNet",
        ),
        interface(
            WLAN1,
            "wlan1",
            1,
            0x100000001,
            "a0:a4:c5:6e:7f:80",
            IFTYPE["station"],
            freq=5180,
            width=CHAN_WIDTH_80,
            center1=5210,
            txpower_mbm=2200,
            ssid="HomeNet",
        ),
        interface(
            MON0,
            "mon0",
            1,
            0x100000002,
            "a0:a4:c5:6e:7f:80",
            IFTYPE["monitor"],
            freq=2437,
            width=CHAN_WIDTH_20_NOHT,
            channel_type=NL80211_CHAN_NO_HT,
            txpower_mbm=2200,
        ),
    ]


# --------------------------------------------------------------------------- stations


def rate(bitrate_100k, **kw) -> dict:
    attrs = [["NL80211_RATE_INFO_BITRATE32", bitrate_100k]]
    if bitrate_100k <= 0xFFFF:
        attrs.insert(0, ["NL80211_RATE_INFO_BITRATE", bitrate_100k])
    names = {
        "mcs": "MCS",
        "vht_mcs": "VHT_MCS",
        "vht_nss": "VHT_NSS",
        "he_mcs": "HE_MCS",
        "he_nss": "HE_NSS",
        "he_gi": "HE_GI",
        "he_dcm": "HE_DCM",
    }
    for key, value in kw.items():
        if key in names:
            attrs.append(["NL80211_RATE_INFO_" + names[key], value])
        elif value:  # width / short_gi flags
            attrs.append(["NL80211_RATE_INFO_" + key.upper(), True])
    return {"attrs": attrs}


def sta_flags(mask: list[str], set_: list[str]) -> bytes:
    return struct.pack("=II", sum(STA_FLAG[f] for f in mask), sum(STA_FLAG[f] for f in set_))


def station(ifindex, mac, info: list) -> bytes:
    return message(
        NL80211_CMD_NEW_STATION,
        [
            ["NL80211_ATTR_IFINDEX", ifindex],
            ["NL80211_ATTR_MAC", mac],
            ["NL80211_ATTR_GENERATION", 42],
            ["NL80211_ATTR_STA_INFO", {"attrs": info}],
        ],
    )


def stations() -> list[bytes]:
    all_flags = ["authorized", "short_preamble", "wme", "mfp", "authenticated", "associated"]
    vht = station(
        WLAN0,
        AP_MAC,
        [
            ["NL80211_STA_INFO_INACTIVE_TIME", 120],
            ["NL80211_STA_INFO_RX_BYTES", 123_456_789],
            ["NL80211_STA_INFO_TX_BYTES", 23_456_789],
            ["NL80211_STA_INFO_RX_BYTES64", 123_456_789],
            ["NL80211_STA_INFO_TX_BYTES64", 23_456_789],
            ["NL80211_STA_INFO_SIGNAL", -52],
            ["NL80211_STA_INFO_SIGNAL_AVG", -54],
            ["NL80211_STA_INFO_CHAIN_SIGNAL", nest([(0, struct.pack("=b", -52))])],
            [
                "NL80211_STA_INFO_TX_BITRATE",
                rate(4333, vht_mcs=9, vht_nss=1, **{"80_mhz_width": True}, short_gi=True),
            ],
            [
                "NL80211_STA_INFO_RX_BITRATE",
                rate(3250, vht_mcs=7, vht_nss=1, **{"80_mhz_width": True}),
            ],
            ["NL80211_STA_INFO_RX_PACKETS", 98_765],
            ["NL80211_STA_INFO_TX_PACKETS", 45_678],
            ["NL80211_STA_INFO_TX_RETRIES", 1_234],
            ["NL80211_STA_INFO_TX_FAILED", 12],
            [
                "NL80211_STA_INFO_BSS_PARAM",
                {
                    "attrs": [
                        ["NL80211_STA_BSS_PARAM_SHORT_SLOT_TIME", True],
                        ["NL80211_STA_BSS_PARAM_DTIM_PERIOD", 1],
                        ["NL80211_STA_BSS_PARAM_BEACON_INTERVAL", 100],
                    ]
                },
            ],
            ["NL80211_STA_INFO_CONNECTED_TIME", 3_600],
            [
                "NL80211_STA_INFO_STA_FLAGS",
                sta_flags(all_flags, ["authorized", "wme", "authenticated", "associated"]),
            ],
            ["NL80211_STA_INFO_BEACON_LOSS", 0],
        ],
    )
    he = station(
        WLAN1,
        AP6_MAC,
        [
            ["NL80211_STA_INFO_INACTIVE_TIME", 30],
            ["NL80211_STA_INFO_RX_BYTES", 4_000_000_000],
            ["NL80211_STA_INFO_TX_BYTES", 1_000_000],
            ["NL80211_STA_INFO_RX_BYTES64", 9_000_000_000],  # u32 wrapped: read the 64-bit one
            ["NL80211_STA_INFO_TX_BYTES64", 1_000_000],
            ["NL80211_STA_INFO_SIGNAL", -45],
            ["NL80211_STA_INFO_SIGNAL_AVG", -46],
            [
                "NL80211_STA_INFO_CHAIN_SIGNAL",
                nest([(0, struct.pack("=b", -47)), (1, struct.pack("=b", -49))]),
            ],
            [
                "NL80211_STA_INFO_TX_BITRATE",
                rate(12010, he_mcs=11, he_nss=2, he_gi=0, he_dcm=0, **{"80_mhz_width": True}),
            ],
            [
                "NL80211_STA_INFO_RX_BITRATE",
                rate(9607, he_mcs=9, he_nss=2, he_gi=1, he_dcm=0, **{"80_mhz_width": True}),
            ],
            ["NL80211_STA_INFO_RX_PACKETS", 3_000_000],
            ["NL80211_STA_INFO_TX_PACKETS", 1_500_000],
            ["NL80211_STA_INFO_TX_RETRIES", 2_000],
            ["NL80211_STA_INFO_TX_FAILED", 3],
            ["NL80211_STA_INFO_CONNECTED_TIME", 86_400],
            ["NL80211_STA_INFO_EXPECTED_THROUGHPUT", 812_000],
            [
                "NL80211_STA_INFO_STA_FLAGS",
                sta_flags(all_flags, [*all_flags[:1], "wme", "mfp", "authenticated", "associated"]),
            ],
        ],
    )
    return [vht, he]


# --------------------------------------------------------------------------- scan results


def ie(eid: int, body: bytes) -> bytes:
    assert len(body) <= 255
    return bytes([eid, len(body)]) + body


def ie_rates(rates_500k: list[int], basic: set[int]) -> bytes:
    return ie(1, bytes(r | (0x80 if r in basic else 0) for r in rates_500k))


def suite(n: int, oui: bytes = b"\x00\x0f\xac") -> bytes:
    return oui + bytes([n])


def ie_rsn(
    akms=(2,), pairwise=(4,), group=4, caps=0x000C, mgmt=None, stop_after_pairwise=False
) -> bytes:
    body = struct.pack("<H", 1) + suite(group)
    body += struct.pack("<H", len(pairwise)) + b"".join(suite(p) for p in pairwise)
    if not stop_after_pairwise:
        body += struct.pack("<H", len(akms)) + b"".join(suite(a) for a in akms)
        body += struct.pack("<H", caps)
        if mgmt is not None:
            body += struct.pack("<H", 0) + suite(mgmt)  # PMKID count 0, group mgmt cipher
    return ie(48, body)


def ie_ht_cap() -> bytes:
    return ie(45, struct.pack("<HB", 0x01EF, 0x17) + bytes([0xFF, 0xFF] + [0] * 14) + bytes(10))


def ie_ht_op(primary: int, secondary: int = 0) -> bytes:
    second = {0: 0, 1: 0x05, 3: 0x07}[secondary]  # offset | STA channel width
    return ie(61, bytes([primary, second]) + bytes(20))


def ie_vht_op(width: int, seg0: int, seg1: int = 0) -> bytes:
    return ie(192, bytes([width, seg0, seg1]) + struct.pack("<H", 0xFFFC))


def ie_he_op() -> bytes:
    return ie(255, bytes([36]) + bytes([0xF4, 0x01, 0x00, 0x3C, 0xFC, 0xFF]))


WMM = ie(221, bytes.fromhex("0050f2020101000003a4000027a4000042435e0062322f00"))
EXT_CAPA = ie(127, bytes([0x04, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x40]))
ERP = ie(42, b"\x00")
TIM = ie(5, bytes([0, 1, 0, 0]))


def bss_ies(
    ssid: bytes,
    channel: int,
    *,
    five: bool,
    rsn: bytes | None = None,
    vht: bytes | None = None,
    he: bool = False,
    ht_secondary: int = 0,
) -> bytes:
    if five:
        rates = ie_rates([12, 18, 24, 36, 48, 72, 96, 108], {12, 24, 48})
        extra = b""
    else:
        rates = ie_rates([2, 4, 11, 22, 12, 18, 24, 36], {2, 4, 11, 22})
        extra = ERP + ie(50, bytes([48, 72, 96, 108]))
    out = ie(0, ssid) + rates + ie(3, bytes([channel])) + TIM + extra
    if rsn is not None:
        out += rsn
    out += ie_ht_cap() + ie_ht_op(channel, ht_secondary)
    if vht is not None:
        out += ie(191, struct.pack("<I", 0x338B79B2) + struct.pack("<HHHH", 0xFFFA, 0, 0xFFFA, 0))
        out += vht
    if he:
        out += ie(255, bytes([35]) + bytes(21)) + ie_he_op()
    return out + EXT_CAPA + WMM


@dataclass
class ScanEntry:
    ifindex: int
    bssid: str
    freq: int
    signal_mbm: int
    capability: int
    ies: bytes
    seen_ms_ago: int = 800
    status: int | None = None
    beacon_ies: bytes | None = None
    presp: bool = True
    note: str = ""

    def encode(self, wdev: int) -> bytes:
        tsf = 123_456_789_012
        bss = [
            ["NL80211_BSS_BSSID", bytes.fromhex(self.bssid.replace(":", ""))],
            ["NL80211_BSS_FREQUENCY", self.freq],
            ["NL80211_BSS_TSF", tsf],
            ["NL80211_BSS_BEACON_INTERVAL", 100],
            ["NL80211_BSS_CAPABILITY", self.capability],
            ["NL80211_BSS_INFORMATION_ELEMENTS", self.ies],
        ]
        if self.beacon_ies is not None:
            bss.append(["NL80211_BSS_BEACON_IES", self.beacon_ies])
        if self.presp:
            bss.append(["NL80211_BSS_PRESP_DATA", True])
        bss += [
            ["NL80211_BSS_SIGNAL_MBM", self.signal_mbm],
            ["NL80211_BSS_SEEN_MS_AGO", self.seen_ms_ago],
            ["NL80211_BSS_LAST_SEEN_BOOTTIME", 987_654_321_000],
            ["NL80211_BSS_CHAIN_SIGNAL", nest([(0, struct.pack("=b", self.signal_mbm // 100))])],
            ["NL80211_BSS_CHAN_WIDTH", 0],
            ["NL80211_BSS_BEACON_TSF", tsf - 1000],
        ]
        if self.status is not None:
            bss.append(["NL80211_BSS_STATUS", self.status])
        return message(
            NL80211_CMD_NEW_SCAN_RESULTS,
            [
                ["NL80211_ATTR_GENERATION", 1234],
                ["NL80211_ATTR_IFINDEX", self.ifindex],
                ["NL80211_ATTR_WDEV", wdev],
                ["NL80211_ATTR_BSS", {"attrs": bss}],
            ],
        )


# capability bits
ESS, PRIVACY, SHORT_PREAMBLE, SPECTRUM, QOS, SHORT_SLOT, RADIO_MEAS = (
    0x1,
    0x10,
    0x20,
    0x100,
    0x200,
    0x400,
    0x1000,
)

RSN_PSK = ie_rsn(akms=(2,))
VHT80_36 = ie_vht_op(1, 42)


def scan_entries() -> list[ScanEntry]:
    return [
        ScanEntry(
            WLAN0,
            "02:5f:67:10:20:30",
            2412,
            -7100,
            ESS | SHORT_PREAMBLE | SHORT_SLOT,
            bss_ies(b"Cafe-Free", 1, five=False),
            seen_ms_ago=1200,
            note="open",
        ),
        ScanEntry(
            WLAN0,
            AP_MAC,
            5180,
            -5200,
            ESS | PRIVACY | SPECTRUM | QOS | RADIO_MEAS,
            bss_ies(b"HomeNet", 36, five=True, rsn=RSN_PSK, vht=VHT80_36, ht_secondary=1),
            status=BSS_STATUS_ASSOCIATED,
            presp=False,
            seen_ms_ago=40,
            beacon_ies=bss_ies(
                b"HomeNet", 36, five=True, rsn=RSN_PSK, vht=VHT80_36, ht_secondary=1
            ),
            note="WPA2-PSK, associated",
        ),
        ScanEntry(
            WLAN0,
            "b0:f2:08:11:22:33",
            2437,
            -6800,
            ESS | PRIVACY | SHORT_SLOT,
            bss_ies(b"Nachbar-WPA3", 6, five=False, rsn=ie_rsn(akms=(8,), caps=0x00CC, mgmt=6)),
            note="WPA3-SAE only (AKM 8, MFP required)",
        ),
        ScanEntry(
            WLAN0,
            "b0:f2:08:11:22:34",
            5240,
            -6100,
            ESS | PRIVACY | SPECTRUM | QOS,
            bss_ies(
                b"Mixed-WPA2-WPA3", 48, five=True, rsn=ie_rsn(akms=(2, 8), caps=0x008C, mgmt=6)
            ),
            note="WPA2/WPA3 transition (AKM 2+8, MFP capable)",
        ),
        ScanEntry(
            WLAN0,
            "e0:28:6d:01:02:03",
            2462,
            -7500,
            ESS | PRIVACY | SHORT_SLOT,
            bss_ies(b"", 11, five=False, rsn=RSN_PSK),
            note="hidden, zero-length SSID",
        ),
        ScanEntry(
            WLAN0,
            "e0:28:6d:01:02:04",
            5200,
            -6600,
            ESS | PRIVACY | SPECTRUM,
            bss_ies(b"\0" * 7, 40, five=True, rsn=RSN_PSK),
            note="hidden, all-zero SSID",
        ),
        ScanEntry(
            WLAN0,
            "00:1d:7e:aa:00:01",
            2422,
            -8200,
            ESS | PRIVACY,
            bss_ies("Café Müller".encode("latin-1"), 3, five=False, rsn=RSN_PSK),
            note="non-UTF-8 SSID (latin-1)",
        ),
        ScanEntry(
            WLAN0,
            "70:4f:57:de:f5:01",
            5500,
            -7800,
            ESS | PRIVACY | SPECTRUM | QOS,
            bss_ies(
                b"Office-5G",
                100,
                five=True,
                rsn=ie_rsn(akms=(1,), caps=0x0028),
                vht=ie_vht_op(1, 106),
                ht_secondary=1,
            ),
            note="DFS channel 100, WPA2-Enterprise",
        ),
        ScanEntry(
            WLAN0,
            "00:0c:42:00:00:99",
            2472,
            -8800,
            ESS | PRIVACY,
            bss_ies(b"Legacy-AP", 13, five=False, rsn=ie_rsn(stop_after_pairwise=True)),
            note="RSN IE ends after pairwise suites (valid; AKM defaults to 802.1X)",
        ),
        ScanEntry(
            WLAN1,
            AP6_MAC,
            5180,
            -4500,
            ESS | PRIVACY | SPECTRUM | QOS | RADIO_MEAS,
            bss_ies(
                b"HomeNet",
                36,
                five=True,
                rsn=ie_rsn(akms=(2, 8), caps=0x008C, mgmt=6),
                vht=VHT80_36,
                he=True,
                ht_secondary=1,
            ),
            status=BSS_STATUS_ASSOCIATED,
            note="Wi-Fi 6, wlan1 associated",
        ),
    ]


WDEVS = {WLAN0: 0x1, WLAN1: 0x100000001, MON0: 0x100000002}


def scan_results() -> list[bytes]:
    return [e.encode(WDEVS[e.ifindex]) for e in scan_entries()]


# --------------------------------------------------------------------------- regulatory


def reg_rule(start_khz, end_khz, bw_khz, eirp_mbm, flags=0, gain=0, cac_ms=0) -> bytes:
    return encode_cell(
        nl80211cmd.reg_rule,
        [
            ["NL80211_ATTR_REG_RULE_FLAGS", flags],
            ["NL80211_ATTR_FREQ_RANGE_START", start_khz],
            ["NL80211_ATTR_FREQ_RANGE_END", end_khz],
            ["NL80211_ATTR_FREQ_RANGE_MAX_BW", bw_khz],
            ["NL80211_ATTR_POWER_RULE_MAX_ANT_GAIN", gain],
            ["NL80211_ATTR_POWER_RULE_MAX_EIRP", eirp_mbm],
            ["NL80211_ATTR_DFS_CAC_TIME", cac_ms],
        ],
    )


DE_RULES = [  # wireless-regdb "country DE: DFS-ETSI"
    reg_rule(2_400_000, 2_483_500, 40_000, 2000),
    reg_rule(5_150_000, 5_250_000, 80_000, 2301, RRF_NO_OUTDOOR | RRF_AUTO_BW),
    reg_rule(5_250_000, 5_350_000, 80_000, 2000, RRF_NO_OUTDOOR | RRF_DFS | RRF_AUTO_BW),
    reg_rule(5_470_000, 5_725_000, 160_000, 2698, RRF_DFS),
    reg_rule(5_725_000, 5_875_000, 80_000, 1397),
    reg_rule(5_945_000, 6_425_000, 160_000, 2300, RRF_NO_OUTDOOR),
    reg_rule(57_000_000, 66_000_000, 2_160_000, 4000),
]


def regulatory() -> list[bytes]:
    """[global regdomain, phy1's self-managed regdomain] (the dump answer; a GET_REG
    request without NLM_F_DUMP gets the first only)."""
    glob = message(
        NL80211_CMD_GET_REG,
        [
            ["NL80211_ATTR_REG_ALPHA2", "DE"],
            ["NL80211_ATTR_DFS_REGION", NL80211_DFS_ETSI],
            ["NL80211_ATTR_REG_RULES", nest(list(enumerate(DE_RULES)))],
        ],
    )
    phy1 = message(
        NL80211_CMD_GET_REG,
        [
            ["NL80211_ATTR_WIPHY", 1],
            ["NL80211_ATTR_WIPHY_SELF_MANAGED_REG", True],
            ["NL80211_ATTR_REG_ALPHA2", "DE"],
            ["NL80211_ATTR_DFS_REGION", NL80211_DFS_ETSI],
            [
                "NL80211_ATTR_REG_RULES",
                nest(
                    list(
                        enumerate(
                            [
                                reg_rule(2_402_000, 2_482_000, 40_000, 2000, RRF_AUTO_BW),
                                reg_rule(5_170_000, 5_250_000, 80_000, 2000, RRF_AUTO_BW),
                                reg_rule(5_250_000, 5_330_000, 80_000, 2000, RRF_DFS | RRF_AUTO_BW),
                                reg_rule(5_490_000, 5_730_000, 160_000, 2000, RRF_DFS),
                                reg_rule(5_735_000, 5_835_000, 80_000, 2000, RRF_NO_IR),
                            ]
                        )
                    )
                ),
            ],
        ],
    )
    return [glob, phy1]


# --------------------------------------------------------------------------- scan events


def scan_event(cmd: int, ifindex: int, freqs=(2412, 2437, 5180, 5500)) -> bytes:
    """nl80211_send_scan_msg(): what the "scan" group carries."""
    attrs = [
        ["NL80211_ATTR_WIPHY", 0 if ifindex == WLAN0 else 1],
        ["NL80211_ATTR_IFINDEX", ifindex],
        ["NL80211_ATTR_WDEV", WDEVS[ifindex]],
        ["NL80211_ATTR_SCAN_SSIDS", nest([(0, b"")])],
    ]  # one wildcard SSID
    if cmd != NL80211_CMD_SCAN_ABORTED:
        attrs.append(
            [
                "NL80211_ATTR_SCAN_FREQUENCIES",
                nest([(i, struct.pack("=I", f)) for i, f in enumerate(freqs)]),
            ]
        )
    return message(cmd, attrs)


def scan_events() -> dict[str, list[bytes]]:
    return {
        "scan_started": [scan_event(NL80211_CMD_TRIGGER_SCAN, i) for i in (WLAN0, WLAN1)],
        "scan_done": [scan_event(NL80211_CMD_NEW_SCAN_RESULTS, i) for i in (WLAN0, WLAN1)],
        "scan_aborted": [scan_event(NL80211_CMD_SCAN_ABORTED, i) for i in (WLAN0, WLAN1)],
    }


# --------------------------------------------------------------------------- the fixture


@dataclass
class Fixture:
    """Messages by kind. Each is one netlink message as bytes; per-request fields
    (seq, pid, NLM_F_MULTI) are stamped by the fake at replay time."""

    family_id: int
    groups: dict[str, int]
    family: bytes
    messages: dict[str, list[bytes]]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        return json.dumps(
            {
                "format": FORMAT,
                "meta": self.meta,
                "family": {
                    "name": "nl80211",
                    "id": self.family_id,
                    "groups": self.groups,
                    "reply": b64(self.family),
                },
                "messages": {k: [b64(m) for m in v] for k, v in self.messages.items()},
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Fixture:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        fam = doc["family"]
        return cls(
            family_id=fam["id"],
            groups=fam["groups"],
            family=base64.b64decode(fam["reply"]),
            messages={k: [base64.b64decode(m) for m in v] for k, v in doc["messages"].items()},
            meta=doc.get("meta", {}),
        )


def build() -> Fixture:
    """The synthetic fixture set: a Pi 4 (phy0) and an AX200 (phy1) on one host."""
    phys = [rpi4_phy(), ax200_phy()]
    messages = {
        "wiphy_split": [m for p in phys for m in p.split_messages()],
        "wiphy": [p.unsplit_message() for p in phys],
        "interfaces": interfaces(),
        "stations": stations(),
        "scan": scan_results(),
        "reg": regulatory(),
        **scan_events(),
    }
    return Fixture(
        FAMILY_ID,
        dict(GROUPS),
        family_reply(),
        messages,
        meta={"source": "synthetic (tests/builtin/wifi/nl80211_fixtures.py)", "pyroute2": "0.9.7"},
    )


# --------------------------------------------------------------------------- self-check


def decode_all(data: bytes, family_id: int = FAMILY_ID) -> list:
    marshal = MarshalNl80211()
    marshal.msg_map[family_id] = nl80211cmd
    marshal.msg_map[GENL_ID_CTRL] = ctrlmsg
    return list(marshal.parse(data))


if __name__ == "__main__":
    fx = build()
    total = 0
    for kind, msgs in fx.messages.items():
        size = sum(map(len, msgs))
        total += size
        print(f"{kind:14s} {len(msgs):3d} messages {size:7d} bytes")
        for m in msgs:
            (decoded,) = decode_all(m)
            assert decoded["header"]["length"] == len(m), kind
    (fam,) = decode_all(fx.family)
    print(
        "family",
        fam.get_attr("CTRL_ATTR_FAMILY_ID"),
        {
            g.get_attr("CTRL_ATTR_MCAST_GRP_NAME"): g.get_attr("CTRL_ATTR_MCAST_GRP_ID")
            for g in fam.get_attr("CTRL_ATTR_MCAST_GROUPS")
        },
    )
    again = Fixture.from_json(fx.to_json())
    assert again.messages == fx.messages and again.family == fx.family
    print("JSON round trip ok,", len(fx.to_json()), "chars;", total, "bytes of messages")
