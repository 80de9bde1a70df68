"""Fixtures for every test: settings from explicit layers, apps, clients, fake daemons.

Helpers the fixtures and tests share (tokens, signed headers, plugins) are in
``tests/helpers.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings, load_settings
from hostcore.plugins import PluginRegistry, PluginSource, object_source
from tests.builtin.system.fakes import FakeServices, FakeServicesFactory, PrivateBus, UnitState
from tests.helpers import LOOPBACK, NOWHERE, ROOT, auth_and_probe, bearer, isolated_environ


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from explicit layers only: never the machine's /etc or ./hostcore.toml."""

    def make(*overrides: str, config_file: Path | None = None, **environ: str) -> Settings:
        return load_settings(
            config_file=config_file,
            overrides=list(overrides),
            environ=isolated_environ(tmp_path, **environ),
            system_config=NOWHERE,
            local_config=NOWHERE,
        )

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def hostcore_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's environment and working directory as ``isolated_environ``'s, for code
    that reads the real ones (a reload's ``CliLayers.load``, a command run in this process).
    Returns ``tmp_path``."""
    for name in [name for name in os.environ if name.startswith("HOSTCORE_")]:
        monkeypatch.delenv(name)
    for name, value in isolated_environ(tmp_path).items():
        if name.startswith("HOSTCORE_"):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def app_factory(settings: Settings) -> Callable[..., FastAPI]:
    """Build an app with exactly the given plugins (name -> module or object)."""

    def make(
        plugins: dict[str, object] | None = None, *, app_settings: Settings | None = None
    ) -> FastAPI:
        sources: list[PluginSource] = [
            object_source(name, obj) for name, obj in (plugins or {}).items()
        ]
        used = app_settings or settings
        return create_app(used, registry=PluginRegistry.load(used, sources=sources))

    return make


@pytest.fixture
def client_for() -> Iterator[Callable[[FastAPI], TestClient]]:
    """A TestClient running the app's lifespan, holding a real all-scopes token."""
    clients: list[TestClient] = []

    def make(app: FastAPI, *, authenticated: bool = True) -> TestClient:
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if authenticated:
            client.headers.update(bearer(client))
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def serve(
    settings: Settings, app_factory: Callable[..., FastAPI]
) -> Iterator[Callable[..., TestClient]]:
    """An app with the auth and probe plugins, its lifespan running, called from ``address``."""
    clients: list[TestClient] = []

    def make(
        app_settings: Settings | None = None, *, address: tuple[str, int] = LOOPBACK
    ) -> TestClient:
        app = app_factory(auth_and_probe(), app_settings=app_settings or settings)
        client = TestClient(app, raise_server_exceptions=False, client=address)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One auth-and-probe app for a module's tests that change nothing another test could
    notice."""
    root = tmp_path_factory.mktemp("shared-app")
    settings = load_settings(
        environ=isolated_environ(root), system_config=NOWHERE, local_config=NOWHERE
    )
    sources = [object_source(name, obj) for name, obj in auth_and_probe().items()]
    app = create_app(settings, registry=PluginRegistry.load(settings, sources=sources))
    with TestClient(app, raise_server_exceptions=False, client=LOOPBACK) as client:
        yield client


# --- a private D-Bus standing in for the system bus, with fake daemons on it ----------------


@contextlib.contextmanager
def private_system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    """A private ``dbus-daemon`` that ``DBUS_SYSTEM_BUS_ADDRESS`` points at while the block
    runs; stopped at its end, whatever happened."""
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
def private_bus_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    """The running daemon, for tests that stop or restart it; the system bus for the test."""
    with private_system_bus(monkeypatch) as daemon:
        yield daemon


@pytest.fixture
def private_bus(private_bus_daemon: PrivateBus) -> str:
    """The address of a private bus that is the system bus for this test."""
    return private_bus_daemon.address


@pytest.fixture
def fake_services_factory(private_bus: str) -> Iterator[FakeServicesFactory]:
    """``make(unresponsive={"hostname1"}, absent={"timedate1"}, units={...})``: started fakes
    of systemd, logind, hostnamed and timedated."""
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


@pytest.fixture(scope="module")
def module_fake_services() -> Iterator[FakeServices]:
    """All four fakes, answering, on a private system bus that a module's tests share: for
    tests whose changes to the fakes no other test of the module depends on."""
    with pytest.MonkeyPatch.context() as monkeypatch, private_system_bus(monkeypatch) as bus:
        services = FakeServices(bus.address)
        try:  # stop() also stops what a start that failed half-way had started
            yield services.start()
        finally:
            services.stop()


EXAMPLE_PLUGIN = ROOT / "examples" / "hostcore-hello"


@pytest.fixture(scope="session")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a directory of its own, with its entry point
    (the test venv stays untouched): put it on ``sys.path`` or ``PYTHONPATH`` to load it."""
    target = tmp_path_factory.mktemp("hello-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE_PLUGIN),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert list(target.glob("hostcore_hello-*.dist-info/entry_points.txt"))
    return target
