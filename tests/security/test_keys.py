"""Signing keys: the master key, encryption at rest, rotation in the store, what verifies
when, the JWKS; and no private key material in any HTTP answer."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update

from hostcore.db.engine import Database
from hostcore.errors import NotFound, Unavailable
from hostcore.security.keys import (
    MASTER_KEY_BYTES,
    Algorithm,
    KeyStore,
    LoadedKey,
    MasterKey,
    jwks,
)
from hostcore.security.models import SigningKey
from hostcore.security.runtime import SecurityRuntime
from tests.helpers import Serve, b64url, b64url_decode, bearer, mode, runtime_of

# --- no private key material leaves the server ----------------------------------------


def private_material(runtime: SecurityRuntime) -> list[str]:
    """Every spelling of every private key this worker holds."""
    spellings = []
    for key in runtime.verifier.keys.values():
        raw = key.signing.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        spellings += [raw.hex(), b64url(raw), base64.b64encode(raw).decode()]
    return spellings


def test_no_http_answer_carries_private_key_material(serve: Serve) -> None:
    client = serve()
    admin = bearer(client)
    answers = [client.post("/api/v1/auth/keys/rotate", headers=admin).text]
    answers += [client.get("/.well-known/jwks.json").text]
    answers += [client.get("/api/v1/auth/keys", headers=admin).text]
    answers += [client.get("/api/v1/auth/tokens", headers=admin).text]
    for key in client.get("/.well-known/jwks.json").json()["keys"]:
        assert "d" not in key
    secrets = private_material(runtime_of(client))
    assert len(secrets) == 6, "two keys, three spellings each"
    for answer in answers:
        for secret in secrets:
            assert secret not in answer


# --- the master key ---------------------------------------------------------------------


def test_the_master_key_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    first = MasterKey.load_or_create(path)
    assert len(path.read_bytes()) == MASTER_KEY_BYTES
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    again = MasterKey.load_or_create(path)
    sealed = first.encrypt(b"signing key", b"kid-1")
    assert again.decrypt(sealed, b"kid-1") == b"signing key", "the same key, read back"


def test_a_master_key_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"k" * 16)
    with pytest.raises(Unavailable, match="master key has the wrong length"):
        MasterKey.load_or_create(path)


def test_an_unreadable_master_key_is_unavailable_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.mkdir()
    with pytest.raises(Unavailable, match=f"master key {path} is unreadable"):
        MasterKey.load_or_create(path)


def test_key_material_is_sealed_to_its_kid_with_a_fresh_nonce_each_time() -> None:
    master = MasterKey(b"m" * MASTER_KEY_BYTES)
    first, second = master.encrypt(b"private", b"kid-1"), master.encrypt(b"private", b"kid-1")
    assert first != second and b"private" not in first
    with pytest.raises(InvalidTag):
        master.decrypt(first, b"kid-2")
    with pytest.raises(InvalidTag):
        MasterKey(b"o" * MASTER_KEY_BYTES).decrypt(first, b"kid-1")


# --- keys in the store --------------------------------------------------------------------

GRACE_S = 3600.0


def keystore(algorithm: Algorithm = "EdDSA") -> KeyStore:
    return KeyStore(MasterKey(b"m" * MASTER_KEY_BYTES), algorithm, verify_grace_s=GRACE_S)


def raw_private(key: LoadedKey) -> bytes:
    raw: bytes = key.signing.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw


async def test_the_store_holds_private_keys_only_encrypted(store: Database) -> None:
    keys = keystore()
    async with store.session() as session:
        row = await keys.ensure_active(session, rotate_after_s=0)
        (loaded,) = await keys.verifying(session)
    assert loaded.kid == row.kid and loaded.algorithm == "EdDSA"
    assert raw_private(loaded) not in row.private_key
    assert loaded.verifying.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) == b64url_decode(row.public_key or "")
    signature = loaded.signing.sign(b"claims")
    loaded.verifying.verify(signature, b"claims")


async def test_rotation_retires_the_signer_and_keeps_it_verifying_for_the_grace(
    store: Database,
) -> None:
    keys = keystore()
    async with store.session() as session:
        old = await keys.ensure_active(session, rotate_after_s=0)
        new = await keys.rotate(session)
        infos = {info.kid: info for info in await keys.infos(session)}
        active = await keys.active(session)
    assert active is not None and active.kid == new.kid != old.kid
    retired = infos[old.kid]
    assert not retired.active and retired.retired_at is not None
    assert retired.verify_until == pytest.approx(retired.retired_at + GRACE_S)
    assert infos[new.kid].active and infos[new.kid].verify_until is None


async def test_ensure_active_keeps_a_fresh_key_and_rotates_a_stale_one(store: Database) -> None:
    keys = keystore()
    async with store.session() as session:
        first = await keys.ensure_active(session, rotate_after_s=3600)
        assert (await keys.ensure_active(session, rotate_after_s=3600)).kid == first.kid
        async with session.begin():
            await session.execute(
                update(SigningKey).where(SigningKey.kid == first.kid).values(created_at=0.0)
            )
        assert (await keys.ensure_active(session, rotate_after_s=0)).kid == first.kid, "0: never"
        assert (await keys.ensure_active(session, rotate_after_s=3600)).kid != first.kid


async def test_a_new_algorithm_in_the_settings_rotates_the_key(store: Database) -> None:
    async with store.session() as session:
        eddsa = await keystore("EdDSA").ensure_active(session, rotate_after_s=0)
        hs256 = await keystore("HS256").ensure_active(session, rotate_after_s=0)
    assert hs256.kid != eddsa.kid and hs256.algorithm == "HS256"


async def test_a_key_past_its_verify_until_is_wiped_and_verifies_nothing(store: Database) -> None:
    keys = keystore()
    async with store.session() as session:
        expired = await keys.ensure_active(session, rotate_after_s=0)
        retired = await keys.rotate(session)
        active = await keys.rotate(session)
        async with session.begin():
            await session.execute(
                update(SigningKey).where(SigningKey.kid == expired.kid).values(verify_until=1.0)
            )
        async with session.begin():
            assert await keys.wipe_expired(session) == 1
        async with session.begin():
            assert await keys.wipe_expired(session) == 0, "wiped once"
        verifying = {key.kid for key in await keys.verifying(session)}
        wiped = await session.scalar(
            select(SigningKey.private_key).where(SigningKey.kid == expired.kid)
        )
    assert verifying == {retired.kid, active.kid}
    assert wiped == b""


async def test_an_unknown_kid_has_no_info(store: Database) -> None:
    async with store.session() as session:
        await keystore().ensure_active(session, rotate_after_s=0)
        with pytest.raises(NotFound, match="no signing key nope"):
            await keystore().get_info(session, "nope")


# --- what verifies when, and the JWKS ---------------------------------------------------------


def loaded(kid: str, verify_until: float | None, *, public: bool = True) -> LoadedKey:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "x", "kid": kid, "alg": "EdDSA", "use": "sig"}
    return LoadedKey(
        kid=kid,
        algorithm="EdDSA" if public else "HS256",
        signing=None,
        verifying=None,
        public_jwk=jwk if public else None,
        created_at=0.0,
        retired_at=None if verify_until is None else verify_until - GRACE_S,
        verify_until=verify_until,
    )


def test_a_key_verifies_up_to_and_including_its_verify_until() -> None:
    assert loaded("active", None).verifies_at(10**12)
    retired = loaded("retired", 100.0)
    assert retired.verifies_at(99.0) and retired.verifies_at(100.0)
    assert not retired.verifies_at(100.001)


def test_the_jwks_publishes_the_public_keys_that_still_verify_and_never_an_hmac_key() -> None:
    keys = [
        loaded("active", None),
        loaded("retired", 200.0),
        loaded("expired", 50.0),
        loaded("hmac", None, public=False),
    ]
    published = jwks(keys, now=100.0)["keys"]
    assert [key["kid"] for key in published] == ["active", "retired"]
