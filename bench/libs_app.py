"""The memory baseline for ``bench/lean.py``: the libraries hostcore needs, and nothing of hostcore.

A FastAPI app with the health route that, on start, opens SQLAlchemy's async engine on
an aiosqlite file and runs one query, signs and verifies one PyJWT token with an Ed25519
key from cryptography, and holds a limits moving-window limiter; dbus-fast's asyncio
client is imported. Served like ``bare_app.py`` (``uvicorn --app-dir bench libs_app:app``);
the database goes to ``$LIBS_APP_DB`` (default: a file in the current directory).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dbus_fast.aio
import jwt
import limits
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

HELD: dict[str, Any] = {"bus": dbus_fast.aio.MessageBus}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{os.environ.get('LIBS_APP_DB', 'libs.db')}")
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    key = Ed25519PrivateKey.generate()
    token = jwt.encode({"sub": "bench"}, key, algorithm="EdDSA")
    jwt.decode(token, key.public_key(), algorithms=["EdDSA"])
    HELD["limiter"] = limits.strategies.MovingWindowRateLimiter(limits.storage.MemoryStorage())
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/api/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
