"""LLDP neighbours: the json0 parser on real lldpcli output, hostile and malformed output,
and read_neighbours through the real runner, running a stand-in lldpcli script."""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from hostcore.builtin.network.lldp import (
    MAX_CAPABILITIES,
    MAX_DESCRIPTION_CHARS,
    MAX_MANAGEMENT_ADDRESSES,
    MAX_TEXT_CHARS,
    LldpCapabilityRead,
    LldpNeighbourRead,
    LldpOutputError,
    lldpcli_argv,
    parse_neighbours,
    read_neighbours,
)
from hostcore.config import RunnerSettings
from hostcore.errors import CommandFailed, CommandTimeout, Unavailable
from hostcore.runner import CommandResult, Runner

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "network" / "lldp"
NONE = (FIXTURES / "none.json").read_bytes()
LLDP = (FIXTURES / "lldp.json").read_bytes()
CDP = (FIXTURES / "cdp.json").read_bytes()
SEVERAL = (FIXTURES / "several.json").read_bytes()
HOSTILE = (FIXTURES / "hostile.json").read_bytes()
JSON_FORMAT = (FIXTURES / "lldp-json-format.json").read_bytes()
# What lldpcli 1.0.16 prints on stderr when nothing listens on the socket, as captured.
NO_DAEMON_STDERR = (
    b"2026-11-30T11:08:38 [WARN/control] unable to connect to socket /run/lldpd.socket: "
    b"No such file or directory\n"
)
INVISIBLE = {"Cc", "Cf", "Cs"}


def lldp_document() -> dict[str, Any]:
    """lldp.json as a dict, for a test to change one part of a real neighbour."""
    document: dict[str, Any] = json.loads(LLDP)
    return document


def interface_of(document: dict[str, Any]) -> dict[str, Any]:
    interface: dict[str, Any] = document["lldp"][0]["interface"][0]
    return interface


def encoded(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document).encode()


def with_system_name(name: str) -> bytes:
    document = lldp_document()
    interface_of(document)["chassis"][0]["name"] = [{"value": name}]
    return encoded(document)


def visible(text: str) -> bool:
    return not [c for c in text if unicodedata.category(c) in INVISIBLE]


# --- parsing real output ----------------------------------------------------------------


def test_lldpd_with_no_neighbours_is_an_empty_list() -> None:
    assert parse_neighbours(NONE) == []


def test_an_lldp_neighbour_is_read_field_by_field() -> None:
    assert parse_neighbours(LLDP) == [
        LldpNeighbourRead(
            protocol="LLDP",
            local_port="eth0",
            chassis_id="1e:a7:5b:cb:20:a3",
            chassis_id_type="mac",
            system_name="switch-b",
            system_description="Lab switch B",
            port_id="swp7",
            port_id_type="ifname",
            port_description="uplink to kitchen-panel",
            capabilities=[
                LldpCapabilityRead(name="Bridge", enabled=True),
                LldpCapabilityRead(name="Router", enabled=True),
                LldpCapabilityRead(name="Wlan", enabled=False),
                LldpCapabilityRead(name="Station", enabled=False),
            ],
            management_addresses=["192.0.2.2", "192.0.2.3", "2001:db8::2"],
            ttl_s=10,
            vlan_id=None,
            age_s=1,
        )
    ]


def test_a_cdp_neighbour_keeps_its_version_and_its_description_on_one_line() -> None:
    (neighbour,) = parse_neighbours(CDP)

    assert (neighbour.protocol, neighbour.local_port) == ("CDPv2", "eth0")
    assert (neighbour.chassis_id_type, neighbour.chassis_id) == ("local", "cisco-like")
    assert (neighbour.port_id_type, neighbour.port_id) == ("ifname", "Gi0-1")
    assert neighbour.system_description is not None
    assert neighbour.system_description.startswith("WS-C2960 running on Debian GNU/Linux 12")
    assert neighbour.capabilities == [LldpCapabilityRead(name="Station", enabled=True)]
    assert neighbour.management_addresses == ["198.51.100.7"]
    assert (neighbour.ttl_s, neighbour.age_s) == (10, 2)


def test_neighbours_on_several_ports_come_in_lldpcli_order() -> None:
    neighbours = parse_neighbours(SEVERAL)

    assert [(n.local_port, n.protocol, n.system_name) for n in neighbours] == [
        ("eth0", "LLDP", "bravo"),
        ("eth1", "CDPv1", "charlie"),
        ("eth2", "EDP", "echo"),
    ]
    edp = neighbours[2]
    assert (edp.capabilities, edp.management_addresses) == ([], [])
    assert (edp.port_id, edp.port_description) == ("1/1", "Slot 1 / Port 1")


def test_a_hostile_neighbour_is_cleaned_and_bounded() -> None:
    (neighbour,) = parse_neighbours(HOSTILE)

    # ESC and BEL dropped, CR LF one space, the right-to-left override dropped.
    assert neighbour.system_name == "evil[2J switchgnp.exe"
    assert neighbour.chassis_id == "chassisid"
    assert neighbour.system_description is not None
    assert neighbour.system_description.startswith(
        "Cisco IOS Software Technical Support: http://www.example.com/support \ufffd\ufffdAAAA"
    )
    assert neighbour.port_description == "uplink " + "-" * (MAX_TEXT_CHARS - 8) + "…"
    assert neighbour.vlan_id == 42
    assert neighbour.ttl_s == 120
    assert neighbour.capabilities == [
        LldpCapabilityRead(name="Bridge", enabled=True),
        LldpCapabilityRead(name="Router", enabled=False),
    ]
    texts = [value for value in neighbour.model_dump().values() if isinstance(value, str)]
    assert all(visible(text) for text in texts)


def test_the_json_format_whose_shape_flips_is_refused() -> None:
    with pytest.raises(LldpOutputError, match="lldp is not a list of objects"):
        parse_neighbours(JSON_FORMAT)


# --- what older and newer lldpcli print ----------------------------------------------------


def test_the_ttl_lldpd_before_0_9_7_printed_under_the_chassis_is_read() -> None:
    document = lldp_document()
    interface = interface_of(document)
    interface["chassis"][0]["ttl"] = interface["port"][0].pop("ttl")

    (neighbour,) = parse_neighbours(encoded(document))

    assert neighbour.ttl_s == 10


def test_a_neighbour_with_only_its_identifiers_leaves_the_rest_empty() -> None:
    document = {
        "lldp": [
            {
                "interface": [
                    {
                        "name": "eth0",
                        "via": "LLDP",
                        "chassis": [{"id": [{"type": "mac", "value": "02:00:00:00:00:01"}]}],
                        "port": [{"id": [{"type": "local", "value": "7"}]}],
                    }
                ]
            }
        ]
    }

    assert parse_neighbours(encoded(document)) == [
        LldpNeighbourRead(
            protocol="LLDP",
            local_port="eth0",
            chassis_id="02:00:00:00:00:01",
            chassis_id_type="mac",
            system_name=None,
            system_description=None,
            port_id="7",
            port_id_type="local",
            port_description=None,
            capabilities=[],
            management_addresses=[],
            ttl_s=None,
            vlan_id=None,
            age_s=None,
        )
    ]


def test_keys_a_later_lldpcli_adds_are_ignored() -> None:
    document = lldp_document()
    interface = interface_of(document)
    interface["alias"] = "uplink"
    interface["unknown-tlvs"] = [{"unknown-tlv": [{"oui": "00,80,C2", "value": "01"}]}]
    interface["chassis"][0]["capability"][0]["available"] = True

    assert parse_neighbours(encoded(document)) == parse_neighbours(LLDP)


@pytest.mark.parametrize(
    ("age", "seconds"),
    [
        ("0 day, 00:00:00", 0),
        ("1 day, 02:03:04", 93784),
        ("12 days, 23:59:59", 12 * 86400 + 86399),
        ("too much", None),  # lldpcli's own words past its buffer
        ("", None),
    ],
)
def test_age_is_read_in_seconds(age: str, seconds: int | None) -> None:
    document = lldp_document()
    interface_of(document)["age"] = age

    (neighbour,) = parse_neighbours(encoded(document))

    assert neighbour.age_s == seconds


@pytest.mark.parametrize(
    ("vlans", "vlan_id"),
    [
        ([{"vlan-id": "100", "pvid": False, "value": "data"}, {"vlan-id": "42", "pvid": True}], 42),
        ([{"vlan-id": "100", "value": "data"}], None),  # before lldpd printed pvid: no
        ([{"vlan-id": "0", "pvid": True}], None),
        ([{"vlan-id": "4095", "pvid": True}], None),
        ([{"vlan-id": "65535", "pvid": True}], None),
        ([{"vlan-id": "4094", "pvid": True}], 4094),
    ],
)
def test_the_port_vlan_id_is_the_vlan_marked_pvid(
    vlans: list[dict[str, Any]], vlan_id: int | None
) -> None:
    document = lldp_document()
    interface_of(document)["vlan"] = vlans

    (neighbour,) = parse_neighbours(encoded(document))

    assert neighbour.vlan_id == vlan_id


def test_management_addresses_are_deduplicated_and_bounded() -> None:
    document = lldp_document()
    addresses = [f"192.0.2.{host}" for host in range(1, 40)]
    chassis = interface_of(document)["chassis"][0]
    chassis["mgmt-ip"] = [{"value": address} for address in ["192.0.2.1", *addresses]]

    (neighbour,) = parse_neighbours(encoded(document))

    assert neighbour.management_addresses == addresses[:MAX_MANAGEMENT_ADDRESSES]


def test_capabilities_are_bounded() -> None:
    document = lldp_document()
    chassis = interface_of(document)["chassis"][0]
    chassis["capability"] = [{"type": f"Cap{n}", "enabled": True} for n in range(100)]

    (neighbour,) = parse_neighbours(encoded(document))

    assert len(neighbour.capabilities) == MAX_CAPABILITIES


# --- untrusted text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("plain switch-01", "plain switch-01"),
        ("caf\u00e9 \u4ea4\u63db\u6a5f", "caf\u00e9 \u4ea4\u63db\u6a5f"),
        ("  padded\t", "padded"),
        ("tab\tseparated", "tab separated"),
        ("line\r\n\r\nbreaks", "line breaks"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("bell\x07 and del\x7f and c1\x9b", "bell and del and c1"),
        ("zero\u200bwidth\u200d", "zerowidth"),
        ("\u202eexe.gnp", "exe.gnp"),
        ("para\u2029graph\u2028", "para graph"),
        ("lone \ud800surrogate", "lone surrogate"),
        ("\x00\x07\u200b", None),
        ("", None),
    ],
)
def test_names_from_the_wire_lose_control_and_invisible_characters(
    name: str, shown: str | None
) -> None:
    (neighbour,) = parse_neighbours(with_system_name(name))

    assert neighbour.system_name == shown


def test_a_huge_name_is_cut_to_the_bound_with_an_ellipsis() -> None:
    (neighbour,) = parse_neighbours(with_system_name("x" * 1_000_000))

    assert neighbour.system_name == "x" * (MAX_TEXT_CHARS - 1) + "…"


def test_a_name_at_the_bound_is_kept_whole() -> None:
    name = "y" * MAX_TEXT_CHARS

    (neighbour,) = parse_neighbours(with_system_name(f"  {name} \n\t "))

    assert neighbour.system_name == name


def test_a_description_has_a_larger_bound() -> None:
    document = lldp_document()
    interface_of(document)["chassis"][0]["descr"] = [{"value": "d" * 5000}]

    (neighbour,) = parse_neighbours(encoded(document))

    assert neighbour.system_description == "d" * (MAX_DESCRIPTION_CHARS - 1) + "…"


def test_control_characters_do_not_count_against_the_bound() -> None:
    (neighbour,) = parse_neighbours(with_system_name("\x07" * 100_000 + "name"))

    assert neighbour.system_name == "name"


# --- malformed output ---------------------------------------------------------------------


def malformed_interface(change: Any) -> bytes:
    document = lldp_document()
    change(interface_of(document))
    return encoded(document)


def _set(path: Sequence[str | int], value: Any) -> Any:
    def change(interface: dict[str, Any]) -> None:
        target: Any = interface
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _drop(key: str) -> Any:
    return lambda interface: interface.pop(key)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"-------\nLLDP neighbors:\n", id="plain-text-format"),
        pytest.param(b'{"lldp": [{}', id="cut-short"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[]", id="top-level-list"),
        pytest.param(b'"lldp"', id="top-level-string"),
        pytest.param(b"{}", id="no-lldp-key"),
        pytest.param(b'{"lldp": {}}', id="lldp-object"),
        pytest.param(b'{"lldp": [[]]}', id="lldp-list-of-lists"),
        pytest.param(b'{"lldp": [{"interface": {}}]}', id="interface-object"),
        pytest.param(b'{"lldp": [{"interface": ["eth0"]}]}', id="interface-strings"),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="deep-nesting"),
        pytest.param(b'{"lldp": [' + b"9" * 10_000 + b"]}", id="huge-number"),
        pytest.param(malformed_interface(_drop("name")), id="no-interface-name"),
        pytest.param(malformed_interface(_set(["name"], True)), id="interface-name-boolean"),
        pytest.param(malformed_interface(_drop("via")), id="no-protocol"),
        pytest.param(malformed_interface(_set(["via"], "")), id="empty-protocol"),
        pytest.param(malformed_interface(_set(["chassis"], {"id": "x"})), id="chassis-object"),
        pytest.param(
            malformed_interface(_set(["chassis", 0, "name"], "switch-b")), id="name-not-list"
        ),
        pytest.param(
            malformed_interface(_set(["chassis", 0, "name"], [{"value": 7}])), id="name-number"
        ),
        pytest.param(
            malformed_interface(_set(["chassis", 0, "id", 0, "value"], ["x"])), id="id-list"
        ),
        pytest.param(
            malformed_interface(_set(["chassis", 0, "capability", 0, "enabled"], "on")),
            id="capability-enabled-string",
        ),
        pytest.param(
            malformed_interface(_set(["chassis", 0, "capability", 0], {"enabled": True})),
            id="capability-without-type",
        ),
        pytest.param(
            malformed_interface(_set(["chassis", 0, "mgmt-ip"], [{"value": 1}])),
            id="mgmt-ip-number",
        ),
        pytest.param(
            malformed_interface(_set(["port", 0, "ttl"], [{"value": "ten"}])), id="ttl-word"
        ),
        pytest.param(
            malformed_interface(_set(["port", 0, "ttl"], [{"value": "-1"}])), id="ttl-negative"
        ),
        pytest.param(
            malformed_interface(_set(["port", 0, "ttl"], [{"value": "1" * 4000}])),
            id="ttl-endless",
        ),
        pytest.param(
            malformed_interface(_set(["vlan"], [{"vlan-id": "x", "pvid": True}])),
            id="vlan-id-word",
        ),
        pytest.param(malformed_interface(_set(["age"], 5)), id="age-number"),
    ],
)
def test_output_lldpcli_would_not_print_is_refused(raw: bytes) -> None:
    with pytest.raises(LldpOutputError):
        parse_neighbours(raw)


def test_an_output_error_never_quotes_the_output() -> None:
    secret = "s3cr3t-from-the-wire"
    raws = [
        malformed_interface(_set(["name"], {"secret": secret})),
        malformed_interface(_set(["port", 0, "ttl"], [{"value": secret}])),
        f'{{"lldp": [{{"interface": "{secret}"}}]}}'.encode(),
        f"{secret} is not json".encode(),
        f'{{"{secret}": '.encode(),
    ]
    for raw in raws:
        with pytest.raises(LldpOutputError) as caught:
            parse_neighbours(raw)
        assert secret not in str(caught.value)


# --- running lldpcli ---------------------------------------------------------------------


class StandInRunner(Runner):
    """The real runner, running ``program`` where the code asks for lldpcli, and noting argv."""

    def __init__(self, program: Path, settings: RunnerSettings | None = None) -> None:
        super().__init__(settings or RunnerSettings())
        self.program = program
        self.commands: list[list[str]] = []

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = False,
    ) -> CommandResult:
        self.commands.append(list(argv))
        return await super().run(
            [str(self.program), *argv[1:]],
            timeout_s=timeout_s,
            input=input,
            env=env,
            cwd=cwd,
            check=check,
        )


def stand_in_lldpcli(
    directory: Path,
    *,
    stdout: bytes = b"",
    stderr: bytes = b"",
    status: int = 0,
    hang: bool = False,
) -> Path:
    """An executable that prints what lldpcli would and exits the same way."""
    (directory / "stdout").write_bytes(stdout)
    (directory / "stderr").write_bytes(stderr)
    script = directory / "lldpcli"
    script.write_text(
        "#!/bin/sh\n"
        + ("exec sleep 60\n" if hang else "")
        + f'cat "{directory}/stdout"\n'
        + f'cat "{directory}/stderr" >&2\n'
        + f"exit {status}\n"
    )
    script.chmod(0o755)
    return script


def test_argv_is_json0_details_on_the_configured_socket() -> None:
    assert lldpcli_argv(Path("/run/lldpd/ctl sock")) == [
        "lldpcli",
        "-f",
        "json0",
        "-u",
        "/run/lldpd/ctl sock",
        "show",
        "neighbors",
        "details",
    ]
    assert lldpcli_argv(None) == ["lldpcli", "-f", "json0", "show", "neighbors", "details"]


async def test_read_runs_lldpcli_on_the_configured_socket_and_parses_it(tmp_path: Path) -> None:
    runner = StandInRunner(stand_in_lldpcli(tmp_path, stdout=SEVERAL))

    neighbours = await read_neighbours(
        runner, control_socket=Path("/run/lldpd.socket"), timeout_s=5
    )

    assert neighbours == parse_neighbours(SEVERAL)
    assert runner.commands == [lldpcli_argv(Path("/run/lldpd.socket"))]


async def test_read_without_a_configured_socket_leaves_lldpcli_its_default(
    tmp_path: Path,
) -> None:
    runner = StandInRunner(stand_in_lldpcli(tmp_path, stdout=NONE))

    assert await read_neighbours(runner, control_socket=None, timeout_s=5) == []
    assert runner.commands == [["lldpcli", "-f", "json0", "show", "neighbors", "details"]]


async def test_a_missing_lldpcli_is_unavailable_naming_the_lldpd_package(tmp_path: Path) -> None:
    runner = StandInRunner(tmp_path / "not-installed" / "lldpcli")

    with pytest.raises(Unavailable, match=r"lldpcli is not installed \(package lldpd\)"):
        await read_neighbours(runner, control_socket=None, timeout_s=5)


@pytest.mark.parametrize(
    "stderr",
    [
        NO_DAEMON_STDERR,
        b"2026-11-30T11:08:40 [WARN/control] unable to connect to socket /run/lldpd.socket: "
        b"Connection refused\n",
    ],
)
async def test_lldpcli_that_cannot_reach_lldpd_is_unavailable_naming_lldpd(
    tmp_path: Path, stderr: bytes
) -> None:
    runner = StandInRunner(stand_in_lldpcli(tmp_path, stderr=stderr, status=1))

    with pytest.raises(Unavailable) as caught:
        await read_neighbours(runner, control_socket=Path("/run/lldpd.socket"), timeout_s=5)

    assert caught.value.detail == (
        "lldpd is not running: its control socket at /run/lldpd.socket cannot be reached"
    )


async def test_without_a_configured_socket_the_answer_names_lldpclis_default(
    tmp_path: Path,
) -> None:
    runner = StandInRunner(stand_in_lldpcli(tmp_path, stderr=NO_DAEMON_STDERR, status=1))

    with pytest.raises(Unavailable, match=r"its control socket \(lldpcli's default\) cannot"):
        await read_neighbours(runner, control_socket=None, timeout_s=5)


async def test_a_socket_lldpcli_may_not_open_is_unavailable_saying_permission_denied(
    tmp_path: Path,
) -> None:
    stderr = b"[WARN/control] unable to connect to socket /srv/x.sock: Permission denied\n"
    runner = StandInRunner(stand_in_lldpcli(tmp_path, stderr=stderr, status=1))

    with pytest.raises(Unavailable, match=r"at /srv/x\.sock cannot be opened: permission denied"):
        await read_neighbours(runner, control_socket=Path("/srv/x.sock"), timeout_s=5)


async def test_another_lldpcli_failure_names_its_status_and_logs_its_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stderr = b"lldpcli: something private went wrong\n"
    runner = StandInRunner(stand_in_lldpcli(tmp_path, stdout=LLDP, stderr=stderr, status=3))

    with (
        caplog.at_level(logging.WARNING, logger="hostcore.builtin.network.lldp"),
        pytest.raises(CommandFailed) as caught,
    ):
        await read_neighbours(runner, control_socket=None, timeout_s=5)

    assert caught.value.detail == "lldpcli exited with status 3"
    assert "something private went wrong" in caplog.text


async def test_output_hostcore_cannot_read_is_command_failed_without_the_output(
    tmp_path: Path,
) -> None:
    secret = b"s3cr3t-from-the-wire"
    runner = StandInRunner(stand_in_lldpcli(tmp_path, stdout=b'{"lldp": "' + secret + b'"}'))

    with pytest.raises(CommandFailed) as caught:
        await read_neighbours(runner, control_socket=None, timeout_s=5)

    assert caught.value.detail == (
        "lldpcli printed output hostcore cannot read: lldp is not a list of objects"
    )
    assert secret.decode() not in caught.value.detail


async def test_output_cut_by_the_runners_cap_is_command_failed(tmp_path: Path) -> None:
    runner = StandInRunner(
        stand_in_lldpcli(tmp_path, stdout=SEVERAL), RunnerSettings(max_output_bytes=1024)
    )

    with pytest.raises(CommandFailed, match="more than hostcore keeps"):
        await read_neighbours(runner, control_socket=None, timeout_s=5)


async def test_a_hung_lldpcli_times_out(tmp_path: Path) -> None:
    runner = StandInRunner(stand_in_lldpcli(tmp_path, hang=True))

    with pytest.raises(CommandTimeout):
        await read_neighbours(runner, control_socket=None, timeout_s=0.5)


@pytest.mark.parametrize(
    "raw", [LLDP, CDP, SEVERAL, HOSTILE, with_system_name("\ud83d lone surrogate")]
)
def test_every_neighbour_serializes_as_the_api_sends_it(raw: bytes) -> None:
    for neighbour in parse_neighbours(raw):
        assert LldpNeighbourRead.model_validate_json(neighbour.model_dump_json()) == neighbour
