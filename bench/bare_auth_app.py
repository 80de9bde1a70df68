"""The baseline for bench/auth.py: hostcore's two authenticated routes without hostcore.

A bare FastAPI app (no middleware, no authentication, no rate limit, no activity)
serving, on the same paths as hostcore:

- ``GET /api/v1/auth/whoami``: builds the same ``WhoAmIRead`` model per request, with
  the values hostcore answered for the benchmark's token, exactly as hostcore's handler
  does (src/hostcore/builtin/auth/router.py), so the body is the same bytes;
- ``GET /api/v1/system/stats``: a sample hostcore answered, validated into a
  ``SystemStatsRead`` and encoded to JSON once, returned as a ``Response`` of those bytes
  on every request, as hostcore's handler returns its newest sample encoded once per
  sample (src/hostcore/builtin/system/router.py and service.py, ``stats_json``): the
  same bytes as the sample hostcore answered first, no serialization per request on
  either side;
- ``GET /api/v1/health`` for readiness.

Both data routes reuse hostcore's response models (plain pydantic classes), so the
handler work matches and the difference to hostcore is its pipeline. When hostcore's
handlers change, this file must follow them. The sample
bodies come from the JSON file named by ``BENCH_AUTH_BODIES`` (written by
bench/auth.py): ``{"whoami": {...}, "stats": {...}}``. Served by bench/auth.py as
``uvicorn --app-dir bench bare_auth_app:app``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Response

from hostcore.builtin.auth.schemas import WhoAmIRead
from hostcore.builtin.system.stats import SystemStatsRead

BODIES_ENV = "BENCH_AUTH_BODIES"


def _bodies() -> dict[str, Any]:
    path = os.environ.get(BODIES_ENV)
    if not path:
        raise RuntimeError(f"{BODIES_ENV} must name the JSON file with the sample bodies")
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


_BODIES = _bodies()
_WHOAMI: dict[str, Any] = _BODIES["whoami"]
_SUBJECT: str = _WHOAMI["subject"]
_KIND: str = _WHOAMI["kind"]
_SCOPES = frozenset(_WHOAMI["scopes"])  # hostcore's Principal keeps them as a frozenset
_EXPIRES_AT: float | None = _WHOAMI["expires_at"]
_STATS_JSON = SystemStatsRead.model_validate(_BODIES["stats"]).model_dump_json().encode()

app = FastAPI()


@app.get("/api/v1/auth/whoami")
async def whoami() -> WhoAmIRead:
    return WhoAmIRead(subject=_SUBJECT, kind=_KIND, scopes=sorted(_SCOPES), expires_at=_EXPIRES_AT)


@app.get("/api/v1/system/stats", response_model=SystemStatsRead)
async def stats() -> Response:
    return Response(_STATS_JSON, media_type="application/json")


@app.get("/api/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
