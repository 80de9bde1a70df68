"""A real wpa_supplicant 2.10 and hostapd, on a private bus, in throwaway namespaces.

No radio exists here, so 802.1X runs on a wire: wpa_supplicant with its ``wired``
driver on one end of a veth pair (named ``wlan0`` in its namespace), hostapd with
``driver=wired`` and its internal EAP server (PEAP with MSCHAPv2, a self-signed
certificate made here) on the other. The authentication, the ``EAP`` signals, the
states, the saved networks and ``SaveConfig`` are the real daemon's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from tests.builtin.network.netns import namespaces, require_namespaces, veth

IFNAME = "wlan0"  # the supplicant's end: the name the fake nl80211 kernel lists too
IDENTITY = "alice"
PASSWORD = 'correct "horse" \\ battery'  # quotes and a backslash: sent as they are
START_TIMEOUT_S = 10.0


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostcore-test-radius")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Wired8021X:
    directory: Path
    config: Path  # wpa_supplicant's configuration file (update_config=1)
    supplicant_log: Path
    hostapd: subprocess.Popen[bytes]
    supplicant: subprocess.Popen[bytes]

    def config_text(self) -> str:
        return self.config.read_text()

    def logs(self) -> str:
        return self.supplicant_log.read_text(errors="replace")


@contextlib.contextmanager
def wired_8021x(directory: Path, bus_address: str) -> Iterator[Wired8021X]:
    """hostapd and wpa_supplicant running, wpa_supplicant's ``wlan0`` on the bus."""
    require_namespaces("wpa_supplicant", "hostapd")
    cert, key = _certificate(directory)
    users = directory / "eap_users"
    # Phase 1 takes any identity into PEAP; phase 2 knows one user (password in hex: the
    # file's quoted form ends at the first quote).
    users.write_text(f'* PEAP\n"{IDENTITY}" MSCHAPV2 {PASSWORD.encode().hex()} [2]\n')
    hostapd_conf = directory / "hostapd.conf"
    hostapd_conf.write_text(
        "interface=hcap0\ndriver=wired\nieee8021x=1\neap_server=1\neapol_version=2\n"
        f"eap_user_file={users}\nserver_cert={cert}\nprivate_key={key}\n"
    )
    config = directory / "wpa_supplicant.conf"
    # A wired port is never scanned for (ap_scan=0); the file may be rewritten.
    config.write_text("ap_scan=0\nupdate_config=1\n")
    log = directory / "wpa_supplicant.log"
    environ = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus_address}
    with namespaces(2) as (station, authenticator):
        veth(station, IFNAME, authenticator, "hcap0")
        with (directory / "hostapd.log").open("wb") as hostapd_log, log.open("wb") as out:
            hostapd = authenticator.start(
                "hostapd", str(hostapd_conf), stdout=hostapd_log, stderr=subprocess.STDOUT
            )
            supplicant = station.start(
                "wpa_supplicant", "-u", "-D", "wired", "-i", IFNAME, "-c", str(config), "-d",
                stdout=out, stderr=subprocess.STDOUT, env=environ,
            )  # fmt: skip
        asyncio.run(_wait_for_interface(bus_address, supplicant))
        yield Wired8021X(directory, config, log, hostapd, supplicant)


async def _wait_for_interface(address: str, process: subprocess.Popen[bytes]) -> None:
    bus = await MessageBus(bus_address=address).connect()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"wpa_supplicant exited with {process.returncode}")
            reply = await bus.call(
                Message(
                    destination="fi.w1.wpa_supplicant1",
                    path="/fi/w1/wpa_supplicant1",
                    interface="fi.w1.wpa_supplicant1",
                    member="GetInterface",
                    signature="s",
                    body=[IFNAME],
                )
            )
            if reply is not None and reply.message_type is MessageType.METHOD_RETURN:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"wpa_supplicant did not offer {IFNAME} on the bus in time")
    finally:
        bus.disconnect()
