"""The system plugin's service without HTTP: the allowed-units list and the limits are
checked before anything reaches systemd, logind or journalctl.

The bus is the real client talking to fake daemons on a private D-Bus; journalctl is a
scripted runner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hostcore.builtin.system.schemas import SystemSettings
from hostcore.builtin.system.service import SystemService
from hostcore.config import Settings
from hostcore.errors import BadRequest, Forbidden
from tests.builtin.system.fakes import FakeServices, ScriptedRunner, bus_calls
from tests.builtin.system.trees import RPI, copy_tree
from tests.helpers import wait_until

JOURNAL = Path(__file__).resolve().parents[2] / "fixtures" / "journal" / "reverse.jsonl"
ALLOWED = ["ssh.service", "nginx.service", "ghost.service"]


def system_settings(**changes: object) -> SystemSettings:
    values: dict[str, object] = {
        "root": RPI,
        "allowed_units": ALLOWED,
        "logs_max_limit": 50,
        "max_power_delay_s": 600,
        "dbus_timeout_s": 2.0,
    }
    return SystemSettings.model_validate({**values, **changes})


@pytest.fixture
def journal() -> ScriptedRunner:
    return ScriptedRunner(JOURNAL.read_bytes())


@pytest.fixture
async def service(journal: ScriptedRunner) -> AsyncIterator[SystemService]:
    service = SystemService(system_settings(), journal)
    yield service
    await service.stop()


def units_asked(journal: ScriptedRunner) -> list[list[str]]:
    """The --unit options of each journalctl command, in order."""
    return [
        [arg.removeprefix("--unit=") for arg in argv if arg.startswith("--unit=")]
        for argv, _ in journal.commands
    ]


# --- the allowed units ------------------------------------------------------------------


async def test_a_unit_off_the_allowed_list_reaches_neither_systemd_nor_the_journal(
    fake_services: FakeServices, service: SystemService, journal: ScriptedRunner
) -> None:
    refused = [
        service.unit("reboot.target"),
        service.control("reboot.target", "start"),
        service.control("cron.service", "stop"),
        service.logs("cron.service", None, None, None),
    ]
    for call in refused:
        with pytest.raises(Forbidden, match="is not on the allowed-units list"):
            await call
    assert bus_calls(fake_services) == 0
    assert journal.commands == []


@pytest.mark.parametrize(
    ("action", "member"), [("start", "StartUnit"), ("stop", "StopUnit"), ("restart", "RestartUnit")]
)
async def test_each_action_on_an_allowed_unit_is_its_own_systemd_call(
    fake_services: FakeServices, service: SystemService, action: str, member: str
) -> None:
    job = await service.control("nginx.service", action)  # type: ignore[arg-type]
    assert job.action == action
    assert [args[0] for args in fake_services.systemd.called(member)] == ["nginx.service"]
    assert bus_calls(fake_services) == 1


async def test_every_allowed_unit_is_listed_and_one_not_installed_is_not_found(
    fake_services: FakeServices, service: SystemService
) -> None:
    units = await service.units()
    assert [unit.name for unit in units] == ALLOWED
    ghost = units[-1]
    assert (ghost.load_state, ghost.active_state, ghost.sub_state) == (
        "not-found",
        "inactive",
        "dead",
    )


async def test_a_second_listing_asks_systemd_nothing(
    fake_services: FakeServices, service: SystemService
) -> None:
    """Every unit, found or not, was read once; systemd's signals keep them current."""
    first = await service.units()
    loaded = len(fake_services.systemd.called("LoadUnit"))
    assert await service.units() == first
    assert len(fake_services.systemd.called("LoadUnit")) == loaded


# --- the limits -------------------------------------------------------------------------


async def test_a_power_delay_over_the_limit_is_refused_before_logind_hears_of_it(
    fake_services: FakeServices, service: SystemService
) -> None:
    with pytest.raises(BadRequest, match="delay_s may be at most 600"):
        await service.power("reboot", 601)
    assert bus_calls(fake_services) == 0
    assert (await service.power("reboot", 600)).action == "reboot"
    assert fake_services.logind.scheduled is not None
    assert fake_services.logind.scheduled[0] == "reboot"
    assert (await service.power("poweroff", 0)).action == "poweroff"


async def test_logs_without_a_unit_read_only_the_allowed_units(
    service: SystemService, journal: ScriptedRunner
) -> None:
    await service.logs(None, None, None, None)
    await service.logs("ssh.service", None, None, 5)
    assert units_asked(journal) == [ALLOWED, ["ssh.service"]]


async def test_logs_default_to_at_most_100_lines_and_never_beyond_the_configured_limit(
    journal: ScriptedRunner,
) -> None:
    for configured, default in ((50, 50), (1000, 100)):
        service = SystemService(system_settings(logs_max_limit=configured), journal)
        await service.logs(None, None, None, None)
        await service.stop()
        assert f"--lines={default}" in journal.commands[-1][0]
    service = SystemService(system_settings(logs_max_limit=50), journal)
    asked = len(journal.commands)
    with pytest.raises(BadRequest, match="limit may be at most 50"):
        await service.logs(None, None, None, 51)
    await service.stop()
    assert len(journal.commands) == asked, "no journalctl for a refused limit"


# --- names and time: what the daemons read, changed behind their backs -----------------


async def test_a_hostname_changed_without_hostnamed_is_read_again(
    fake_services: FakeServices, journal: ScriptedRunner, tmp_path: Path
) -> None:
    """sethostname(2) or an edited /etc/hostname: hostnamed signals nothing."""
    root = copy_tree(RPI, tmp_path)
    service = SystemService(system_settings(root=root), journal)
    try:
        assert (await service.hostname()).hostname == "device"
        assert (await service.hostname()).hostname == "device"
        assert fake_services.property_reads("hostname1") == 1
        fake_services.hostnamed.hostname = "renamed"
        (root / "proc/sys/kernel/hostname").write_text("renamed\n")
        assert (await service.hostname()).hostname == "renamed"
        fake_services.hostnamed.pretty_hostname = "Front Desk"
        (root / "etc/machine-info").write_text('PRETTY_HOSTNAME="Front Desk"\n')
        assert (await service.hostname()).pretty_hostname == "Front Desk"
        assert fake_services.property_reads("hostname1") == 3
    finally:
        await service.stop()


async def test_a_time_zone_linked_without_timedated_is_read_again(
    fake_services: FakeServices, journal: ScriptedRunner, tmp_path: Path
) -> None:
    """``ln -sf /usr/share/zoneinfo/... /etc/localtime``: timedated signals nothing."""
    root = copy_tree(RPI, tmp_path)
    (root / "etc/localtime").unlink(missing_ok=True)
    (root / "etc/localtime").symlink_to("/usr/share/zoneinfo/UTC")
    service = SystemService(system_settings(root=root), journal)
    try:
        assert (await service.time()).timezone == "UTC"
        assert (await service.time()).timezone == "UTC"
        assert fake_services.property_reads("timedate1") == 1
        fake_services.timedated.timezone = "Asia/Tokyo"
        (root / "etc/localtime.new").symlink_to("/usr/share/zoneinfo/Asia/Tokyo")
        (root / "etc/localtime.new").replace(root / "etc/localtime")
        assert (await service.time()).timezone == "Asia/Tokyo"
    finally:
        await service.stop()


@pytest.mark.parametrize(("workers", "shared"), [(1, False), (2, True)])
async def test_workers_share_their_stats_sample_through_the_run_directory(
    journal: ScriptedRunner,
    tmp_path: Path,
    settings_factory: Callable[..., Settings],
    workers: int,
    shared: bool,
) -> None:
    from types import SimpleNamespace

    from hostcore.builtin import system as plugin

    settings = settings_factory(f"run_dir={tmp_path}", f"server.workers={workers}")
    app = SimpleNamespace(state=SimpleNamespace(runner=journal))
    await plugin.hostcore_startup(app, settings, system_settings())  # type: ignore[arg-type]
    try:
        collector = app.state.system.collector
        assert collector.shared == (tmp_path / plugin.SHARED_STATS_FILE if shared else None)
        collector.interval_s = 0.05
        await collector.current()
        if shared:
            await wait_until(
                (tmp_path / plugin.SHARED_STATS_FILE).exists, 10.0, "the first shared sample"
            )
        else:
            await asyncio.sleep(0.2)
            assert not (tmp_path / plugin.SHARED_STATS_FILE).exists()
    finally:
        await plugin.hostcore_shutdown(app)  # type: ignore[arg-type]
