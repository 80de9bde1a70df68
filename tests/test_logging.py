from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.hookspecs import hookimpl
from hostcore.logging import configure_logging, log_files, request_id_var
from hostcore.security.deps import Public

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
        assert single[name]["class"] == "logging.handlers.RotatingFileHandler"
        assert shared[name]["class"] == "logging.handlers.WatchedFileHandler"
