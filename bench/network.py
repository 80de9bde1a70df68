"""``GET /api/v1/network/interfaces`` with a token against a bare FastAPI hello route.

The route every network consumer polls: admission (token, rate limit, scope
``network:read``), two netlink dumps (links, addresses) of the host's own namespace
through pyroute2's async socket, the facts /sys/class/net adds, FastAPI's handler
and the activity record. Gate: median hostcore req/s / median bare hello req/s >=
0.4, in the same run. It is ``bench/auth.py --route interfaces`` (the same servers,
load, rounds and activity-row check), named for the issue that set the target.

    .venv/bin/python bench/network.py [--rounds 5] [--duration 5] [--json]

Exit status: 0 PASS, 1 FAIL, 2 could not run, 130 interrupted.
"""

from __future__ import annotations

import sys

from auth import main

if __name__ == "__main__":
    sys.exit(main(["--route", "interfaces", *sys.argv[1:]]))
