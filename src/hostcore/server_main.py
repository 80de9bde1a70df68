"""``hostcore serve`` once its command line is read: the server, in a fresh image.

The ``hostcore`` command parses and checks ``serve``'s options, then replaces itself
(``os.execv``: the same pid, the same open descriptors, so a supervisor sees one
process) with ``python -m hostcore.server_main``. The server then runs without the
command-line framework in its memory, about 0.8 MiB for as long as it serves (a Pi
counts them). ``--config`` and ``--set`` travel in ``HOSTCORE_CLI_LAYERS``, as they do
to ``--reload``'s fresh interpreters.
"""

from __future__ import annotations

import os
import sys

from hostcore.config import CLI_LAYERS_ENV, cli_layers_from_environment, load_settings
from hostcore.errors import USAGE_ERROR, ConfigError, PluginError, one_line


def main() -> int:
    config, overrides = cli_layers_from_environment(os.environ)
    os.environ.pop(CLI_LAYERS_ENV, None)  # the server keeps them as CliLayers
    try:
        settings = load_settings(config_file=config, overrides=overrides)
        from hostcore.serve import CliLayers, serve

        serve(settings, CliLayers(config, tuple(overrides)), code_reload=False)
    except (ConfigError, PluginError) as exc:
        print(f"hostcore: {one_line(str(exc))}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
