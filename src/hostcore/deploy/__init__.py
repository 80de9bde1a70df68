"""``hostcore deploy``: the production files, rendered from the effective configuration.

One pure function per kind, each ``(settings, target) -> {absolute path: text}``;
:mod:`hostcore.deploy.model` resolves the settings into the facts they share, and
:mod:`hostcore.deploy.cli` prints or writes them.
"""

from hostcore.deploy.logrotate import render_logrotate
from hostcore.deploy.nginx import render_nginx
from hostcore.deploy.polkit import render_polkit
from hostcore.deploy.systemd import render_systemd

__all__ = ["render_logrotate", "render_nginx", "render_polkit", "render_systemd"]
