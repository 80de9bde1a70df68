"""The rendered files, each checked by the tool that reads it in production."""

from __future__ import annotations

import json
import pwd
import re
from pathlib import Path

import pytest

from hostcore.config import SYSTEM_CONFIG, build_settings, read_toml
from hostcore.context import PEER_EXTENSION, Peer, peer_extension
from hostcore.deploy.logrotate import DEBUG_LOGROTATE_FILE, LOGROTATE_FILE, render_logrotate
from hostcore.deploy.model import UPSTREAM_KEEPALIVE, UPSTREAM_MAX_CONNECTIONS, Target, deployment
from hostcore.deploy.nginx import SITE_FILE, render_nginx
from hostcore.deploy.polkit import RULES_FILE, render_polkit
from hostcore.deploy.systemd import (
    SERVICE_UNIT,
    SYSUSERS_FILE,
    TMPFILES_FILE,
    escape_path,
    render_systemd,
)
from hostcore.deploy.tls import self_signed
from hostcore.security.proxies import ProxyResolver
from tests.deploy.tools import require, run, settings, write_tree

UNIT_SUFFIXES = (".service", ".mount", ".timer")
NO_GROUPS = Target(group_exists=lambda _name: False)


def unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


# --- nginx -------------------------------------------------------------------------------

NGINX_CONF = """\
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {site};
}}
"""


def nginx_target(tmp_path: Path) -> Target:
    cert, key = self_signed("device")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    return Target(
        cert=tmp_path / "cert.pem", key=tmp_path / "key.pem", access_log=tmp_path / "access.log"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("server.workers=4", "server.max_body_bytes=5000000", "server.header_timeout_s=2.5"),
        ("server.uds=/run/elsewhere/api.sock", "server.uds_group=nginx"),
    ],
    ids=["defaults", "tuned", "own-socket"],
)
def test_every_rendered_site_passes_nginx_t(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    require("nginx")
    target = nginx_target(tmp_path)
    site = tmp_path / "site.conf"
    site.write_text(render_nginx(settings(*overrides), target)[SITE_FILE])
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path, site=site))
    result = run(["nginx", "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "e")])
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_body_limit_is_hostcores() -> None:
    site = render_nginx(settings("server.max_body_bytes=123456"))[SITE_FILE]
    assert re.findall(r"client_max_body_size (\S+);", site) == ["123456"]


def test_the_access_log_holds_no_body_credential_query_or_referrer() -> None:
    site = render_nginx(settings())[SITE_FILE]
    log_format = site.split("log_format", 1)[1].split(";", 1)[0]
    variables = set(re.findall(r"\$[a-z_]+", log_format))
    assert "$uri" in variables and "$request_id" in variables
    forbidden = {
        "$request",  # the request line, query string included
        "$request_uri",
        "$args",
        "$query_string",
        "$request_body",
        "$http_authorization",
        "$http_cookie",
        "$http_referer",
    }
    assert not variables & forbidden
    assert "server_tokens off;" in site


def _location(site: str, path: str) -> str:
    return site.split(f"location = {path} {{", 1)[1].split("}", 1)[0]


def test_the_websocket_is_upgraded_and_events_are_not_buffered() -> None:
    site = render_nginx(settings())[SITE_FILE]
    websocket = _location(site, "/api/v1/ws")
    assert "proxy_set_header Upgrade $http_upgrade;" in websocket
    assert "proxy_set_header Connection $hostcore_connection;" in websocket
    events = _location(site, "/api/v1/events")
    assert "proxy_buffering off;" in events
    assert "Upgrade" not in events
    for block in (websocket, events):
        assert "proxy_read_timeout 3600s;" in block
    # Each location sets every header itself: nginx inherits none once one is set.
    for block in (websocket, events, site.split("location / {", 1)[1].split("}", 1)[0]):
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in block
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in block


def test_port_80_only_redirects_to_https() -> None:
    site = render_nginx(settings())[SITE_FILE]
    plain = site.split("listen 80;", 1)[1].split("}", 1)[0]
    assert "return 301 https://$host$request_uri;" in plain
    assert "proxy_pass" not in plain


def test_the_site_proxies_to_the_socket_the_service_listens_on() -> None:
    deploy = deployment(settings())
    site = render_nginx(settings())[SITE_FILE]
    unit = render_systemd(settings())[SERVICE_UNIT]
    assert f"server unix:{deploy.socket} max_conns={UPSTREAM_MAX_CONNECTIONS};" in site
    assert f"Environment=HOSTCORE_SERVER__UDS={deploy.socket}" in unit
    assert deploy.socket == Path("/run/hostcore/hostcore.sock")


def _scope(peer: Peer, forwarded: str) -> dict[str, object]:
    return {
        "type": "http",
        "client": None,
        "headers": [(b"x-forwarded-for", forwarded.encode())],
        "extensions": {PEER_EXTENSION: peer_extension(peer)},
    }


def test_forwarded_addresses_are_believed_from_nginx_workers_only() -> None:
    """The trusted_proxies the unit renders, read by hostcore's own resolver."""
    deploy = deployment(settings())
    assert deploy.trusted_proxies == ("user:www-data",)
    resolver = ProxyResolver(list(deploy.trusted_proxies))
    nginx = pwd.getpwnam("www-data")
    assert resolver.caller(_scope(Peer(1, nginx.pw_uid, nginx.pw_gid), "203.0.113.7")) == (
        "203.0.113.7",
        False,
    )
    stranger = Peer(2, nginx.pw_uid + 1, nginx.pw_gid)  # in nginx's group, not nginx
    assert resolver.caller(_scope(stranger, "203.0.113.7")) == ("unix", True)


# --- systemd -----------------------------------------------------------------------------


def verify_units(tmp_path: Path, files: dict[Path, str]) -> None:
    placed = write_tree(tmp_path, files)
    units = [str(p) for path, p in placed.items() if path.suffix in UNIT_SUFFIXES]
    result = run(["systemd-analyze", "verify", *units])
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not ours, result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("server.workers=3", "plugins.enabled=auth,system"),
        ("data_dir=/srv/hostcore", "log_dir=/srv/hostcore-log", "run_dir=/run/hostcore-api"),
    ],
    ids=["defaults", "system-only", "own-directories"],
)
def test_the_rendered_units_pass_systemd_analyze_verify(
    tmp_path: Path, overrides: tuple[str, ...]
) -> None:
    require("systemd-analyze")
    verify_units(tmp_path, render_systemd(settings(*overrides)))


def test_the_debug_logs_timer_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require("systemd-analyze")
    verify_units(tmp_path, render_logrotate(settings("server.workers=2")))


def test_the_sysusers_snippet_passes_a_dry_run(tmp_path: Path) -> None:
    require("systemd-sysusers")
    snippet = write_tree(tmp_path, render_systemd(settings()))[SYSUSERS_FILE]
    (tmp_path / "root" / "etc").mkdir(parents=True)
    result = run(["systemd-sysusers", f"--root={tmp_path / 'root'}", "--dry-run", str(snippet)])
    assert result.returncode == 0, result.stderr
    assert "Creating user 'hostcore'" in result.stderr


def test_the_mount_units_name_is_systemds_escaping_of_its_path() -> None:
    require("systemd-escape")
    for path in ("/var/log/hostcore/debug", "/srv/my-logs/host.core/debug", "/var/log/ü x"):
        result = run(["systemd-escape", "--path", path])
        assert escape_path(Path(path)) == result.stdout.strip()


@pytest.mark.parametrize(
    ("enabled", "capabilities"),
    [
        ("auth,system,bluetooth", ""),
        ("auth,system,network", "CAP_NET_ADMIN"),
        ("auth,wifi", "CAP_NET_ADMIN"),
    ],
)
def test_capabilities_only_for_the_network_and_wifi_plugins(
    enabled: str, capabilities: str
) -> None:
    unit = render_systemd(settings(f"plugins.enabled={enabled}"))[SERVICE_UNIT]
    assert unit_values(unit, "CapabilityBoundingSet") == [capabilities]
    assert unit_values(unit, "AmbientCapabilities") == [capabilities]


def test_groups_follow_the_enabled_plugins() -> None:
    def groups(enabled: str, target: Target = NO_GROUPS) -> list[str]:
        unit = render_systemd(settings(f"plugins.enabled={enabled}"), target)[SERVICE_UNIT]
        return unit_values(unit, "SupplementaryGroups")[0].split()

    assert groups("auth") == ["www-data"]
    assert groups("auth,system") == ["www-data", "systemd-journal"]
    assert groups("auth,wifi,bluetooth") == ["www-data", "netdev"]
    assert groups("auth,network") == ["www-data"]
    assert groups("auth,network", Target(group_exists=lambda g: g == "_lldpd")) == [
        "www-data",
        "_lldpd",
    ]


def test_every_group_the_unit_names_is_made_by_sysusers() -> None:
    files = render_systemd(settings())
    named = unit_values(files[SERVICE_UNIT], "SupplementaryGroups")[0].split()
    made = [line.split()[1] for line in files[SYSUSERS_FILE].splitlines() if line[:2] == "g "]
    assert named == made


def test_the_unit_gives_hostcore_the_production_directories_and_socket() -> None:
    unit = render_systemd(settings())[SERVICE_UNIT]
    assert unit_values(unit, "Environment") == [
        "HOSTCORE_DATA_DIR=/var/lib/hostcore",
        "HOSTCORE_LOG_DIR=/var/log/hostcore",
        "HOSTCORE_RUN_DIR=/run/hostcore",
        "HOSTCORE_SERVER__UDS=/run/hostcore/hostcore.sock",
        "HOSTCORE_SERVER__UDS_GROUP=www-data",
        "HOSTCORE_SERVER__TRUSTED_PROXIES=user:www-data",
    ]
    assert unit_values(unit, "StateDirectory") == ["hostcore"]
    assert unit_values(unit, "LogsDirectory") == ["hostcore hostcore/debug"]
    assert unit_values(unit, "RuntimeDirectory") == ["hostcore"]
    assert unit_values(unit, "RuntimeDirectoryMode") == ["0710"]
    assert unit_values(unit, "Type") == ["exec"]
    assert unit_values(unit, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert "ReadWritePaths" not in unit
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "Restart=on-failure"):  # fmt: skip
        assert line in unit.splitlines()
    assert unit_values(unit, "RestrictAddressFamilies") == [
        "AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_BLUETOOTH"
    ]


def test_what_etc_hostcore_toml_says_stays_there(tmp_path: Path) -> None:
    """The service and every hostcore command read it; the unit does not override it."""
    toml = tmp_path / "hostcore.toml"
    toml.write_text('data_dir = "/var/lib/hostcore"\n[server]\nuds_group = "nginx"\n')
    configured = build_settings([read_toml(toml, label=str(SYSTEM_CONFIG.absolute()))])
    unit = render_systemd(configured)[SERVICE_UNIT]
    carried = [value.split("=", 1)[0] for value in unit_values(unit, "Environment")]
    assert "HOSTCORE_DATA_DIR" not in carried
    assert "HOSTCORE_SERVER__UDS_GROUP" not in carried
    assert "HOSTCORE_LOG_DIR" in carried
    assert unit_values(unit, "SupplementaryGroups")[0].split()[0] == "nginx"


def test_directories_outside_systemds_bases_are_made_by_tmpfiles() -> None:
    files = render_systemd(settings("data_dir=/srv/hostcore", "log_dir=/srv/log"))
    unit = files[SERVICE_UNIT]
    assert unit_values(unit, "ReadWritePaths") == ["/srv/hostcore /srv/log"]
    assert unit_values(unit, "StateDirectory") == unit_values(unit, "LogsDirectory") == []
    assert unit_values(unit, "RuntimeDirectory") == ["hostcore"]
    assert "d /srv/hostcore 0700 hostcore hostcore -" in files[TMPFILES_FILE]


def test_the_open_files_limit_counts_every_connection_nginx_may_hold() -> None:
    target = Target(cpus=4)
    plain = deployment(settings(), target)
    counted = UPSTREAM_MAX_CONNECTIONS + 4 * UPSTREAM_KEEPALIVE + 3 * 5 + 3 * 4 + 128
    assert plain.open_files_limit == max(counted, 1024)  # never below systemd's default
    busier = deployment(settings("database.pool_size=100", "runner.max_concurrency=256"), target)
    assert busier.open_files_limit == counted + 3 * 95 + 3 * 252
    unit = render_systemd(settings(), target)[SERVICE_UNIT]
    assert unit_values(unit, "LimitNOFILE") == [str(plain.open_files_limit)]


def test_the_data_directory_mode_is_the_one_hostcore_keeps() -> None:
    shared = settings("auth.clients.panel.secret_group=panel")
    assert unit_values(render_systemd(shared)[SERVICE_UNIT], "StateDirectoryMode") == ["0711"]
    assert unit_values(render_systemd(settings())[SERVICE_UNIT], "StateDirectoryMode") == ["0700"]


# --- polkit ------------------------------------------------------------------------------

POLKIT_HARNESS = """
const fs = require("fs");
let rule = null;
const polkit = {
    Result: {YES: "yes", NO: "no", NOT_HANDLED: null},
    addRule: function (f) { rule = f; },
};
new Function("polkit", fs.readFileSync(process.argv[2], "utf8"))(polkit);
const answers = JSON.parse(process.argv[3]).map(function (c) {
    if (rule === null) return "no rule";
    const action = {id: c.id, lookup: function (key) { return (c.details || {})[key]; }};
    return rule(action, {user: c.user});
});
console.log(JSON.stringify(answers));
"""


def polkit_answers(tmp_path: Path, rules: str, cases: list[dict[str, object]]) -> list[object]:
    require("node")
    (tmp_path / "rules.js").write_text(rules)
    (tmp_path / "harness.js").write_text(POLKIT_HARNESS)
    result = run(["node", str(tmp_path / "harness.js"), str(tmp_path / "rules.js"),
                  json.dumps(cases)])  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers: list[object] = json.loads(result.stdout)
    return answers


def manage(unit: str, verb: str, user: str = "hostcore") -> dict[str, object]:
    details = {"unit": unit, "verb": verb}
    return {"id": "org.freedesktop.systemd1.manage-units", "details": details, "user": user}


def test_the_rules_parse(tmp_path: Path) -> None:
    require("node")
    (tmp_path / "rules.js").write_text(render_polkit(settings())[RULES_FILE])
    result = run(["node", "--check", str(tmp_path / "rules.js")])
    assert result.returncode == 0, result.stderr


def test_hostcore_may_manage_exactly_the_allowed_units(tmp_path: Path) -> None:
    rules = render_polkit(
        settings('plugins.system.allowed_units=["ssh.service","a\\\\x2db.service"]')
    )
    cases = [
        manage("ssh.service", "start"),
        manage("ssh.service", "restart"),
        manage("a\\x2db.service", "stop"),
        manage("ssh.service", "enable"),
        manage("nginx.service", "start"),
        manage("ssh.service", "start", user="www-data"),
    ]
    assert polkit_answers(tmp_path, rules[RULES_FILE], cases) == [
        "yes", "yes", "yes", None, None, None,
    ]  # fmt: skip


def test_hostcore_may_power_off_and_set_the_names_and_nothing_else(tmp_path: Path) -> None:
    rules = render_polkit(settings())[RULES_FILE]
    allowed = [
        "org.freedesktop.login1.reboot",
        "org.freedesktop.login1.power-off-multiple-sessions",
        "org.freedesktop.hostname1.set-static-hostname",
        "org.freedesktop.timedate1.set-timezone",
    ]
    refused = [
        "org.freedesktop.login1.reboot-ignore-inhibit",
        "org.freedesktop.timedate1.set-time",
        "org.freedesktop.hostname1.set-machine-info",
        "org.freedesktop.NetworkManager.settings.modify.system",
    ]
    cases: list[dict[str, object]] = [{"id": a, "user": "hostcore"} for a in allowed + refused]
    cases.append({"id": allowed[0], "user": "pi"})
    assert polkit_answers(tmp_path, rules, cases) == ["yes"] * 4 + [None] * 5


def test_without_the_system_plugin_there_is_no_rule(tmp_path: Path) -> None:
    rules = render_polkit(settings("plugins.enabled=auth,network,wifi,bluetooth"))[RULES_FILE]
    assert polkit_answers(tmp_path, rules, [{"id": "org.freedesktop.login1.reboot",
                                              "user": "hostcore"}]) == ["no rule"]  # fmt: skip


# --- logrotate ---------------------------------------------------------------------------

ROTATE_IN_NAMESPACE = r"""
set -eu
work=$1; shift
cp /etc/passwd "$work/passwd"; cp /etc/group "$work/group"
echo "hostcore:x:64999:64999::/nonexistent:/usr/sbin/nologin" >> "$work/passwd"
echo "hostcore:x:64999:" >> "$work/group"
mount --bind "$work/passwd" /etc/passwd
mount --bind "$work/group" /etc/group
mount -t tmpfs tmpfs /var/log
mkdir -p /var/log/hostcore/debug
echo app > /var/log/hostcore/app.log
echo debug > /var/log/hostcore/debug/debug.log
chown -R hostcore:hostcore /var/log/hostcore
chmod -R go= /var/log/hostcore
for conf in "$@"; do
    logrotate -d -s "$work/state" "$conf"
    logrotate -f -s "$work/state" "$conf"
done
cd /var/log/hostcore && find . -type f | sort
"""


def test_logrotate_moves_the_files_and_leaves_the_new_one_to_hostcore(tmp_path: Path) -> None:
    require("logrotate", "unshare", root=True)
    files = render_logrotate(settings("server.workers=2"))
    placed = write_tree(tmp_path / "tree", files)
    (tmp_path / "rotate.sh").write_text(ROTATE_IN_NAMESPACE)
    confs = [str(placed[LOGROTATE_FILE]), str(placed[DEBUG_LOGROTATE_FILE])]
    result = run(["unshare", "--mount", "--propagation", "private", "sh",
                  str(tmp_path / "rotate.sh"), str(tmp_path), *confs])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    # Moved, and no new file: hostcore's processes make their own (0600) when they next log.
    assert result.stdout.split() == ["./app.log.1", "./debug/debug.log.1"]


def test_one_process_rotates_its_own_logs() -> None:
    files = render_logrotate(settings("server.workers=1"))
    assert list(files) == [LOGROTATE_FILE]
    assert "{" not in files[LOGROTATE_FILE]
    files = render_logrotate(settings("server.workers=1", "logging.max_bytes=0"))
    assert "/var/log/hostcore/app.log {" in files[LOGROTATE_FILE]
