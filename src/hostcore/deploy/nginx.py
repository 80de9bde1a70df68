"""The nginx site in front of hostcore's unix socket.

- TLS on 443 (HTTP/2), and port 80 only redirects to it. The certificate is the one
  given (``--cert``/``--key``), else a self-signed one made on the first ``--write``
  (:mod:`hostcore.deploy.tls`).
- Every request goes to the socket with ``X-Forwarded-For`` set to the peer nginx
  saw (nginx is the edge: a client's own header is dropped, not extended) and
  ``X-Forwarded-Proto``; hostcore believes them only from nginx's workers, by the
  kernel's credentials of the socket's peer (``server.trusted_proxies``).
- ``/api/v1/ws`` is upgraded to a websocket, ``/api/v1/events`` (SSE) is not
  buffered; both may stay open for an hour between two messages.
- A body larger than ``server.max_body_bytes`` is refused by nginx (413) as hostcore
  would, before it is sent on; nginx waits for headers and body as long as hostcore.
- The access log holds no credential: no request body, no ``Authorization`` or
  cookie, no query string (``$uri``, not ``$request``) and no referrer (either may
  carry a token). ``$request_id`` is the ``X-Request-ID`` hostcore logs, so one
  request is found in both logs.
"""

from __future__ import annotations

import math
from pathlib import Path

from hostcore.config import Settings
from hostcore.deploy.model import (
    SERVICE_NAME,
    UPSTREAM_KEEPALIVE,
    UPSTREAM_MAX_CONNECTIONS,
    Deployment,
    Target,
    deployment,
)

SITE_FILE = Path(f"/etc/nginx/sites-available/{SERVICE_NAME}")
ENABLED_LINK = Path(f"/etc/nginx/sites-enabled/{SERVICE_NAME}")
LOG_FORMAT = "hostcore_private"
STREAM_TIMEOUT_S = 3600
WEBSOCKET_PATH = "/api/v1/ws"
EVENTS_PATH = "/api/v1/events"


def render_nginx(settings: Settings, target: Target | None = None) -> dict[Path, str]:
    """The site, for ``sites-available`` (enable it with a link in ``sites-enabled``)."""
    return {SITE_FILE: site(deployment(settings, target))}


def _seconds(value: float) -> str:
    return f"{math.ceil(value)}s"


def _proxy_headers(*, upgrade: bool) -> list[str]:
    connection = "$hostcore_connection" if upgrade else '""'
    lines = [
        "proxy_pass http://hostcore;",
        "proxy_http_version 1.1;",
        # "" keeps the upstream connection alive for the next request.
        f"proxy_set_header Connection {connection};",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Request-ID $request_id;",
    ]
    if upgrade:
        lines.append("proxy_set_header Upgrade $http_upgrade;")
    return lines


def _block(head: str, body: list[str], indent: str = "    ") -> list[str]:
    return [f"{indent}{head} {{", *(f"{indent}    {line}" for line in body), f"{indent}}}"]


def site(deploy: Deployment) -> str:
    server = deploy.settings.server
    target = deploy.target
    stream = _seconds(STREAM_TIMEOUT_S)
    lines = [
        "# hostcore behind nginx, rendered by `hostcore deploy nginx` from the effective",
        f"# configuration. hostcore's side: the socket below, its group {deploy.socket_group}, and",
        f"# server.trusted_proxies = {list(deploy.trusted_proxies)!r} (nginx's workers,",
        "# by the socket peer's credentials): set by hostcore.service or hostcore.toml.",
        "",
        "upstream hostcore {",
        "    zone hostcore 64k;",
        f"    server unix:{deploy.socket} max_conns={UPSTREAM_MAX_CONNECTIONS};",
        f"    keepalive {UPSTREAM_KEEPALIVE};",
        # Below hostcore's own idle timeout: nginx must never reuse a connection hostcore
        # is closing (a request sent into that close is lost).
        f"    keepalive_timeout {max(1, server.keepalive_timeout_s - 1)}s;",
        "}",
        "",
        "map $http_upgrade $hostcore_connection {",
        "    default upgrade;",
        "    '' close;",
        "}",
        "",
        "# No body, no Authorization or cookie, no query string, no referrer: none reaches",
        "# this log. $request_id is the X-Request-ID hostcore logs.",
        f"log_format {LOG_FORMAT} escape=default",
        "    '$remote_addr [$time_local] \"$request_method $uri $server_protocol\" '",
        "    '$status $body_bytes_sent $request_time $request_id \"$http_user_agent\"';",
        "",
        "server {",
        "    listen 80;",
        "    listen [::]:80;",
        f"    server_name {target.server_name};",
        "    server_tokens off;",
        f"    access_log {target.access_log} {LOG_FORMAT} buffer=32k flush=5s;",
        "    return 301 https://$host$request_uri;",
        "}",
        "",
        "server {",
        "    listen 443 ssl http2;",
        "    listen [::]:443 ssl http2;",
        f"    server_name {target.server_name};",
        "    server_tokens off;",
        f"    access_log {target.access_log} {LOG_FORMAT} buffer=32k flush=5s;",
        "",
        f"    ssl_certificate {target.cert};",
        f"    ssl_certificate_key {target.key};",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_prefer_server_ciphers off;",
        # TLS 1.2 with forward secrecy and AEAD only (TLS 1.3's suites are all such).
        "    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;",
        "    ssl_session_cache shared:hostcore_tls:1m;",
        "    ssl_session_timeout 1d;",
        "    ssl_session_tickets off;",
        "",
        "    # No location adds headers of its own, so these reach every answer.",
        "    add_header X-Content-Type-Options nosniff always;",
        "    add_header X-Frame-Options DENY always;",
        "    add_header Referrer-Policy no-referrer always;",
        "",
        "    # As hostcore: larger bodies get 413; slower headers and bodies get 408.",
        f"    client_max_body_size {server.max_body_bytes};",
        f"    client_header_timeout {_seconds(server.header_timeout_s)};",
        f"    client_body_timeout {_seconds(server.body_timeout_s)};",
        "",
        *_block("location /", _proxy_headers(upgrade=False)),
        "",
        *_block(
            f"location = {WEBSOCKET_PATH}",
            [
                *_proxy_headers(upgrade=True),
                f"proxy_read_timeout {stream};",
                f"proxy_send_timeout {stream};",
            ],
        ),
        "",
        *_block(
            f"location = {EVENTS_PATH}",
            [
                *_proxy_headers(upgrade=False),
                "# Server-Sent Events: each event leaves as soon as hostcore sends it.",
                "proxy_buffering off;",
                "proxy_cache off;",
                f"proxy_read_timeout {stream};",
            ],
        ),
        "}",
    ]
    return "\n".join(lines) + "\n"
