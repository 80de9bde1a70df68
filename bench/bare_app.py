"""The baseline for the overhead benchmarks: a bare FastAPI app with hostcore's health route.

Same path, same JSON body (``{"status":"ok"}``), no middleware, no plugins, so the
difference to hostcore is hostcore's own per-request work. Served by
``bench/overhead.py`` as ``uvicorn --app-dir bench bare_app:app``.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/api/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
