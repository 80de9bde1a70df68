"""The system plugin through the HTTP API: fakes on a private D-Bus, a Pi-like fixture tree."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings
from hostcore.logging import RequestIdFilter
from tests.builtin.system.fakes import FakeServices, bus_calls
from tests.builtin.system.trees import RPI
from tests.helpers import bearer, wait_for

UNITS = '["ssh.service","nginx.service","systemd-timesyncd.service","ghost.service"]'
TIMEOUT_S = 0.5
# Bounds a wait that only a hang would reach.
HANG_GUARD_S = 30.0


@pytest.fixture
def system_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(
        'plugins.enabled=["auth","system"]',  # building the other plugins would only slow it
        f"plugins.system.root={RPI}",
        f"plugins.system.allowed_units={UNITS}",
        f"plugins.system.dbus_timeout_s={TIMEOUT_S}",
        'plugins.system.packages=["hostapd","iw","network-manager"]',
        "plugins.system.logs_max_limit=50",
    )


@pytest.fixture
def api(system_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(system_settings), raise_server_exceptions=False) as client:
        client.headers.update(bearer(client))
        yield client


def test_info_from_a_pi_tree(api: TestClient) -> None:
    info = api.get("/api/v1/system/info").json()
    assert info["model"].startswith("Raspberry Pi 4 Model B")
    assert info["hostname"] and info["cpu_count"] == 4


def test_stats_answer_from_the_background_sample(api: TestClient) -> None:
    stats = api.get("/api/v1/system/stats").json()
    assert stats["temperatures"][0]["celsius"] == pytest.approx(48.692)
    assert stats["load"]["load1"] >= 0


def test_services_list_and_one(api: TestClient, fake_services: FakeServices) -> None:
    listing = {unit["name"]: unit for unit in api.get("/api/v1/system/services").json()}
    assert listing["ssh.service"]["active_state"] == "active"
    assert listing["ssh.service"]["main_pid"] == 612
    assert listing["ghost.service"]["load_state"] == "not-found"
    one = api.get("/api/v1/system/services/nginx.service")
    assert one.status_code == 200 and one.json()["active_state"] == "inactive"


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_control_an_allowed_unit(api: TestClient, fake_services: FakeServices, action: str) -> None:
    response = api.post(f"/api/v1/system/services/nginx.service/{action}")
    assert response.status_code == 200, response.text
    assert response.json()["action"] == action
    member = {"start": "StartUnit", "stop": "StopUnit", "restart": "RestartUnit"}[action]
    assert fake_services.systemd.called(member)


def test_control_needs_the_control_scope(api: TestClient, fake_services: FakeServices) -> None:
    response = api.post(
        "/api/v1/system/services/nginx.service/restart", headers=bearer(api, ["system:read"])
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "this needs the scope system:control"
    assert bus_calls(fake_services) == 0


@pytest.mark.parametrize(
    "unit",
    [
        "..%2F..%2Fetc%2Fpasswd.service",
        "ssh service",
        "ssh.service;reboot",
        "$(reboot).service",
        "ssh.service%0Areboot",
        "`id`.service",
        "a" * 300 + ".service",
        "ssh",
        "-ssh.service",
    ],
)
def test_bad_unit_names_are_refused_before_the_bus(
    api: TestClient, fake_services: FakeServices, unit: str
) -> None:
    for method, path in (
        ("GET", f"/api/v1/system/services/{unit}"),
        ("POST", f"/api/v1/system/services/{unit}/restart"),
    ):
        response = api.request(method, path)
        assert 400 <= response.status_code < 500, (unit, response.status_code)
        assert response.json()["error"]
    assert bus_calls(fake_services) == 0


def test_units_off_the_list_are_forbidden_and_nothing_is_sent(
    api: TestClient, fake_services: FakeServices
) -> None:
    response = api.post("/api/v1/system/services/reboot.target/start")
    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "detail": "unit reboot.target is not on the allowed-units list",
    }
    assert api.get("/api/v1/system/logs", params={"unit": "cron.service"}).status_code == 403
    assert bus_calls(fake_services) == 0


@pytest.mark.parametrize(("path", "action"), [("reboot", "reboot"), ("shutdown", "poweroff")])
def test_power_goes_through_logind(
    api: TestClient, fake_services: FakeServices, path: str, action: str
) -> None:
    now = api.post(f"/api/v1/system/power/{path}")
    assert now.status_code == 200 and now.json()["action"] == action
    before = time.time()
    later = api.post(f"/api/v1/system/power/{path}", json={"delay_s": 60})
    after = time.time()
    assert later.status_code == 200
    assert before + 60 <= later.json()["at"] <= after + 60
    assert fake_services.logind.scheduled


def test_power_needs_the_power_scope_and_bounded_delay(
    api: TestClient, fake_services: FakeServices
) -> None:
    control = bearer(api, ["system:control"])
    assert api.post("/api/v1/system/power/reboot", headers=control).status_code == 403
    assert api.post("/api/v1/system/power/reboot", json={"delay_s": -1}).status_code == 422
    assert api.post("/api/v1/system/power/reboot", json={"delay_s": 90000}).status_code == 422
    assert api.post("/api/v1/system/power/reboot", json={"delay_s": 3601}).status_code == 400
    assert bus_calls(fake_services) == 0


def test_time_and_timezone(api: TestClient, fake_services: FakeServices) -> None:
    current = api.get("/api/v1/system/time")
    assert current.status_code == 200 and "timezone" in current.json()
    changed = api.put("/api/v1/system/time/timezone", json={"timezone": "Europe/Berlin"})
    assert changed.status_code == 200 and changed.json()["timezone"] == "Europe/Berlin"


@pytest.mark.parametrize(
    "timezone", ["Mars/Olympus", "../../etc/passwd", "Europe/Berlin; reboot", "", "x" * 100]
)
def test_bad_timezones_are_refused(
    api: TestClient, fake_services: FakeServices, timezone: str
) -> None:
    response = api.put("/api/v1/system/time/timezone", json={"timezone": timezone})
    assert response.status_code == 422
    assert response.json()["error"] == "ValidationError"
    assert bus_calls(fake_services) == 0


def test_hostname(api: TestClient, fake_services: FakeServices) -> None:
    changed = api.put("/api/v1/system/hostname", json={"hostname": "wlanpi-7"})
    assert changed.status_code == 200 and changed.json()["static_hostname"] == "wlanpi-7"


@pytest.mark.parametrize(
    "hostname",
    ["-lead", "trail-", "under_score", "has space", "a;reboot", "x" * 65, "", "dot..dot", "é"],
)
def test_bad_hostnames_are_refused(
    api: TestClient, fake_services: FakeServices, hostname: str
) -> None:
    response = api.put("/api/v1/system/hostname", json={"hostname": hostname})
    assert response.status_code == 422
    assert bus_calls(fake_services) == 0


def test_while_a_daemon_hangs_other_requests_are_answered(
    settings_factory: Callable[..., Settings],
    fake_services_factory: Callable[..., FakeServices],
) -> None:
    services = fake_services_factory(unresponsive={"hostname1"})
    # A call timeout no test waits out: only the daemon's exit ends the hung request.
    patient = settings_factory(f"plugins.system.root={RPI}", "plugins.system.dbus_timeout_s=60")
    with TestClient(create_app(patient), raise_server_exceptions=False) as api:
        api.headers.update(bearer(api))
        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(api.put, "/api/v1/system/hostname", json={"hostname": "newname"})
            wait_for(lambda: bool(services.swallowed), HANG_GUARD_S, "hostnamed to get the call")
            info = api.get("/api/v1/system/info")
            assert not slow.done(), "GET info was answered while the PUT still waited"
            services.stop()
            answer = slow.result(timeout=HANG_GUARD_S)
    assert info.status_code == 200
    assert answer.status_code == 503
    assert answer.json()["error"] == "Unavailable"
    assert "hostnamed" in answer.json()["detail"]


def test_a_daemon_that_never_answers_is_a_503_once_the_timeout_has_passed(
    api: TestClient, fake_services: FakeServices
) -> None:
    fake_services.unresponsive.add("hostname1")
    answer = api.put("/api/v1/system/hostname", json={"hostname": "newname"})
    assert answer.status_code == 503
    assert answer.json() == {
        "error": "Unavailable",
        "detail": f"hostnamed did not answer within {TIMEOUT_S:g} s",
    }
    assert fake_services.swallowed == [("hostname1", "SetStaticHostname")]


def test_an_absent_daemon_is_a_503_naming_it(
    system_settings: Settings, fake_services_factory: Callable[..., FakeServices]
) -> None:
    fake_services_factory(absent={"timedate1"})
    with TestClient(create_app(system_settings), raise_server_exceptions=False) as api:
        api.headers.update(bearer(api))
        response = api.get("/api/v1/system/time")
    assert response.status_code == 503
    assert "timedated" in response.json()["detail"]


def test_logs_limit_and_filters_are_validated(api: TestClient) -> None:
    assert api.get("/api/v1/system/logs", params={"limit": 51}).status_code == 400
    assert api.get("/api/v1/system/logs", params={"priority": 8}).status_code == 422
    assert api.get("/api/v1/system/logs", params={"unit": "../x.service"}).status_code == 422
    response = api.get("/api/v1/system/logs", params={"unit": "ssh.service", "limit": 5})
    assert response.status_code in (200, 503)


def test_packages_from_the_dpkg_status_file(api: TestClient) -> None:
    packages = {p["name"]: p for p in api.get("/api/v1/system/packages").json()}
    assert packages["hostapd"]["installed"] is True and packages["hostapd"]["version"]
    assert packages["network-manager"]["installed"] is False


def test_on_this_machine_every_endpoint_is_200_or_a_clear_503(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The real root of this plain Debian machine, and no system bus at all."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    settings = settings_factory(f"plugins.system.dbus_timeout_s={TIMEOUT_S}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        api.headers.update(bearer(api))
        requests = [
            ("GET", "/api/v1/system/info", None),
            ("GET", "/api/v1/system/stats", None),
            ("GET", "/api/v1/system/services", None),
            ("GET", "/api/v1/system/services/ssh.service", None),
            ("POST", "/api/v1/system/services/ssh.service/restart", None),
            ("POST", "/api/v1/system/power/reboot", {"delay_s": 600}),
            ("GET", "/api/v1/system/time", None),
            ("PUT", "/api/v1/system/time/timezone", {"timezone": "UTC"}),
            ("GET", "/api/v1/system/hostname", None),
            ("PUT", "/api/v1/system/hostname", {"hostname": "testhost"}),
            ("GET", "/api/v1/system/logs", None),
            ("GET", "/api/v1/system/packages", None),
        ]
        for method, path, body in requests:
            response = api.request(method, path, json=body)
            assert response.status_code in (200, 503), (path, response.text)
            if response.status_code == 503:
                assert response.json()["error"] == "Unavailable" and response.json()["detail"]
                # What is missing says so at once: no request waits out a timeout.
                assert "did not answer" not in response.json()["detail"], path
        for path in ("/api/v1/system/info", "/api/v1/system/stats", "/api/v1/system/packages"):
            assert api.get(path).status_code == 200, path


# --- hostile input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "since",
    [
        "inf",
        "-inf",
        "nan",
        "infinity",
        "1e300",
        "253402300800",
        pytest.param("1" + "0" * 400, id="1e400-in-digits"),
    ],
)
def test_logs_since_must_be_a_finite_epoch_before_the_year_10000(
    api: TestClient, since: str
) -> None:
    response = api.get("/api/v1/system/logs", params={"since": since})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "since"]


@pytest.mark.parametrize("limit", ["100001", str(10**40)])
def test_logs_limit_is_bounded_in_the_schema(api: TestClient, limit: str) -> None:
    response = api.get("/api/v1/system/logs", params={"limit": limit})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize(
    "body", [{"delay_s": "60"}, {"delay_s": True}, {"delay_s": 60.0}, {"delay_s": None}]
)
def test_power_delay_must_be_a_json_integer_and_is_never_coerced(
    api: TestClient, fake_services: FakeServices, body: dict[str, object]
) -> None:
    response = api.post("/api/v1/system/power/reboot", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "delay_s"]
    assert bus_calls(fake_services) == 0


def test_a_refused_timezone_is_not_repeated_in_the_answer(
    api: TestClient, fake_services: FakeServices
) -> None:
    response = api.put("/api/v1/system/time/timezone", json={"timezone": "Mars/Olympus_Mons"})

    assert response.status_code == 422
    assert "Olympus" not in response.text
    assert response.json()["errors"][0]["msg"] == (
        "Value error, not a timezone in the zoneinfo database, such as Europe/Berlin"
    )


def test_a_daemons_error_text_never_reaches_the_client(
    api: TestClient, fake_services: FakeServices, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())  # as the logging configuration does
    fake_services.systemd.errors["StopUnit"] = (
        "org.freedesktop.systemd1.Weird",
        "internal detail /var/lib/secret",
    )

    response = api.post(
        "/api/v1/system/services/nginx.service/stop", headers={"X-Request-ID": "stop-1"}
    )

    assert response.status_code == 502
    assert response.json() == {
        "error": "DBusCallFailed",
        "detail": "systemd failed StopUnit: org.freedesktop.systemd1.Weird",
    }
    logged = [r for r in caplog.records if "internal detail /var/lib/secret" in r.getMessage()]
    assert [(r.levelname, r.request_id) for r in logged] == [("WARNING", "stop-1")]


def test_a_timezone_the_daemon_rejects_is_answered_by_the_error_name_only(
    api: TestClient, fake_services: FakeServices
) -> None:
    # A real zone that the fake timedated has not installed.
    response = api.put("/api/v1/system/time/timezone", json={"timezone": "Europe/Paris"})

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "timedated rejected SetTimezone: org.freedesktop.DBus.Error.InvalidArgs"
    )


def test_every_route_documents_the_422_body_hostcore_sends(api: TestClient) -> None:
    document = api.get("/api/v1/openapi.json").json()

    documented = {
        f"{method.upper()} {path}": operation["responses"]["422"]["content"]
        for path, operations in document["paths"].items()
        if path.startswith("/api/v1/system/")
        for method, operation in operations.items()
        if "422" in operation["responses"]
    }
    expected = {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/hostcore.ValidationErrorRead"}
        }
    }
    assert documented == dict.fromkeys(documented, expected)
    assert {"GET /api/v1/system/logs", "PUT /api/v1/system/hostname"} <= set(documented)
    assert "HTTPValidationError" not in document["components"]["schemas"]
