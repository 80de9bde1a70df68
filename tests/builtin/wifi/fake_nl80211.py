"""A socket-shaped fake nl80211 kernel for pyroute2's AsyncNL80211 (pyroute2 0.9.7).

Shape
-----
``FakeKernel.socket()`` returns a :class:`FakeNetlinkSocket`: an object with the
socket methods pyroute2 and hostcore's ``ReaderTransport`` call, whose *receive side is
a real file descriptor* (one end of ``socket.socketpair(AF_UNIX, SOCK_DGRAM)``). Hand
it to pyroute2 as ``use_socket=``::

    sock = kernel.socket()
    nl = ReaderNL80211(use_socket=sock)     # AsyncNL80211 + add_reader endpoint
    await nl.bind()                         # CTRL_CMD_GETFAMILY "nl80211" -> fake
    ...
    nl.close(); sock.close()                # pyroute2 never closes a use_socket

What pyroute2 calls on it (0.9.7, use_socket path):

* ``bind((epid, groups))`` from ``AsyncNetlinkSocket._sync_bind`` (ports 20..200 are
  tried in turn; an address in use must raise, as the kernel's EADDRINUSE does);
* ``sendto(data, (0, 0))`` for the family lookup (``discovery``), ``send(data)`` for
  every request (``NetlinkRequest.send``);
* ``setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP / DROP, group_id)`` from
  ``add_membership``; ``getsockopt`` if asked;
* nothing for receiving: pyroute2 receives through its endpoint. hostcore's
  ``ReaderTransport`` calls ``fileno()``, ``setblocking(False)`` and ``recv_into()``.
  (pyroute2's own ``create_datagram_endpoint`` would need a real SOCK_DGRAM socket
  object: it is not used here, and uvloop refuses it for netlink anyway.)

``fileno=`` does not work for a fake: pyroute2 wraps it as ``socket.socket(fileno=fd)``
(dup'ing and CLOSING the fd you passed), then binds it to a netlink address, which
an AF_UNIX socket refuses (every port fails -> ``KeyError('no free address
available')``).

Why SOCK_DGRAM and not SOCK_SEQPACKET: both keep message boundaries and both work
with ``add_reader`` on asyncio and uvloop. But the kernel can deliver a zero-length
datagram (nl80211_dump_wiphy's "retry with a bigger buffer" path), and on a
SEQPACKET pair a zero-length read is indistinguishable from EOF. SOCK_DGRAM has no
EOF, so "empty datagram" can be reproduced faithfully (``empty_datagram_before_unsplit``).

Kernel behaviour reproduced (from af_netlink.c / genetlink.c / nl80211.c):

* replies carry the request's sequence number and the socket's port id;
* dump answers: messages flagged NLM_F_MULTI, packed into datagrams of up to
  ``datagram_size`` bytes, then NLMSG_DONE (flags NLM_F_MULTI, payload int 0) in a
  datagram of its own; an error found while dumping is the DONE payload (negative
  errno), NOT an NLMSG_ERROR (pyroute2 0.9.7 ignores it: hostcore.builtin.wifi.nl80211's
  marshal raises it);
* doit answers: the reply in one datagram, then the ACK (NLMSG_ERROR 0, header only,
  NLM_F_CAPPED) in another when NLM_F_ACK was asked; errors are NLMSG_ERROR with the
  request copied after the errno;
* pacing: a dump is handed over a datagram at a time as the reader drains its
  socket (like netlink_dump() continuing on recvmsg()), so an AF_UNIX socket buffer
  (~26 datagrams of 4 KiB) never blocks the event loop;
* multicast: to every socket that joined the group (bind bitmask or
  NETLINK_ADD_MEMBERSHIP), seq 0, port id 0;
* CTRL_CMD_GETFAMILY for another name, or with ``family_present=False``: ENOENT
  (what a kernel without cfg80211 answers).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_DROP_MEMBERSHIP,
    NETLINK_GENERIC,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOL_NETLINK,
    ctrlmsg,
)
from pyroute2.netlink.nl80211 import NL80211_NAMES, NL80211_VALUES, MarshalNl80211, nl80211cmd

from tests.builtin.wifi.nl80211_fixtures import Fixture

AF_NETLINK = 16
NLM_F_CAPPED = 0x100
HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
CMD = {name[len("NL80211_CMD_") :]: value for name, value in NL80211_NAMES.items()}


def stamp(message: bytes, *, seq: int, pid: int, flags: int) -> bytes:
    """A fixture message with this answer's header fields."""
    out = bytearray(message)
    length, mtype, _, _, _ = HDR.unpack_from(out, 0)
    HDR.pack_into(out, 0, length, mtype, flags, seq, pid)
    return bytes(out)


def done(seq: int, pid: int, code: int = 0) -> bytes:
    return HDR.pack(20, NLMSG_DONE, NLM_F_MULTI, seq, pid) + struct.pack("=i", -code)


def nlmsgerr(request: bytes, code: int, pid: int) -> bytes:
    """NLMSG_ERROR: errno 0 is an ACK (request header only, NLM_F_CAPPED)."""
    (_, _, _, seq, _) = HDR.unpack_from(request, 0)
    echoed = request if code else request[:16]
    flags = 0 if code else NLM_F_CAPPED
    body = struct.pack("=i", -code) + echoed
    return HDR.pack(16 + len(body), NLMSG_ERROR, flags, seq, pid) + body


ATTR_IFTYPE = 5  # NL80211_ATTR_IFTYPE
# pyroute2's names of the supported interface types, by nl80211 number.
IFTYPE_BY_NUMBER = {2: "station", 3: "ap", 6: "monitor", 7: "mesh_point", 1: "adhoc"}


def set_u32(message: bytes, attr_type: int, value: int) -> bytes:
    """``message`` with its top-level u32 attribute ``attr_type`` set to ``value``."""
    offset = 20  # nlmsghdr and genlmsghdr
    while offset + 4 <= len(message):
        length, kind = struct.unpack_from("=HH", message, offset)
        if kind & 0x3FFF == attr_type:
            return message[: offset + 4] + struct.pack("=I", value) + message[offset + 8 :]
        offset += (length + 3) & ~3
    raise KeyError(attr_type)


@dataclass
class Request:
    """What a client sent, decoded with pyroute2's own classes (for assertions)."""

    type: int
    cmd: str
    flags: int
    seq: int
    pid: int
    attrs: dict[str, Any]
    raw: bytes
    portid: int

    @property
    def dump(self) -> bool:
        return self.flags & NLM_F_DUMP == NLM_F_DUMP


class FakeNetlinkSocket:
    """One client socket of the fake kernel (what ``use_socket=`` receives)."""

    family = AF_NETLINK
    type = socket.SOCK_DGRAM
    proto = NETLINK_GENERIC

    def __init__(self, kernel: FakeKernel):
        self._kernel = kernel
        self._user, self._peer = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
        )
        self._peer.setblocking(False)
        self.portid: int | None = None
        self.groups: set[int] = set()
        self.options: dict[tuple[int, int], int] = {}
        self.outbox: collections.deque[bytes] = collections.deque()
        self.dump_running: int | None = None  # a dump's seq until its DONE is read
        self._overrun = False
        self.closed = False

    # -- what pyroute2 calls
    def bind(self, address: tuple[int, int]) -> None:
        pid, groups = address
        self._kernel._bind(self, pid, groups)

    def getsockname(self) -> tuple[int, int]:
        mask = sum(1 << (g - 1) for g in self.groups if g <= 32)
        return (self.portid or 0, mask)

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        self._kernel._receive(self, bytes(data))
        return len(data)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self.send(data, flags)

    def sendto(self, data: bytes, *args: Any) -> int:  # (data, addr) or (data, flags, addr)
        return self.send(data)

    def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
        if level == SOL_NETLINK and option == NETLINK_ADD_MEMBERSHIP:
            self._kernel._join(self, int(value))
        elif level == SOL_NETLINK and option == NETLINK_DROP_MEMBERSHIP:
            self.groups.discard(int(value))
        else:
            self.options[(level, option)] = value  # SO_RCVBUF, NETLINK_EXT_ACK, ...

    def getsockopt(self, level: int, option: int, *rest: Any) -> int:
        return self.options.get((level, option), 0)

    # -- what the reader (hostcore's ReaderTransport) calls
    def fileno(self) -> int:
        return self._user.fileno()

    def setblocking(self, flag: bool) -> None:
        self._user.setblocking(flag)

    def getblocking(self) -> bool:
        return self._user.getblocking()

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        if self._overrun:
            self._overrun = False
            raise OSError(errno.ENOBUFS, "No buffer space available")
        size = self._user.recv_into(buffer, nbytes, flags)
        if size >= 16:
            _, mtype, _, seq, _ = HDR.unpack_from(buffer, 0)
            if mtype == NLMSG_DONE and seq == self.dump_running:
                self.dump_running = None
        self._kernel._pump(self)  # the kernel continues a dump as the reader reads
        return size

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        buffer = bytearray(bufsize)
        return bytes(buffer[: self.recv_into(buffer, bufsize, flags)])

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[int, int]]:
        return self.recv(bufsize, flags), (0, 0)

    # -- test controls
    def overrun(self) -> None:
        """The next read fails with ENOBUFS (a multicast burst overflowed the queue)."""
        self._overrun = True

    def close(self) -> None:
        """Close AFTER the pyroute2 object (its reader must be removed first)."""
        if not self.closed:
            self.closed = True
            self._kernel._forget(self)
            self._user.close()
            self._peer.close()


def serve_app(client: Any, kernel: FakeKernel) -> None:
    """Make the running app's Wi-Fi plugin talk to ``kernel`` instead of the real one."""
    from hostcore.builtin.wifi.nl80211 import Nl80211

    wifi = client.app.state.wifi
    wifi.nl80211.close()
    wifi.nl80211 = Nl80211(timeout_s=2.0, socket_factory=kernel.socket)


class FakeKernel:
    """Answers nl80211 from a :class:`fixtures.Fixture`."""

    def __init__(
        self,
        fixture: Fixture,
        *,
        family_present: bool = True,
        datagram_size: int = 16384,
        scan_outcome: str = "done",
        scan_delay: float = 0.05,
        empty_datagram_before_unsplit: bool = False,
    ):
        self.fixture = fixture
        self.family_present = family_present
        self.datagram_size = datagram_size
        self.scan_outcome = scan_outcome  # "done" | "aborted" | "never"
        self.scan_delay = scan_delay
        self.empty_datagram_before_unsplit = empty_datagram_before_unsplit
        self.interrupt_next_dump = False  # NLM_F_DUMP_INTR on the next dump
        self.sockets: list[FakeNetlinkSocket] = []
        self.requests: list[Request] = []
        self.regulatory_requests: list[str] = []  # the countries REQ_SET_REG was given
        self.scanning: set[int] = set()
        self.running: set[int] = set()  # interfaces that are up: their type cannot change
        self._timers: list[asyncio.TimerHandle] = []
        self._ports = itertools.count(0x7000_0001)
        self._marshal = MarshalNl80211()
        self._marshal.msg_map[fixture.family_id] = nl80211cmd
        self._marshal.msg_map[GENL_ID_CTRL] = ctrlmsg
        self._decoded = {
            kind: [self._decode(m) for m in msgs] for kind, msgs in fixture.messages.items()
        }
        self._handlers: dict[int, Callable[[FakeNetlinkSocket, Request], None]] = {
            CMD["GET_WIPHY"]: self._get_wiphy,
            CMD["GET_INTERFACE"]: self._get_interface,
            CMD["GET_STATION"]: self._get_station,
            CMD["GET_SCAN"]: self._get_scan,
            CMD["GET_REG"]: self._get_reg,
            CMD["REQ_SET_REG"]: self._req_set_reg,
            CMD["TRIGGER_SCAN"]: self._trigger_scan,
            CMD["SET_INTERFACE"]: self._set_interface,
        }

    # -- public
    def socket(self) -> FakeNetlinkSocket:
        sock = FakeNetlinkSocket(self)
        self.sockets.append(sock)
        return sock

    def emit(self, group: str, message: bytes) -> int:
        """Multicast a fixture message on a named group; returns how many got it."""
        gid = self.fixture.groups[group]
        data = stamp(message, seq=0, pid=0, flags=0)
        receivers = [s for s in self.sockets if gid in s.groups and not s.closed]
        for sock in receivers:
            self._deliver(sock, [data])
        return len(receivers)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for sock in list(self.sockets):
            sock.close()

    # -- socket plumbing
    def _bind(self, sock: FakeNetlinkSocket, pid: int, groups: int) -> None:
        if pid and any(s.portid == pid for s in self.sockets if s is not sock):
            raise OSError(errno.EADDRINUSE, "Address already in use")
        sock.portid = pid or next(self._ports)
        sock.groups |= {bit + 1 for bit in range(32) if groups & (1 << bit)}

    def _join(self, sock: FakeNetlinkSocket, gid: int) -> None:
        if gid not in self.fixture.groups.values():
            raise OSError(errno.EINVAL, "Invalid argument")
        sock.groups.add(gid)

    def _forget(self, sock: FakeNetlinkSocket) -> None:
        if sock in self.sockets:
            self.sockets.remove(sock)

    def _deliver(self, sock: FakeNetlinkSocket, datagrams: list[bytes]) -> None:
        sock.outbox.extend(datagrams)
        self._pump(sock)

    def _pump(self, sock: FakeNetlinkSocket) -> None:
        while sock.outbox and not sock.closed:
            try:
                sock._peer.send(sock.outbox[0])
            except BlockingIOError:
                return  # the reader has not drained yet; recv_into() pumps again
            sock.outbox.popleft()

    # -- decoding
    def _decode(self, data: bytes):
        (msg,) = list(self._marshal.parse(data))
        return msg

    def _receive(self, sock: FakeNetlinkSocket, data: bytes) -> None:
        offset = 0
        while offset + 16 <= len(data):  # a send may batch several requests
            length, mtype, flags, seq, pid = HDR.unpack_from(data, offset)
            if length < 16 or offset + length > len(data):
                break
            raw = data[offset : offset + length]
            offset += (length + 3) & ~3
            msg = self._decode(raw)
            attrs = {slot[0]: slot[1] for slot in msg["attrs"]}
            cmd = msg["cmd"]
            name = (
                f"CTRL_CMD_{cmd}"
                if mtype == GENL_ID_CTRL
                else NL80211_VALUES.get(cmd, str(cmd))[len("NL80211_CMD_") :]
            )
            request = Request(mtype, name, flags, seq, pid, attrs, raw, sock.portid or 0)
            self.requests.append(request)
            if mtype == GENL_ID_CTRL:
                self._ctrl(sock, request)
            elif mtype == self.fixture.family_id and self.family_present:
                handler = self._handlers.get(cmd)
                if request.dump and sock.dump_running is not None:
                    # netlink_dump_start(): one dump per socket until its end is read
                    self._error(sock, request, errno.EBUSY)
                elif handler is None:
                    self._error(sock, request, errno.EOPNOTSUPP)
                else:
                    handler(sock, request)
            else:
                self._error(sock, request, errno.ENOENT)

    # -- answers
    def _error(self, sock, request: Request, code: int) -> None:
        self._deliver(sock, [nlmsgerr(request.raw, code, sock.portid or 0)])

    def _reply(self, sock, request: Request, messages: list[bytes]) -> None:
        """A doit answer: each message its own datagram, then the ACK if asked."""
        out = [stamp(m, seq=request.seq, pid=sock.portid or 0, flags=0) for m in messages]
        if request.flags & NLM_F_ACK:
            out.append(nlmsgerr(request.raw, 0, sock.portid or 0))
        self._deliver(sock, out)

    def _dump(self, sock, request: Request, messages: list[bytes], code: int = 0) -> None:
        """A dump answer: NLM_F_MULTI messages packed in datagrams, then DONE."""
        sock.dump_running = request.seq
        flags = NLM_F_MULTI
        if self.interrupt_next_dump:
            self.interrupt_next_dump = False
            flags |= NLM_F_DUMP_INTR
        datagrams: list[bytes] = []
        current = b""
        for message in messages:
            data = stamp(message, seq=request.seq, pid=sock.portid or 0, flags=flags)
            if current and len(current) + len(data) > self.datagram_size:
                datagrams.append(current)
                current = b""
            current += data
        if current:
            datagrams.append(current)
        datagrams.append(done(request.seq, sock.portid or 0, code))
        self._deliver(sock, datagrams)

    def _ctrl(self, sock, request: Request) -> None:
        if request.cmd != f"CTRL_CMD_{CTRL_CMD_GETFAMILY}" or request.dump:
            self._error(sock, request, errno.EOPNOTSUPP)
        elif request.attrs.get("CTRL_ATTR_FAMILY_NAME") != "nl80211" or not self.family_present:
            self._error(sock, request, errno.ENOENT)
        else:
            self._reply(sock, request, [self.fixture.family])

    # -- lookups in the fixture
    def _select(self, kind: str, **match: Any) -> list[bytes]:
        """Fixture messages of ``kind`` whose attributes equal ``match`` (None: any)."""
        out = []
        for raw, msg in zip(
            self.fixture.messages.get(kind, []), self._decoded.get(kind, []), strict=False
        ):
            if all(
                value is None or msg.get_attr("NL80211_ATTR_" + key) == value
                for key, value in match.items()
            ):
                out.append(raw)
        return out

    def _iface(self, ifindex: int | None):
        for msg in self._decoded.get("interfaces", []):
            if msg.get_attr("NL80211_ATTR_IFINDEX") == ifindex:
                return msg
        return None

    def _wiphy_filter(self, request: Request) -> int | None:
        if "NL80211_ATTR_WIPHY" in request.attrs:
            return request.attrs["NL80211_ATTR_WIPHY"]
        iface = self._iface(request.attrs.get("NL80211_ATTR_IFINDEX"))
        return iface.get_attr("NL80211_ATTR_WIPHY") if iface is not None else None

    # -- nl80211 commands
    def _get_wiphy(self, sock, request: Request) -> None:
        phy = self._wiphy_filter(request)
        if not request.dump:
            if phy is None:
                return self._error(sock, request, errno.EINVAL)
            found = self._select("wiphy", WIPHY=phy)
            if not found:
                return self._error(sock, request, errno.ENODEV)
            return self._reply(sock, request, found)
        split = "NL80211_ATTR_SPLIT_WIPHY_DUMP" in request.attrs
        if not split and self.empty_datagram_before_unsplit:
            # nl80211_dump_wiphy(): the first wiphy did not fit the initial skb -> the
            # kernel raises min_dump_alloc and returns 1 with an EMPTY skb.
            self._deliver(sock, [b""])
        self._dump(sock, request, self._select("wiphy_split" if split else "wiphy", WIPHY=phy))

    def _get_interface(self, sock, request: Request) -> None:
        if request.dump:
            return self._dump(
                sock,
                request,
                self._select("interfaces", WIPHY=request.attrs.get("NL80211_ATTR_WIPHY")),
            )
        ifindex = request.attrs.get("NL80211_ATTR_IFINDEX")
        found = self._select("interfaces", IFINDEX=ifindex) if ifindex is not None else []
        if not found:
            return self._error(sock, request, errno.ENODEV if ifindex else errno.EINVAL)
        self._reply(sock, request, found)

    def _wdev_dump(self, sock, request: Request, kind: str) -> None:
        """Dumps bound to one interface (nl80211_prepare_wdev_dump): errors go into DONE."""
        ifindex = request.attrs.get("NL80211_ATTR_IFINDEX")
        if ifindex is None:
            return self._dump(sock, request, [], code=errno.EINVAL)
        if self._iface(ifindex) is None:
            return self._dump(sock, request, [], code=errno.ENODEV)
        self._dump(sock, request, self._select(kind, IFINDEX=ifindex))

    def _get_station(self, sock, request: Request) -> None:
        if request.dump:
            return self._wdev_dump(sock, request, "stations")
        mac = request.attrs.get("NL80211_ATTR_MAC")
        found = (
            self._select("stations", IFINDEX=request.attrs.get("NL80211_ATTR_IFINDEX"), MAC=mac)
            if mac
            else []
        )
        if not found:
            return self._error(sock, request, errno.ENOENT if mac else errno.EINVAL)
        self._reply(sock, request, found)

    def _get_scan(self, sock, request: Request) -> None:
        if not request.dump:
            return self._error(sock, request, errno.EOPNOTSUPP)  # GET_SCAN is dump-only
        self._wdev_dump(sock, request, "scan")

    def _req_set_reg(self, sock, request: Request) -> None:
        """nl80211_req_set_reg(): an alpha2 of two characters is handed to the regulatory
        core (which applies it later, if its database knows it) and ACKed; none is EINVAL."""
        alpha2 = request.attrs.get("NL80211_ATTR_REG_ALPHA2")
        if not isinstance(alpha2, str) or len(alpha2) != 2:
            return self._error(sock, request, errno.EINVAL)
        self.regulatory_requests.append(alpha2)
        self._reply(sock, request, [])
        return None

    def _get_reg(self, sock, request: Request) -> None:
        regs = list(
            zip(self.fixture.messages.get("reg", []), self._decoded.get("reg", []), strict=False)
        )
        if request.dump:
            return self._dump(sock, request, [raw for raw, _ in regs])
        phy = request.attrs.get("NL80211_ATTR_WIPHY")
        own = [
            raw
            for raw, msg in regs
            if phy is not None and msg.get_attr("NL80211_ATTR_WIPHY") == phy
        ]
        glob = [raw for raw, msg in regs if msg.get_attr("NL80211_ATTR_WIPHY") is None]
        self._reply(sock, request, own[:1] or glob[:1])

    def _trigger_scan(self, sock, request: Request) -> None:
        ifindex = request.attrs.get("NL80211_ATTR_IFINDEX")
        iface = self._iface(ifindex)
        if iface is None:
            return self._error(sock, request, errno.ENODEV if ifindex else errno.EINVAL)
        if iface.get_attr("NL80211_ATTR_IFTYPE") not in (2, 3, 8, 9):  # sta/ap/p2p
            return self._error(sock, request, errno.EOPNOTSUPP)
        if ifindex in self.scanning:
            return self._error(sock, request, errno.EBUSY)
        self.scanning.add(ifindex)
        # nl80211_trigger_scan(): the "scan started" notification precedes the ACK
        self._event("scan_started", ifindex)
        self._reply(sock, request, [])
        if self.scan_outcome == "never":
            return
        kind = "scan_done" if self.scan_outcome == "done" else "scan_aborted"

        def finish() -> None:
            self.scanning.discard(ifindex)
            self._event(kind, ifindex)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            finish()
        else:
            self._timers.append(loop.call_later(self.scan_delay, finish))

    def _set_interface(self, sock, request: Request) -> None:
        """nl80211_set_interface() with a new type: cfg80211_change_iface() refuses a type
        the wiphy does not list (EOPNOTSUPP); mac80211-style drivers refuse a running
        interface (EBUSY)."""
        ifindex = request.attrs.get("NL80211_ATTR_IFINDEX")
        iftype = request.attrs.get("NL80211_ATTR_IFTYPE")
        position = next(
            (
                i
                for i, msg in enumerate(self._decoded.get("interfaces", []))
                if msg.get_attr("NL80211_ATTR_IFINDEX") == ifindex
            ),
            None,
        )
        if position is None:
            return self._error(sock, request, errno.ENODEV if ifindex else errno.EINVAL)
        iface = self._decoded["interfaces"][position]
        if iftype is None or iftype == iface.get_attr("NL80211_ATTR_IFTYPE"):
            return self._reply(sock, request, [])
        phys = self._select("wiphy", WIPHY=iface.get_attr("NL80211_ATTR_WIPHY"))
        supported = self._decode(phys[0]).get_attr("NL80211_ATTR_SUPPORTED_IFTYPES") if phys else []
        if IFTYPE_BY_NUMBER.get(iftype) not in (supported or []):
            return self._error(sock, request, errno.EOPNOTSUPP)
        if ifindex in self.running:
            return self._error(sock, request, errno.EBUSY)
        raw = set_u32(self.fixture.messages["interfaces"][position], ATTR_IFTYPE, iftype)
        self.fixture.messages["interfaces"][position] = raw
        self._decoded["interfaces"][position] = self._decode(raw)
        self._reply(sock, request, [])
        # nl80211_notify_iface(…, NL80211_CMD_SET_INTERFACE): the new type, to "config"
        self.emit("config", raw[:16] + bytes([CMD["SET_INTERFACE"]]) + raw[17:])
        return None

    def _event(self, kind: str, ifindex: int) -> None:
        for raw, msg in zip(
            self.fixture.messages.get(kind, []), self._decoded.get(kind, []), strict=False
        ):
            if msg.get_attr("NL80211_ATTR_IFINDEX") == ifindex:
                self.emit("scan", raw)
                return
