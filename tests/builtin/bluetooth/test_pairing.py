"""Pairing questions in the store: asked by one worker, answered through any."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from hostcore.builtin.bluetooth.pairing import Pairings, Rejected, metadata
from hostcore.builtin.bluetooth.schemas import PairingAnswer, PairingRequestRead
from hostcore.db.engine import Database
from hostcore.errors import Conflict, NotFound, Unprocessable
from tests.helpers import wait_until

WITHIN_S = 5.0
PHONE = {"adapter": "hci0", "address": "AA:BB:CC:DD:EE:FF", "name": "Pixel"}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def asked(pairings: Pairings) -> PairingRequestRead:
    await wait_until(lambda: bool(pairings._waiting), WITHIN_S, "the question")
    (pending,) = await pairings.pending()
    return pending


async def test_a_question_asked_in_one_worker_is_answered_through_another(db: Database) -> None:
    published: list[PairingRequestRead] = []
    asking = Pairings(db, timeout_s=10, publish=published.append, worker="one")
    answering = Pairings(db, timeout_s=10, worker="two")
    question = asyncio.create_task(asking.ask("confirmation", passkey=123456, **PHONE))
    pending = await asked(asking)
    assert pending.kind == "confirmation" and pending.passkey == 123456 and pending.incoming
    answered = await answering.answer(pending.id, PairingAnswer(accept=True))
    assert answered.state == "accepted"
    assert await asyncio.wait_for(question, WITHIN_S) == (None, None)
    assert [p.state for p in published] == ["pending"]  # the answer is the other's to tell
    with pytest.raises(Conflict, match="is accepted, not pending"):
        await answering.answer(pending.id, PairingAnswer(accept=False))


async def test_a_passkey_is_handed_over_once_and_then_cleared(db: Database) -> None:
    pairings = Pairings(db, timeout_s=10)
    question = asyncio.create_task(pairings.ask("passkey", **PHONE))
    pending = await asked(pairings)
    with pytest.raises(Unprocessable, match="needs passkey"):
        await pairings.answer(pending.id, PairingAnswer(accept=True))
    await pairings.answer(pending.id, PairingAnswer(accept=True, passkey=4711))
    assert await asyncio.wait_for(question, WITHIN_S) == (4711, None)
    async with db.session() as session:
        query = text("select answer_passkey from bluetooth_pairing_requests")
        stored = (await session.execute(query)).scalar_one()
    assert stored is None


async def test_rejected_expired_and_cancelled_questions_raise_their_state(db: Database) -> None:
    pairings = Pairings(db, timeout_s=10)
    question = asyncio.create_task(pairings.ask("authorization", **PHONE))
    await pairings.answer((await asked(pairings)).id, PairingAnswer(accept=False))
    with pytest.raises(Rejected) as rejected:
        await asyncio.wait_for(question, WITHIN_S)
    assert rejected.value.state == "rejected"

    hurried = Pairings(db, timeout_s=0.3)
    with pytest.raises(Rejected) as expired:
        await asyncio.wait_for(hurried.ask("confirmation", passkey=1, **PHONE), WITHIN_S)
    assert expired.value.state == "expired"

    question = asyncio.create_task(pairings.ask("confirmation", passkey=2, **PHONE))
    pending = await asked(pairings)
    await pairings.cancel_all()
    with pytest.raises(Rejected) as cancelled:
        await asyncio.wait_for(question, WITHIN_S)
    assert cancelled.value.state == "cancelled"
    assert (await pairings.get(pending.id)).state == "cancelled"
    assert await pairings.pending() == []


async def test_what_is_only_shown_cannot_be_accepted_and_unknown_ids_are_404(
    db: Database,
) -> None:
    pairings = Pairings(db, timeout_s=10)
    shown = await pairings.tell("display_passkey", passkey=654321, **PHONE)
    with pytest.raises(Unprocessable, match="answered on the other device"):
        await pairings.answer(shown.id, PairingAnswer(accept=True))
    await pairings.close_job("some-job", PHONE["address"])
    assert (await pairings.get(shown.id)).state == "cancelled"
    with pytest.raises(NotFound):
        await pairings.answer("00000000-0000-0000-0000-000000000000", PairingAnswer(accept=True))


async def test_a_question_whose_worker_died_reads_as_expired(db: Database) -> None:
    died = Pairings(db, timeout_s=0.05)
    request_id = await died._insert(
        "confirmation", passkey=3, service=None, pin_code=None, job_id=None, **PHONE
    )  # written, and nobody left to close it
    await asyncio.sleep(0.1)
    assert (await died.get(request_id)).state == "expired"
    assert await died.pending() == []
    with pytest.raises(Conflict):
        await Pairings(db, timeout_s=1).answer(request_id, PairingAnswer(accept=True))
