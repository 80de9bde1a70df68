"""A client for local tools that signs every request with its client's HMAC secret.

``hostcore call`` and other tools use it so nobody hand-rolls signatures. It
signs the request httpx2 has built, so the signed path and query are the
bytes that go over the wire, whatever encoding httpx2 applied.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import httpx2

from hostcore.config import Settings
from hostcore.security import hmac as signing

DEFAULT_TIMEOUT_S = 10.0
UDS_BASE_URL = "http://hostcore"
# A server listening on every address is reached on loopback.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104

Params = Mapping[str, str] | Sequence[tuple[str, str]]


class HostcoreClient:
    """Signed requests to one hostcore server over TCP (``base_url``) or a unix socket (``uds``)."""

    def __init__(
        self,
        *,
        client: str,
        secret: bytes,
        base_url: str | None = None,
        uds: Path | str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not signing.CLIENT_PATTERN.match(client):
            raise ValueError(f"invalid client name {client!r}")
        if uds is not None and base_url is None:
            transport = httpx2.HTTPTransport(uds=str(uds))
            self._http = httpx2.Client(base_url=UDS_BASE_URL, transport=transport, timeout=timeout)
            self.address: str = f"unix socket {uds}"  # where requests go, for messages
        elif base_url is not None and uds is None:
            self._http = httpx2.Client(base_url=base_url, timeout=timeout)
            self.address = base_url
        else:
            raise ValueError("give exactly one of base_url and uds")
        self.client = client
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings, client: str) -> Self:
        """A client for the configured server, signing with ``client``'s secret file.

        That is the file ``settings.hmac_secret_path(client)`` names (its own
        ``secret_file``, ``<data_dir>/secrets/<client>.secret``, or the shared
        secret when it opted in); the unix socket when ``server.uds`` is set,
        else host and port.
        """
        if not signing.CLIENT_PATTERN.match(client):
            raise ValueError(f"invalid client name {client!r}")
        secret = signing.read_secret(settings.hmac_secret_path(client))
        server = settings.server
        if server.uds is not None:
            return cls(client=client, secret=secret, uds=server.uds)
        host = _WILDCARD_HOSTS.get(server.host, server.host)
        if ":" in host:
            host = f"[{host}]"
        return cls(client=client, secret=secret, base_url=f"http://{host}:{server.port}")

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
    ) -> httpx2.Response:
        """Send one signed request; ``path`` is absolute (``/system``) and may hold a query."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        body = b"" if json is None else _json_bytes(json)
        headers = {"content-type": "application/json"} if json is not None else {}
        target = path
        if params:
            target += ("&" if "?" in path else "?") + urlencode(params)
        request = self._http.build_request(method, target, content=body, headers=headers)
        # Sign what will be sent: the URL as httpx2 encoded it, not what we asked for.
        raw_path, _, raw_query = request.url.raw_path.partition(b"?")
        request.headers.update(
            signing.signed_headers(
                self._secret,
                method=request.method,
                path=raw_path.decode("ascii"),
                query=raw_query.decode("latin-1"),
                client=self.client,
                body=body,
            )
        )
        return self._http.send(request)

    def get(self, path: str, *, params: Params | None = None) -> httpx2.Response:
        return self.request("GET", path, params=params)

    def delete(self, path: str, *, params: Params | None = None) -> httpx2.Response:
        return self.request("DELETE", path, params=params)

    def post(self, path: str, *, params: Params | None = None, json: Any = None) -> httpx2.Response:
        return self.request("POST", path, params=params, json=json)

    def put(self, path: str, *, params: Params | None = None, json: Any = None) -> httpx2.Response:
        return self.request("PUT", path, params=params, json=json)

    def patch(
        self, path: str, *, params: Params | None = None, json: Any = None
    ) -> httpx2.Response:
        return self.request("PATCH", path, params=params, json=json)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, serialized once so the signed bytes are the sent bytes."""
    return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
