"""A private D-Bus daemon standing in for the system bus, with fake daemons on it.

``private_bus`` starts ``dbus-daemon`` and points ``DBUS_SYSTEM_BUS_ADDRESS``
at it for the test; ``fake_services`` puts systemd, logind, hostnamed and
timedated fakes on it; ``fake_services_factory(unresponsive=..., absent=...)``
builds other line-ups. Everything is stopped at teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Collection, Iterator

import pytest

from tests.builtin.system.fakes import FakeServices, FakeServicesFactory, PrivateBus, UnitState


@pytest.fixture
def private_bus_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    """The running daemon, for tests that stop or restart it."""
    if shutil.which("dbus-daemon") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must provide dbus-daemon (.ci/run installs the dbus package)")
        pytest.skip("dbus-daemon is not installed (apt-get install dbus)")
    daemon = PrivateBus()
    try:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", daemon.start())
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def private_bus(private_bus_daemon: PrivateBus) -> str:
    """The address of a private bus that is the system bus for this test."""
    return private_bus_daemon.address


@pytest.fixture
def fake_services_factory(private_bus: str) -> Iterator[FakeServicesFactory]:
    """``make(unresponsive={"hostname1"}, absent={"timedate1"}, units={...})``: started fakes."""
    with contextlib.ExitStack() as stops:  # each one stopped even if another fails to

        def make(
            *,
            unresponsive: Collection[str] = (),
            absent: Collection[str] = (),
            units: dict[str, UnitState] | None = None,
        ) -> FakeServices:
            services = FakeServices(
                private_bus, unresponsive=unresponsive, absent=absent, units=units
            )
            stops.callback(services.stop)
            return services.start()

        yield make


@pytest.fixture
def fake_services(fake_services_factory: FakeServicesFactory) -> FakeServices:
    """All four fakes, answering."""
    return fake_services_factory()
