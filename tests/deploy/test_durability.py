"""Durability of the production server: ``hostcore serve --workers 2 --uds`` (gunicorn's
master and two uvicorn workers on a unix socket) reloaded under load, one worker killed
under load, and the whole process tree killed right after it committed state.

What ``tests/test_serve.py`` already shows is not repeated here: one SIGHUP during
unauthenticated liveness probes on fresh connections, and ``hostcore reload`` of one
uvicorn process. Here the load is authenticated (a bearer token, the rate limiter and
the activity recorder on every request), on kept-alive connections as nginx holds them
(its upstream's ``keepalive``) and on fresh ones, from several clients at once; the
workers are watched by pid.

A power cut is played by SIGKILL of every process of the tree: the processes lose
everything they held in memory, the kernel keeps what they wrote. That is the crash
the store must survive whole; a real power cut also loses what the kernel had not yet
written to the disk, which needs the fsyncs the last test asks for.

Every loop is bounded (requests per client, waits with a limit that only guards
against a hang); every process stopped is one this module started, by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from hostcore.db.engine import Database
from hostcore.security import hmac as signing
from tests.helpers import (
    ACCESS_LINE,
    STOP_TIMEOUT_S,
    TOKEN_PATH,
    WHOAMI,
    RealServer,
    authorization,
    kid_of,
    start_real_server,
    stop_group,
    wait_for,
)

pytestmark = pytest.mark.integration

CLIENTS = 4  # load threads, each with one request in flight at a time
MAX_REQUESTS_PER_CLIENT = 5_000  # a client stops at this many, whatever happens
BETWEEN_STEPS = 100  # requests answered before and after each step of a test
LIMIT_BEFORE = 100_000  # whoami's rate limit per minute: far above what the load sends...
LIMIT_AFTER = 200_000  # ... and the value the last reload brings, seen in its header
WORKERS_WITHIN_S = 60.0  # guards the wait for a worker to be replaced
# Activity: written every FLUSH_INTERVAL_S or once BATCH_SIZE rows are buffered. Small
# batches, so that a kill under load finds a flush window much smaller than the load.
FLUSH_INTERVAL_S = 1.0
BATCH_SIZE = 50


def server_config(limit: int) -> str:
    return (
        "[ratelimit.routes]\n"
        f'"GET {WHOAMI}" = "{limit}/minute"\n'
        '"POST /api/v1/auth/token" = "1000/minute"\n'
        "[activity]\n"
        f"flush_interval_s = {FLUSH_INTERVAL_S}\n"
        f"batch_size = {BATCH_SIZE}\n"
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hostcore-extra.toml"
    path.write_text(server_config(LIMIT_BEFORE))
    return path


@pytest.fixture
def started() -> Iterator[list[RealServer]]:
    """Servers this test starts (``start``); each is stopped at the end, by its pid."""
    servers: list[RealServer] = []
    yield servers
    for server in servers:
        stop_group(server.process)


def start(started: list[RealServer], root: Path, config: Path) -> RealServer:
    server = start_real_server(root, "--config", str(config))
    started.append(server)
    return server


# --- processes ------------------------------------------------------------------------


def live_children(pid: int) -> set[int]:
    """The pids of ``pid``'s children that are still running (not zombies)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        state, parent = stat.rpartition(")")[2].split()[:2]
        if int(parent) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def workers(server: RealServer) -> set[int]:
    return live_children(server.process.pid)


def wait_for_workers(server: RealServer, what: str, *, replacing: set[int]) -> set[int]:
    """Two workers again, none of them in ``replacing`` (those gone), and the set."""
    found: set[int] = set()

    def replaced() -> bool:
        found.clear()
        found.update(workers(server))
        return len(found) == 2 and not found & replacing

    wait_for(replaced, WORKERS_WITHIN_S, what)
    return set(found)


def gone(pid: int) -> bool:
    """Gone, or a zombie no process reaps yet: it runs no more code either way."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"


def access_lines(server: RealServer, prefix: str) -> list[tuple[int, str]]:
    """(worker pid, request id) of each access line of a request id with ``prefix``, in the
    order the log has them: for one worker, the order it answered them."""
    return [
        (int(pid), request_id)
        for pid, request_id in ACCESS_LINE.findall(server.app_log())
        if request_id.startswith(prefix)
    ]


def integrity(server: RealServer) -> list[str]:
    with sqlite3.connect(server.data_dir / "hostcore.db") as db:
        return [str(row[0]) for row in db.execute("PRAGMA integrity_check")]


def activity_request_ids(server: RealServer, prefix: str) -> set[str]:
    with sqlite3.connect(server.data_dir / "hostcore.db") as db:
        rows = db.execute(
            "SELECT request_id FROM activity WHERE request_id LIKE ?", (f"{prefix}%",)
        ).fetchall()
    return {str(row[0]) for row in rows}


# --- load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    request_id: str
    status: int | None  # None: no answer (``error`` says why)
    error: str | None = None
    limit: str | None = None  # the x-ratelimit-limit the answer carried


class Load:
    """CLIENTS threads sending authenticated GETs of whoami, each one after another, on one
    kept-alive connection each (as nginx's upstream ``keepalive`` holds them) or on a
    fresh connection per request. Outcomes are kept in the order they came in."""

    def __init__(self, server: RealServer, token: str, prefix: str, *, keep_alive: bool) -> None:
        self.server = server
        self.keep_alive = keep_alive
        self.headers = authorization(token)
        self.prefix = prefix
        self.outcomes: list[Outcome] = []  # appended by the threads: list.append is atomic
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)
        ]

    def _client(self, keep_alive: bool) -> httpx2.Client:
        limits = httpx2.Limits() if keep_alive else httpx2.Limits(max_keepalive_connections=0)
        transport = httpx2.HTTPTransport(uds=str(self.server.sock), limits=limits)
        return httpx2.Client(transport=transport, base_url="http://hostcore", timeout=30)

    def _run(self, number: int) -> None:
        with self._client(self.keep_alive) as http:
            for n in range(MAX_REQUESTS_PER_CLIENT):
                if self.stop.is_set():
                    return
                request_id = f"{self.prefix}{number}-{n}"
                headers = {**self.headers, "X-Request-ID": request_id}
                try:
                    response = http.get(WHOAMI, headers=headers)
                except httpx2.TransportError as exc:
                    self.outcomes.append(Outcome(request_id, None, repr(exc)))
                    continue
                limit = response.headers.get("x-ratelimit-limit")
                self.outcomes.append(Outcome(request_id, response.status_code, limit=limit))

    def wait_answered(self, more: int, what: str) -> int:
        """Wait until ``more`` further requests have come back; how many had before."""
        before = len(self.outcomes)
        wait_for(lambda: len(self.outcomes) >= before + more, WORKERS_WITHIN_S, what)
        return before

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(STOP_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in self.threads), "a load client hung"


def issue(server: RealServer) -> dict[str, str]:
    """``hostcore token issue``: a token for client tester, recorded once it prints."""
    result = server.cli("token", "issue", "--client", "tester")
    assert result.returncode == 0, result.stderr
    issued: dict[str, str] = json.loads(result.stdout)
    server.secrets.append(issued["access_token"])
    return issued


# --- reload under load -----------------------------------------------------------------


@pytest.mark.parametrize(
    "keep_alive",
    [
        pytest.param(False, id="fresh-connections"),
        pytest.param(True, id="kept-alive-connections"),
    ],
)
def test_three_reloads_under_load_fail_no_request_and_bring_the_new_setting(
    started: list[RealServer], tmp_path: Path, config: Path, keep_alive: bool
) -> None:
    """SIGHUP, ``hostcore reload``, then SIGHUP after a change to the configuration file,
    each once the workers of the one before answer: every request is answered 2xx, each
    reload brings two new workers, and the last one's setting (whoami's rate limit, in
    every answer's x-ratelimit-limit) is in effect once the workers before it are gone."""
    server = start(started, tmp_path, config)
    token = issue(server)["access_token"]
    generations = [workers(server)]
    assert len(generations[0]) == 2
    marks: list[tuple[int, int]] = []  # answers in when the HUP went, when the workers were new
    with Load(server, token, "reload-", keep_alive=keep_alive) as load:
        load.wait_answered(BETWEEN_STEPS, "requests before the first reload")
        for step in range(3):
            if step == 2:
                config.write_text(server_config(LIMIT_AFTER))
            sent_at = len(load.outcomes)
            if step == 1:
                reloaded = server.cli("reload")
                assert reloaded.returncode == 0, reloaded.stderr
                assert reloaded.stdout == (
                    f"hostcore (pid {server.process.pid}): configuration reloaded\n"
                )
            else:
                os.kill(server.process.pid, signal.SIGHUP)
            replaced = set().union(*generations)
            generations.append(
                wait_for_workers(server, f"the workers of reload {step + 1}", replacing=replaced)
            )
            marks.append((sent_at, len(load.outcomes)))
            load.wait_answered(BETWEEN_STEPS, f"requests after reload {step + 1}")
    outcomes = load.outcomes

    failed = [(o.request_id, o.status, o.error) for o in outcomes if o.status != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:6]}"
    assert len({pid for generation in generations for pid in generation}) == 8, generations
    for sent_at, renewed_at in marks:
        assert renewed_at > sent_at, "requests were answered while the workers were replaced"
    # A client appends its answer a moment after it came: the one answer each client may
    # have had in flight when the new workers were seen may still be an old worker's.
    settled = marks[2][1] + CLIENTS
    assert {o.limit for o in outcomes[: marks[2][0]]} == {str(LIMIT_BEFORE)}
    assert {o.limit for o in outcomes[settled:]} == {str(LIMIT_AFTER)}, (
        "once the old workers are gone, every answer comes from the new configuration"
    )
    last = outcomes[-1].request_id
    wait_for(lambda: last in {r for _, r in access_lines(server, "reload-")}, 10, "access lines")
    by_worker = {request_id: pid for pid, request_id in access_lines(server, "reload-")}
    answering = {by_worker[o.request_id] for o in outcomes[settled:]}
    # (Kept-alive connections may all have landed on one of the two.)
    assert answering and answering <= generations[3], "the last generation answers the last"
    for generation in generations:
        assert generation & set(by_worker.values()), f"workers {generation} answered nothing"
    assert server.process.poll() is None, "the master serves on"
    assert integrity(server) == ["ok"]


# --- one worker killed under load ------------------------------------------------------

# What a SIGKILLed worker's activity may lose: the rows it recorded and had not yet
# committed. Its writer commits what is buffered as soon as BATCH_SIZE rows are (or
# FLUSH_INTERVAL_S after the first, whichever comes first), so at the kill it holds
# - fewer than BATCH_SIZE rows waiting for the next flush, and
# - the rows of the flush under way: those it took (at most the BATCH_SIZE that woke
#   it, give or take the requests that ended in the same turn of the event loop) and
#   those recorded while it writes them (one INSERT of BATCH_SIZE rows against as many
#   HTTP round trips meanwhile: far fewer), together within another BATCH_SIZE;
# - and a request answered but not yet recorded (the row is made once the body is
#   sent): one per client at most.
LOST_AT_MOST = 2 * BATCH_SIZE + CLIENTS


def test_a_worker_killed_under_load_is_replaced_and_loses_at_most_one_flush_window(
    started: list[RealServer], tmp_path: Path, config: Path
) -> None:
    server = start(started, tmp_path, config)
    token = issue(server)["access_token"]
    first = workers(server)
    # Fresh connections: the kernel hands each to either worker, so both carry load.
    with Load(server, token, "kill-", keep_alive=False) as load:
        load.wait_answered(3 * BETWEEN_STEPS, "requests before the kill")
        served = [pid for pid, _ in access_lines(server, "kill-")]
        victim = max(first, key=served.count)  # the busier one
        os.kill(victim, signal.SIGKILL)  # a worker of the server this test started
        killed_at = len(load.outcomes)
        now = wait_for_workers(server, "the master to replace the worker", replacing={victim})
        recovered_at = len(load.outcomes)
        (replacement,) = now - first
        wait_for(
            lambda: replacement in {pid for pid, _ in access_lines(server, "kill-")},
            WORKERS_WITHIN_S,
            "the new worker to answer",
        )
        load.wait_answered(BETWEEN_STEPS, "requests after the recovery")
        assert integrity(server) == ["ok"], "the store is whole while it serves on"
    outcomes = load.outcomes
    assert now == first - {victim} | {replacement}

    # The requests under way on the killed worker had no answer: nothing else failed,
    # and nothing failed once the master had replaced it.
    unanswered = [index for index, o in enumerate(outcomes) if o.status is None]
    assert len(unanswered) <= CLIENTS, [outcomes[i] for i in unanswered]
    assert all(index < recovered_at + CLIENTS for index in unanswered), (killed_at, unanswered)
    assert {o.status for o in outcomes} <= {200, None}
    assert len(outcomes) - recovered_at >= BETWEEN_STEPS

    stop_group(server.process)  # SIGTERM: the other workers write what they buffered
    assert integrity(server) == ["ok"]
    lines = access_lines(server, "kill-")
    worker_of = {request_id: pid for pid, request_id in lines}
    answered = [o.request_id for o in outcomes if o.status == 200]
    rows = activity_request_ids(server, "kill-")
    lost = [request_id for request_id in answered if request_id not in rows]
    # Only the killed worker lost rows (an answer with no access line: the worker died
    # between the two), and only its last ones: its writer commits in the order it
    # recorded, which is the order of its access lines.
    assert {worker_of.get(request_id, victim) for request_id in lost} <= {victim}
    answered_by_victim = [request_id for pid, request_id in lines if pid == victim]
    written = [request_id for request_id in answered_by_victim if request_id in rows]
    assert written, "the killed worker had written rows before it was killed"
    assert answered_by_victim[: len(written)] == written, "what it lost is its last rows"
    assert len(rows & set(answered)) >= len(answered) - LOST_AT_MOST, (
        f"{len(lost)} rows lost of the {len(answered_by_victim)} the killed worker answered"
    )
    for pid in now:
        assert pid in worker_of.values(), f"worker {pid} answered nothing"


# --- a power cut -----------------------------------------------------------------------


def token_over_http(server: RealServer) -> dict[str, str]:
    """POST /api/v1/auth/token, HMAC-signed as client tester: issued by a worker."""
    body = b"{}"
    headers = signing.signed_headers(
        server.hmac_secret(), method="POST", path=TOKEN_PATH, query="", client="tester", body=body
    )
    sent = server.send(
        "POST", TOKEN_PATH, headers={**headers, "content-type": "application/json"}, content=body
    )
    assert sent.response.status_code == 200, sent.response.text
    issued: dict[str, str] = sent.response.json()
    server.secrets.append(issued["access_token"])
    return issued


def whoami(server: RealServer, token: str) -> httpx2.Response:
    return server.send("GET", WHOAMI, headers=authorization(token)).response


def test_a_power_cut_right_after_commits_loses_no_token_key_or_revocation(
    started: list[RealServer], tmp_path: Path, config: Path
) -> None:
    server = start(started, tmp_path, config)
    by_cli = issue(server)
    admin = authorization(by_cli["access_token"])
    rotated = server.send("POST", "/api/v1/auth/keys/rotate", headers=admin).response
    assert rotated.status_code == 200, rotated.text
    keys = server.cli("key", "list")
    assert keys.returncode == 0 and rotated.json()["kid"] in keys.stdout, keys
    secrets_before = {
        path.name: path.read_bytes()
        for path in (server.data_dir / "master.key", server.data_dir / "secrets" / "tester.secret")
    }
    revoked_by_cli = issue(server)
    revoking = server.cli("token", "revoke", "--jti", revoked_by_cli["jti"])
    assert revoking.stdout == "revoked 1 token(s)\n", revoking
    revoked_by_http = issue(server)
    by_http = token_over_http(server)
    # The last commits, each answered: then the power goes, before any other step.
    deleted = server.send(
        "DELETE", f"/api/v1/auth/tokens/{revoked_by_http['jti']}", headers=admin
    ).response
    assert deleted.json() == {"revoked": 1}, deleted.text
    tree = {server.process.pid, *workers(server)}
    for pid in tree:
        os.kill(pid, signal.SIGKILL)  # the server this test started, and its workers
    assert server.process.wait(timeout=STOP_TIMEOUT_S) == -signal.SIGKILL
    wait_for(lambda: all(gone(pid) for pid in tree), STOP_TIMEOUT_S, "the whole tree to die")
    assert integrity(server) == ["ok"], "the store is whole as the crash left it"

    restarted = start(started, tmp_path, config)  # the same data directory
    for token in (by_cli, by_http):
        answer = whoami(restarted, token["access_token"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["subject"] == "client:tester"
    for token in (revoked_by_cli, revoked_by_http):
        answer = whoami(restarted, token["access_token"])
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "Unauthorized", "detail": "token has been revoked"}
    assert restarted.cli("key", "list").stdout == keys.stdout, "the same keys, the same one signs"
    new = issue(restarted)
    assert kid_of(new["access_token"]) == rotated.json()["kid"]
    assert whoami(restarted, new["access_token"]).status_code == 200
    for name, data in secrets_before.items():
        assert next(restarted.data_dir.rglob(name)).read_bytes() == data, name
    listed = restarted.cli("token", "list", "--all").stdout
    for token in (by_cli, by_http, revoked_by_cli, revoked_by_http):
        assert token["jti"] in listed
    assert integrity(restarted) == ["ok"]


async def test_a_commit_is_on_the_disk_before_it_is_answered(tmp_path: Path) -> None:
    """The store's connections sync each commit (synchronous=FULL: 2) in WAL mode."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'hostcore.db'}")
    try:
        async with database.engine.connect() as connection:
            journal = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            synchronous = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()
    finally:
        await database.dispose()
    assert (journal, synchronous) == ("wal", 2)
