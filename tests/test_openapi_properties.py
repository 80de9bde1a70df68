"""A property-based run of the whole OpenAPI document (schemathesis) against the real plugins.

Every operation of the document ``create_app`` serves gets examples that the
document allows and examples that it forbids. The app runs in-process with the
built-in plugins: the system plugin reads a Pi-like fixture tree and talks to
fake daemons on a private D-Bus, the auth plugin to a store in a temporary
directory, and every request carries a real token holding ``*``. An answer must
be documented (status code, content type, headers, body schema), and never a
5xx except a deliberate 503 that says what is missing (journalctl without a
journal, for one).

Operations that change the host reach fakes: service control, power, hostname
and time zone go to the fake daemons, key rotation and token revocation to the
temporary store. The network plugin's own namespace is a throwaway one the run
makes (as root, as in CI), so setting an interface down or adding a VLAN acts
there; without root the host's namespace is only read, the kernel refusing every
change (503). The one operation left out is ``DELETE /api/v1/auth/tokens``
(revoke every token): it would revoke the run's own token and turn every later
answer into a 401; its own tests cover it.

The run is bounded and the same on every machine: a fixed number of examples
per operation, derived from the test's name (``derandomize``), no example
database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hostcore.app import create_app
from hostcore.builtin.network.netlink import Netlink
from hostcore.config import load_settings
from tests.builtin.network.netns import namespaces
from tests.builtin.system.fakes import FakeServices
from tests.builtin.system.trees import RPI
from tests.helpers import NOWHERE, bearer, isolated_environ

UNITS = '["ssh.service","nginx.service","systemd-timesyncd.service","ghost.service"]'
BASE_URL = "http://testserver"
NOT_CHECKED = [
    # A schema-valid request may still be refused by a rule the document cannot
    # state: a unit off the allowed list, a delay over max_power_delay_s, a name
    # not in the zoneinfo database, a login without a password.
    positive_data_acceptance,
]


def openapi_document() -> dict[str, Any]:
    """The document as the default configuration builds it; building the app touches nothing."""
    nowhere = Path("/nonexistent/hostcore-openapi")
    settings = load_settings(
        environ=isolated_environ(nowhere), system_config=NOWHERE, local_config=NOWHERE
    )
    return create_app(settings).openapi()


DOCUMENT = openapi_document()
EVENTS_PATH = "/api/v1/events"
STREAM_TOKEN_TTL_S = 2
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(
    method="DELETE", path="/api/v1/auth/tokens"
)


@pytest.fixture(scope="module")
def network_namespace() -> Iterator[Path | None]:
    """A namespace for the network plugin to act in, as root; None (the host's, which
    the kernel then protects from an unprivileged process) otherwise."""
    if os.geteuid() != 0:
        yield None
        return
    with namespaces(1) as (made,):
        made.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        yield made.path


@pytest.fixture(scope="module")
def api(
    module_fake_services: FakeServices,
    network_namespace: Path | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    """One app for every operation, as one server answers them all in turn: what an
    operation changed (a unit stopped, a key rotated, an interface down) is the state the
    next one meets. Each test sends a token of its own (``fresh_token``)."""
    tmp_path = tmp_path_factory.mktemp("openapi")
    no_namespaces = tmp_path / "netns"
    no_namespaces.mkdir()
    settings = load_settings(
        overrides=[
            f"plugins.system.root={RPI}",
            f"plugins.system.allowed_units={UNITS}",
            "plugins.system.dbus_timeout_s=0.5",
            f"plugins.network.root={tmp_path}",
            f"plugins.network.netns_dir={no_namespaces}",
            f"plugins.network.lldpd_socket={tmp_path / 'lldpd.socket'}",
            # One caller sends every example: the default limit would answer 429s instead.
            "ratelimit.default=1000000/minute",
        ],
        environ=isolated_environ(tmp_path),
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        if network_namespace is not None:
            network = client.app.state.network  # type: ignore[attr-defined]
            network.netlink = Netlink(no_namespaces, own=network_namespace)
        yield client


@pytest.fixture(autouse=True)
def fresh_token(api: TestClient) -> None:
    """A token of this test's own: an earlier operation may have revoked the last one."""
    api.headers.update(bearer(api))


def send(client: TestClient, case: schemathesis.Case) -> Any:
    """Send ``case`` through the app as schemathesis's own transport would encode it.

    Schemathesis serializes a case for ``requests``; ``requests`` turns that into
    the bytes on the wire (query, body, headers), which go to the app through the
    test client, whose lifespan and token the whole run shares.
    """
    prepared = requests.Request(**case.as_transport_kwargs(base_url=BASE_URL)).prepare()
    assert prepared.method is not None and prepared.url is not None
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    headers = dict(prepared.headers)
    if case.path == EVENTS_PATH and "authorization" in {k.lower() for k in headers}:
        # An event stream lasts as long as its token: a short-lived one ends it, so the
        # answer (headers and the events until then) can be checked.
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        headers.update(bearer(client, ttl_s=STREAM_TOKEN_TTL_S))
    return client.request(prepared.method, prepared.url, headers=headers, content=body)


def test_the_run_uses_the_document_the_app_serves(api: TestClient) -> None:
    assert api.get("/api/v1/openapi.json").json() == DOCUMENT


def only_a_deliberate_503(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """No 5xx but a 503 whose error body says what is missing."""
    if response.status_code < 500:
        return
    assert response.status_code == 503, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], response.text[:500]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=timedelta(seconds=10),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented_and_never_5xx_but_a_deliberate_503(
    case: schemathesis.Case, api: TestClient
) -> None:
    response = send(api, case)

    case.validate_response(
        response,
        excluded_checks=[not_a_server_error, *NOT_CHECKED],
        additional_checks=[only_a_deliberate_503],
    )
