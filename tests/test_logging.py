from __future__ import annotations

import importlib
import logging
import logging.handlers
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.hookspecs import hookimpl
from hostcore.logging import configure_logging, log_files, redact, request_id_var
from hostcore.redaction import REDACTED
from hostcore.security.deps import Public
from tests.helpers import ServerThread

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) +\[(?P<pid>\d+)\] "
    r"(?P<logger>\S+) \[(?P<request_id>[^\]]+)\] (?P<message>.*)$"
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers, root.level = saved
    logging.captureWarnings(False)


def lines(path: Path) -> list[re.Match[str]]:
    parsed = [LINE.match(line) for line in path.read_text().splitlines()]
    assert all(parsed), f"a line of {path} is not in the hostcore format"
    return [match for match in parsed if match]


def test_three_sinks_with_their_levels(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings, debug=False)
    log = logging.getLogger("hostcore.test")
    log.debug("a debug detail")
    log.info("an info event")
    app_log, debug_log = log_files(settings)
    assert [m["message"] for m in lines(app_log)] == ["an info event"]
    assert [m["message"] for m in lines(debug_log)] == ["a debug detail", "an info event"]
    console = capsys.readouterr().err
    assert "an info event" in console and "a debug detail" not in console


def test_debug_flag_sends_debug_to_the_console(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings, debug=True)
    logging.getLogger("hostcore.test").debug("now visible")
    assert "now visible" in capsys.readouterr().err
    app_log, _ = log_files(settings)
    assert "now visible" not in app_log.read_text()


def test_log_directory_is_a_setting(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(f"log_dir={tmp_path / 'elsewhere'}")
    configure_logging(settings)
    logging.getLogger("hostcore.test").info("here")
    assert (tmp_path / "elsewhere" / "app.log").read_text().count("here") == 1
    assert (tmp_path / "elsewhere" / "debug" / "debug.log").is_file()


def test_request_id_is_on_every_line_of_a_request(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., FastAPI]
) -> None:
    class Chatty:
        @hookimpl
        def hostcore_routes(self) -> APIRouter:
            router = APIRouter(dependencies=[Public])
            log = logging.getLogger("chatty")

            @router.get("/talk")
            async def talk() -> dict[str, bool]:
                log.info("working on it")
                log.debug("details")
                return {"ok": True}

            return router

    settings = settings_factory("logging.access_log=true")
    configure_logging(settings)
    with TestClient(app_factory({"chatty": Chatty()}, app_settings=settings)) as client:
        client.get("/api/v1/chatty/talk", headers={"X-Request-ID": "req-7"})
        client.get("/api/v1/chatty/talk")
    app_log, debug_log = log_files(settings)
    ours = [m for m in lines(debug_log) if m["request_id"] == "req-7"]
    assert [(m["logger"], m["message"]) for m in ours][:2] == [
        ("chatty", "working on it"),
        ("chatty", "details"),
    ]
    access = [m for m in lines(app_log) if m["logger"] == "hostcore.access"]
    assert re.fullmatch(r"GET /api/v1/chatty/talk 200 [\d.]+ms", access[0]["message"])
    assert access[0]["request_id"] == "req-7"
    assert re.fullmatch(r"[0-9a-f]{32}", access[1]["request_id"])
    startup = [m for m in lines(app_log) if "ready" in m["message"]]
    assert startup and startup[0]["request_id"] == "-"


def test_query_strings_never_reach_the_access_log(
    settings: Settings, app_factory: Callable[..., FastAPI]
) -> None:
    configure_logging(settings)
    with TestClient(app_factory()) as client:
        client.get("/api/v1/health?token=hunter2")
    for path in log_files(settings):
        assert "hunter2" not in path.read_text()


def test_request_id_defaults_to_dash() -> None:
    assert request_id_var.get() == "-"


def test_only_a_single_process_rotates_in_process(settings: Settings) -> None:
    from hostcore.logging import logging_config

    single = logging_config(settings, debug=False, rotate=True)["handlers"]
    shared = logging_config(settings, debug=False, rotate=False)["handlers"]
    for name in ("app", "debug"):
        assert issubclass(handler_class(single[name]), logging.handlers.RotatingFileHandler)
        assert issubclass(handler_class(shared[name]), logging.handlers.WatchedFileHandler)


def handler_class(handler: dict[str, Any]) -> type[logging.Handler]:
    module, _, name = handler["class"].rpartition(".")
    found: type[logging.Handler] = getattr(importlib.import_module(module), name)
    return found


def test_control_characters_a_client_sends_are_escaped_in_the_access_log(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., FastAPI]
) -> None:
    settings = settings_factory("logging.access_log=true")
    configure_logging(settings)
    forged = "2030-01-01 00:00:00,000 INFO    [1] hostcore.access [x] GET / 200 0.1ms"
    with TestClient(app_factory(app_settings=settings)) as client:
        client.get(f"/nowhere%0D%0A{forged.replace(' ', '%20')}%00%1B[2J")
    app_log, debug_log = log_files(settings)
    for path in (app_log, debug_log):
        access = [m for m in lines(path) if m["logger"] == "hostcore.access"]
        assert len(access) == 1, "one request, one line"
        assert access[0]["message"].startswith(rf"GET /nowhere\r\n{forged}\x00\x1b[2J ")


def test_a_traceback_still_renders_with_its_lines_indented(settings: Settings) -> None:
    configure_logging(settings)
    try:
        raise ValueError("bad input\n2030-01-01 00:00:00,000 INFO    [1] forged [x] line")
    except ValueError:
        logging.getLogger("hostcore.test").exception("it failed")
    app_log, _ = log_files(settings)
    text = app_log.read_text()
    record = text[text.index("it failed") :].splitlines()
    assert record[1] == "  Traceback (most recent call last):"
    assert any(line.startswith("    File ") for line in record)
    assert record[-2:] == [
        "  ValueError: bad input",
        "  2030-01-01 00:00:00,000 INFO    [1] forged [x] line",
    ]
    assert all(line.startswith("  ") for line in record[1:])


JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjbGllbnQ6cGFuZWwifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@pytest.mark.parametrize(
    ("message", "args", "secret"),
    [
        ("< %s: %s", ("Authorization", "Bearer opaque-token-1"), "opaque-token-1"),
        ("< %s: %s", ("Cookie", "session=cookie-value-2"), "cookie-value-2"),
        ("< %s: %s", ("X-Hostcore-Signature", "ab12cd34ef"), "ab12cd34ef"),
        ("headers %s", ({"authorization": "Basic dXNlcjpwYXNz"},), "dXNlcjpwYXNz"),
        ('%s - "WebSocket %s" [accepted]', ("1.2.3.4:5", "/ws?access_token=qtoken-3"), "qtoken-3"),
        ("token %s", (JWT,), JWT.split(".")[2]),
    ],
)
def test_credentials_never_reach_a_log_at_any_level(
    settings: Settings, message: str, args: tuple[object, ...], secret: str
) -> None:
    configure_logging(settings, debug=True)
    for level in (logging.DEBUG, logging.INFO, logging.ERROR):
        logging.getLogger("uvicorn.error").log(level, message, *args)
    for path in log_files(settings):
        text = path.read_text()
        assert "********" in text
        assert secret not in text


@pytest.mark.parametrize(
    "name",
    [
        "access_token",
        "client_secret",
        "password",
        "PASSWORD",
        "db_passwd",
        "pwd",
        "X-Api-Key",
        "refresh-token",
        "upload_signature",
        "client%5Fsecret",
    ],
)
@pytest.mark.parametrize(
    "text",
    [
        "GET https://idp.example/callback?state=abc&{name}=hunter2&page=2 failed",
        '"WebSocket /api/v1/feed?state=abc;{name}=hunter2#top" [accepted]',
    ],
    ids=["in a URL", "in a path and query"],
)
def test_a_query_parameter_named_for_a_credential_is_redacted(name: str, text: str) -> None:
    line = text.format(name=name)
    assert redact(line) == line.replace("hunter2", REDACTED)


def test_a_percent_encoded_credential_name_is_redacted_without_a_scheme_too() -> None:
    assert "hunter2" not in redact("https://h/ws?pass%77ord=hunter2")
    assert "hunter2" not in redact('"WebSocket /ws?pass%77ord=hunter2" [accepted]')


def test_a_lone_surrogate_is_escaped_so_every_sink_writes_the_line(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file name read with surrogateescape, say: no UTF-8 file can hold it as it is."""
    configure_logging(settings)
    log = logging.getLogger("hostcore.test")
    log.warning("mount %s is full", "/caf\udce9")
    try:
        raise ValueError("bad name \ud800")
    except ValueError:
        log.exception("listing %s failed", "/m\udfff")
    console = capsys.readouterr().err
    assert "Logging error" not in console, console
    for text in (console, *(path.read_bytes().decode() for path in log_files(settings))):
        assert r"mount /caf\udce9 is full" in text
        assert r"listing /m\udfff failed" in text
        assert r"  ValueError: bad name \ud800" in text


def test_websocket_handshake_headers_never_reach_the_debug_log(settings: Settings) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket
    from websockets.sync.client import connect

    async def hello(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("secret-frame-payload")
        await websocket.close()

    configure_logging(settings, debug=True)
    app = Starlette(routes=[WebSocketRoute("/ws", hello)])
    with ServerThread(app) as server:
        host, port = server.address
        with connect(
            f"ws://{host}:{port}/ws?token=query-secret-4",
            additional_headers={"Authorization": "Bearer header-secret-5"},
        ) as websocket:
            assert websocket.recv(timeout=10) == "secret-frame-payload"
    _, debug_log = log_files(settings)
    text = debug_log.read_text()
    assert '"WebSocket /ws?token=********" [accepted]' in text
    for secret in ("header-secret-5", "query-secret-4", "secret-frame-payload"):
        assert secret not in text


def test_log_files_are_private_when_created_reopened_and_rotated(
    settings_factory: Callable[..., Settings],
) -> None:
    import os
    import stat

    settings = settings_factory("logging.max_bytes=200", "logging.backup_count=2")
    previous = os.umask(0o022)
    try:
        configure_logging(settings)
        for n in range(20):
            logging.getLogger("hostcore.test").info("line %d, long enough to rotate soon", n)
    finally:
        os.umask(previous)
    created = sorted(path for path in settings.log_dir.rglob("*"))
    assert settings.log_dir / "app.log.1" in created, "the files rotated"
    for path in created:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
