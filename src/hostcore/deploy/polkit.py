"""polkit rules: what the ``hostcore`` user may ask of systemd's daemons, and no more.

Each enabled plugin adds the actions its calls check, as Debian 12's systemd 252
names them:

- system: ``StartUnit``/``StopUnit``/``RestartUnit`` of the units on
  ``plugins.system.allowed_units`` only (``manage-units``, whose ``unit`` and
  ``verb`` details systemd fills in); logind's reboot and power-off, now or
  scheduled, also while others are logged in (an SSH session must not block the
  device's own power button), but never past an inhibitor lock (someone holds it for
  a reason: an upgrade, a write); hostnamed's hostname and static hostname;
  timedated's timezone.
- network, wifi, bluetooth: nothing. hostcore changes links through netlink
  (``CAP_NET_ADMIN``), talks to wpa_supplicant and BlueZ, whose D-Bus policies
  admit it by group (the unit's ``SupplementaryGroups=``) and which ask polkit
  nothing, and only reads NetworkManager's properties, which needs no action.

Anything else is left to polkit's defaults (``NOT_HANDLED``): this file grants, it
never widens by accident. The rules are ECMAScript 5 (polkit's duktape engine):
``var``, ``indexOf``, no arrow functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from hostcore.config import Settings
from hostcore.deploy.model import SERVICE_NAME, SERVICE_USER, Deployment, Target, deployment

RULES_FILE = Path(f"/etc/polkit-1/rules.d/50-{SERVICE_NAME}.rules")
MANAGE_UNITS = "org.freedesktop.systemd1.manage-units"
# The verbs systemd gives manage-units for the calls the system plugin makes.
UNIT_VERBS = ("start", "stop", "restart")
SYSTEM_ACTIONS = (
    "org.freedesktop.login1.reboot",
    "org.freedesktop.login1.reboot-multiple-sessions",
    "org.freedesktop.login1.power-off",
    "org.freedesktop.login1.power-off-multiple-sessions",
    "org.freedesktop.hostname1.set-hostname",
    "org.freedesktop.hostname1.set-static-hostname",
    "org.freedesktop.timedate1.set-timezone",
)


def render_polkit(settings: Settings, target: Target | None = None) -> dict[Path, str]:
    return {RULES_FILE: rules(deployment(settings, target))}


def _js(value: object) -> str:
    """A JavaScript literal: JSON is one (unit names may hold a backslash)."""
    return json.dumps(value)


def rules(deploy: Deployment) -> str:
    header = [
        "// hostcore's polkit rules, rendered by `hostcore deploy polkit` from the effective",
        "// configuration: what the hostcore user may ask of systemd, logind, hostnamed and",
        "// timedated for its enabled plugins. Everything else: polkit's defaults.",
    ]
    if "system" not in deploy.plugins:
        return "\n".join([*header, "// No enabled plugin needs any action.", ""])
    units = list(deploy.allowed_units)
    lines = [
        *header,
        "polkit.addRule(function (action, subject) {",
        f"    if (subject.user !== {_js(SERVICE_USER)}) {{",
        "        return polkit.Result.NOT_HANDLED;",
        "    }",
        "    // system plugin: plugins.system.allowed_units, and its three verbs.",
        f"    if (action.id === {_js(MANAGE_UNITS)}) {{",
        f"        var units = {_js(units)};",
        f"        var verbs = {_js(list(UNIT_VERBS))};",
        '        if (units.indexOf(action.lookup("unit")) >= 0 &&',
        '                verbs.indexOf(action.lookup("verb")) >= 0) {',
        "            return polkit.Result.YES;",
        "        }",
        "        return polkit.Result.NOT_HANDLED;",
        "    }",
        "    // system plugin: power, hostname, timezone.",
        f"    var allowed = {_js(list(SYSTEM_ACTIONS))};",
        "    if (allowed.indexOf(action.id) >= 0) {",
        "        return polkit.Result.YES;",
        "    }",
        "    return polkit.Result.NOT_HANDLED;",
        "});",
        "",
    ]
    return "\n".join(lines)
