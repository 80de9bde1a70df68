"""Request dependencies for the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.db.engine import Database


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.session() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_session)]
"""A session for this request; commit explicitly (``async with session.begin()``)."""
