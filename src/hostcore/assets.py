"""The docs pages' scripts and styles (Swagger UI, ReDoc): small on the wire, cached for good.

Swagger UI's bundle is 1.5 MB and ReDoc's 1.1 MB, which over a phone's link to a
device, or a Pi's Wi-Fi, is seconds per page. So:

- a client that accepts gzip gets each file gzip-compressed (to about a quarter),
  compressed once per process, in a thread, the first time it is asked for, and
  kept (about 0.7 MB in all); nothing is read before someone opens the docs, and a
  client that does not take gzip gets the file read again (every browser takes it);
- the pages name each file with the version of the bundles (``?v=…``), so a
  client keeps it for a year (``immutable``) and an upgrade changes the URL;
- ReDoc's bundle links one logo on a CDN: that URL is replaced by an empty image,
  so opening the docs sends nothing off the device.

Only the files found in the directory at start are served, by name: no path from
a request reaches the file system.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from pathlib import Path

from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from hostcore.errors import WS_POLICY_VIOLATION

CACHE_FOREVER = b"public, max-age=31536000, immutable"
# The kinds of file the docs pages load. (``mimetypes`` would read the system's table of
# a thousand types into every process to name these few.)
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".map": "application/json",
}
# What a bundle may fetch from elsewhere, and what it gets instead.
REMOTE_URLS = {b"https://cdn.redoc.ly/redoc/logo-mini.svg": b"data:image/svg+xml,%3Csvg/%3E"}


@dataclass
class _Asset:
    path: Path
    media_type: bytes
    gzipped: bytes | None = None
    compressing: asyncio.Future[bytes] | None = field(default=None, repr=False)

    def read(self) -> bytes:
        """The file as served: with every remote URL replaced. Blocking: use a thread."""
        body = self.path.read_bytes()
        for remote, local in REMOTE_URLS.items():
            body = body.replace(remote, local)
        return body

    def read_gzipped(self) -> bytes:
        return gzip.compress(self.read(), compresslevel=9, mtime=0)


class CompressedAssets:
    """An ASGI app serving the files of ``directory`` (GET and HEAD), gzip when accepted."""

    def __init__(self, directory: Path) -> None:
        self.assets: dict[str, _Asset] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file():
                media_type = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
                self.assets[path.name] = _Asset(path, media_type.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a websocket handshake: there is nothing to talk to
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            return
        # hostcore's handler answers these as every other 404 and 405 (JSON).
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD"})
        asset = self.assets.get(get_route_path(scope).removeprefix("/"))
        if asset is None:
            raise HTTPException(status_code=404)
        headers = [(b"content-type", asset.media_type)]
        if _accepts_gzip(scope):
            body = await self._gzipped(asset)
            headers.append((b"content-encoding", b"gzip"))
        else:
            body = await asyncio.to_thread(asset.read)
        headers += [
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", CACHE_FOREVER),
            (b"vary", b"accept-encoding"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _gzipped(self, asset: _Asset) -> bytes:
        if asset.gzipped is not None:
            return asset.gzipped
        if asset.compressing is None:  # one compression, however many ask meanwhile
            asset.compressing = asyncio.ensure_future(asyncio.to_thread(asset.read_gzipped))
        try:
            asset.gzipped = await asyncio.shield(asset.compressing)
        except OSError:
            asset.compressing = None  # the next request tries again
            raise
        return asset.gzipped


def _accepts_gzip(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            for coding in value.lower().split(b","):
                token, _, params = coding.strip().partition(b";")
                if token.strip() in (b"gzip", b"*") and params.replace(b" ", b"") not in (
                    b"q=0",
                    b"q=0.0",
                    b"q=0.00",
                    b"q=0.000",
                ):
                    return True
    return False
