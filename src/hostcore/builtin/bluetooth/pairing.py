"""Pairing questions, asked by BlueZ of hostcore's agent and answered through the API.

BlueZ asks the agent of one worker (the one that asked for the pairing, or the default
agent's for a device pairing with this one), and the answer may come to any worker. So
a question is a row in the store: the asking worker writes it, and waits for its answer
there (woken at once when the answer comes through itself, else it looks every
``WATCH_S`` while it has a question open). One nobody answers in time is expired,
which the agent gives BlueZ as a rejection. Answers (a passkey, a PIN) are cleared from
the row as soon as the agent has read them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    or_,
    select,
    update,
)

from hostcore.builtin.bluetooth.schemas import PairingAnswer, PairingKind, PairingRequestRead
from hostcore.db.engine import Database, affected_rows
from hostcore.errors import Conflict, NotFound, Unprocessable

WATCH_S = 0.25
KEEP_ANSWERED_S = 3600.0  # answered and expired questions are listed no longer than this
_ANSWERS_NEEDED: dict[str, str] = {"passkey": "passkey", "pin_code": "pin_code"}
DISPLAY_ONLY = frozenset({"display_passkey", "display_pin_code"})

metadata = MetaData()
requests = Table(
    "bluetooth_pairing_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("adapter", String(16), nullable=False),
    Column("address", String(17), nullable=False),
    Column("name", String(248)),
    Column("passkey", Integer),
    Column("pin_code", String(16)),
    Column("service", String(64)),
    Column("job_id", String(36)),
    Column("worker", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("answer_passkey", Integer),
    Column("answer_pin_code", String(16)),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


class Rejected(Exception):
    """The question was rejected, expired or cancelled (the agent tells BlueZ so)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


def _read(row: Any) -> PairingRequestRead:
    state = row.state
    if state == "pending" and row.expires_at <= time.time():
        state = "expired"  # its worker stopped before it could say so
    return PairingRequestRead(
        id=row.id,
        kind=row.kind,
        adapter=row.adapter,
        address=row.address,
        name=row.name,
        passkey=row.passkey,
        pin_code=row.pin_code,
        service=row.service,
        incoming=row.job_id is None,
        job_id=row.job_id,
        state=state,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


class Pairings:
    """The questions of this worker's agent, and answers to anyone's."""

    def __init__(
        self,
        db: Database,
        *,
        timeout_s: float,
        publish: Callable[[PairingRequestRead], None] = lambda _request: None,
        worker: str | None = None,
    ) -> None:
        self.db = db
        self.timeout_s = timeout_s
        self.publish = publish
        # Unique across hosts sharing a store, and across restarts of one.
        self.worker = worker or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._waiting: dict[str, asyncio.Event] = {}

    async def tell(
        self, kind: PairingKind, *, adapter: str, address: str, name: str | None,
        passkey: int | None = None, pin_code: str | None = None, job_id: str | None = None,
    ) -> PairingRequestRead:  # fmt: skip
        """Show something to type on the other device (nothing to wait for)."""
        request_id = await self._insert(
            kind, adapter=adapter, address=address, name=name, passkey=passkey,
            pin_code=pin_code, service=None, job_id=job_id,
        )  # fmt: skip
        shown = await self.get(request_id)
        self.publish(shown)
        return shown

    async def ask(
        self,
        kind: PairingKind,
        *,
        adapter: str,
        address: str,
        name: str | None,
        passkey: int | None = None,
        pin_code: str | None = None,
        service: str | None = None,
        job_id: str | None = None,
        announce: Callable[[PairingRequestRead], None] = lambda _request: None,
    ) -> tuple[int | None, str | None]:
        """Ask, and wait for the answer: the passkey or PIN given (for the kinds that
        need one). Raises :class:`Rejected` when rejected, expired or cancelled."""
        request_id = await self._insert(
            kind, adapter=adapter, address=address, name=name, passkey=passkey,
            pin_code=pin_code, service=service, job_id=job_id,
        )  # fmt: skip
        woken = self._waiting[request_id] = asyncio.Event()
        asked = await self.get(request_id)
        announce(asked)
        self.publish(asked)
        try:
            return await self._answer_of(request_id, woken, time.time() + self.timeout_s)
        finally:
            self._waiting.pop(request_id, None)

    async def _insert(
        self, kind: PairingKind, *, adapter: str, address: str, name: str | None,
        passkey: int | None, pin_code: str | None, service: str | None, job_id: str | None,
    ) -> str:  # fmt: skip
        now = time.time()
        request_id = str(uuid.uuid4())
        row = {
            "id": request_id, "kind": kind, "adapter": adapter, "address": address,
            "name": name, "passkey": passkey, "pin_code": pin_code, "service": service,
            "job_id": job_id, "worker": self.worker, "state": "pending",
            "created_at": now, "expires_at": now + self.timeout_s,
        }  # fmt: skip
        async with self.db.session() as session, session.begin():
            await session.execute(
                delete(requests).where(
                    requests.c.state != "pending",
                    requests.c.created_at < now - KEEP_ANSWERED_S,
                )
            )
            await session.execute(requests.insert().values(**row))
        return request_id

    async def _answer_of(
        self, request_id: str, woken: asyncio.Event, deadline: float
    ) -> tuple[int | None, str | None]:
        try:
            while True:
                async with self.db.session() as session:
                    row = (
                        await session.execute(select(requests).where(requests.c.id == request_id))
                    ).one_or_none()
                if row is None:
                    raise Rejected("cancelled")
                if row.state == "accepted":
                    await self._clear_answer(request_id)
                    return row.answer_passkey, row.answer_pin_code
                if row.state != "pending":
                    raise Rejected(row.state)
                remaining = deadline - time.time()
                if remaining <= 0:
                    await self._end(request_id, "expired")
                    raise Rejected("expired")
                woken.clear()
                try:
                    async with asyncio.timeout(min(WATCH_S, remaining)):
                        await woken.wait()
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            await asyncio.shield(self._end(request_id, "cancelled"))
            raise

    async def _clear_answer(self, request_id: str) -> None:
        async with self.db.session() as session, session.begin():
            await session.execute(
                update(requests)
                .where(requests.c.id == request_id)
                .values(answer_passkey=None, answer_pin_code=None)
            )

    async def _end(self, request_id: str, state: str) -> None:
        """Close a question still pending (expired, cancelled) and say so."""
        async with self.db.session() as session, session.begin():
            ended = await session.execute(
                update(requests)
                .where(requests.c.id == request_id, requests.c.state == "pending")
                .values(state=state)
            )
        if affected_rows(ended):
            self.publish(await self.get(request_id))

    async def cancel_all(self) -> None:
        """BlueZ cancelled the agent's question (``Agent1.Cancel``): BlueZ has one open
        per agent, the one this worker is waiting for (what is only shown stays until
        its pairing ends)."""
        for request_id, event in list(self._waiting.items()):
            await self._end(request_id, "cancelled")
            event.set()

    async def close_job(self, job_id: str, address: str) -> None:
        """A pairing ended: its questions, and what was shown for it, are closed."""
        async with self.db.session() as session:
            open_ones = [
                row.id
                for row in await session.execute(
                    select(requests.c.id).where(
                        requests.c.state == "pending",
                        requests.c.worker == self.worker,
                        requests.c.address == address,
                        or_(requests.c.job_id == job_id, requests.c.kind.in_(sorted(DISPLAY_ONLY))),
                    )
                )
            ]
        for request_id in open_ones:
            await self._end(request_id, "cancelled")
            event = self._waiting.get(request_id)
            if event is not None:
                event.set()

    async def get(self, request_id: str) -> PairingRequestRead:
        async with self.db.session() as session:
            row = (
                await session.execute(select(requests).where(requests.c.id == request_id))
            ).one_or_none()
        if row is None:
            raise NotFound(f"no pairing request {request_id}")
        return _read(row)

    async def pending(self) -> list[PairingRequestRead]:
        """The questions waiting for an answer, oldest first."""
        now = time.time()
        async with self.db.session() as session:
            rows = await session.execute(
                select(requests)
                .where(requests.c.state == "pending", requests.c.expires_at > now)
                .order_by(requests.c.created_at)
            )
        return [_read(row) for row in rows]

    async def answer(self, request_id: str, answer: PairingAnswer) -> PairingRequestRead:
        """Accept or reject a pending question, from any worker."""
        current = await self.get(request_id)
        needed = _ANSWERS_NEEDED.get(current.kind)
        if answer.accept and needed is not None and getattr(answer, needed) is None:
            raise Unprocessable(f"accepting a {current.kind} question needs {needed}")
        if answer.accept and current.kind in DISPLAY_ONLY:
            raise Unprocessable(
                f"a {current.kind} question is answered on the other device; it can only "
                "be rejected here"
            )
        async with self.db.session() as session, session.begin():
            changed = await session.execute(
                update(requests)
                .where(
                    requests.c.id == request_id,
                    requests.c.state == "pending",
                    requests.c.expires_at > time.time(),
                )
                .values(
                    state="accepted" if answer.accept else "rejected",
                    answer_passkey=answer.passkey if answer.accept else None,
                    answer_pin_code=answer.pin_code if answer.accept else None,
                )
            )
        if not affected_rows(changed):
            now = await self.get(request_id)  # answered or expired meanwhile
            state = "expired" if now.state == "pending" else now.state
            raise Conflict(f"pairing request {request_id} is {state}, not pending")
        event = self._waiting.get(request_id)
        if event is not None:
            event.set()
        answered = await self.get(request_id)
        self.publish(answered)
        return answered
