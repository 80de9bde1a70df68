"""The docs pages' assets: gzip when accepted, cached for good, nothing fetched off the device."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostcore import assets as assets_module
from hostcore.assets import CompressedAssets
from hostcore.meta import asset_url, docs_assets_dir
from tests.helpers import AppFactory, ClientFor, assert_error

CSS = "/static/docs/swagger-ui.css"


@pytest.fixture
def client(app_factory: AppFactory, client_for: ClientFor) -> TestClient:
    return client_for(app_factory())


def on_disk(name: str) -> bytes:
    return (docs_assets_dir() / name).read_bytes()


def test_a_client_that_takes_gzip_gets_the_file_compressed_and_cached_for_good(
    client: TestClient,
) -> None:
    answer = client.get(CSS, headers={"Accept-Encoding": "gzip, deflate"})
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert answer.headers["vary"] == "accept-encoding"
    assert answer.headers["content-type"].startswith("text/css")
    assert int(answer.headers["content-length"]) < len(on_disk("swagger-ui.css")) / 3
    assert answer.content == on_disk("swagger-ui.css")  # httpx decodes it


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br", ""])
def test_a_client_that_does_not_take_gzip_gets_the_file_as_it_is(
    client: TestClient, accept: str
) -> None:
    answer = client.get(CSS, headers={"Accept-Encoding": accept})
    assert "content-encoding" not in answer.headers
    assert answer.content == on_disk("swagger-ui.css")


def test_head_answers_the_headers_without_the_body(client: TestClient) -> None:
    answer = client.head(CSS, headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.content == b""
    assert int(answer.headers["content-length"]) > 0


def test_only_the_files_found_at_start_are_served_by_name(client: TestClient) -> None:
    for path in ("/static/docs/nothing.js", "/static/docs/../hostcore.toml", "/static/docs/"):
        assert_error(client.get(path), 404, "NotFound", "")
    refused = client.post(CSS)
    assert_error(refused, 405, "MethodNotAllowed", "")
    assert refused.headers["allow"] == "GET, HEAD"


def test_redoc_fetches_nothing_from_outside_the_device(client: TestClient) -> None:
    bundle = client.get("/static/docs/redoc.standalone.js", headers={"Accept-Encoding": "gzip"})
    assert b"cdn.redoc.ly" in on_disk("redoc.standalone.js"), "the fixture still has the URL"
    assert b"cdn.redoc.ly" not in bundle.content


def test_the_pages_name_assets_with_the_bundles_version(client: TestClient) -> None:
    page = client.get("/docs").text
    assert asset_url("swagger-ui-bundle.js") in page and "?v=" in page


async def test_concurrent_first_requests_compress_once(monkeypatch: pytest.MonkeyPatch) -> None:
    app = CompressedAssets(docs_assets_dir())
    compressed = 0
    real = gzip.compress

    def counted(*args: Any, **kwargs: Any) -> bytes:
        nonlocal compressed
        compressed += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(assets_module.gzip, "compress", counted)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/static/docs/favicon.png",
        "root_path": "/static/docs",
        "headers": [(b"accept-encoding", b"gzip")],
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    await asyncio.gather(*(app(dict(scope), receive, send) for _ in range(4)))
    assert compressed == 1
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 4 and gzip.decompress(bodies[0]) == on_disk("favicon.png")


def test_nothing_is_read_before_someone_opens_the_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.js").write_bytes(b"x" * 100)
    read: list[Path] = []
    real = Path.read_bytes

    def counted(path: Path) -> bytes:
        read.append(path)
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    CompressedAssets(tmp_path)
    assert read == []


def test_a_websocket_to_the_assets_is_closed(client: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(CSS):
        pass
    assert closed.value.code == 1008


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("redoc.standalone.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("favicon.png", "image/png"),
    ],
)
def test_each_asset_says_what_it_is(client: TestClient, name: str, media_type: str) -> None:
    answer = client.head(f"/static/docs/{name}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == media_type
