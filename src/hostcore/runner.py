"""The one place hostcore starts a process.

Every command hostcore runs goes through :class:`Runner`, so the rules that keep
a small device safe are enforced once instead of being remembered at every call
site (ruff's banned-api rule TID251 rejects ``subprocess`` and
``asyncio.create_subprocess_*`` anywhere else):

* an argv list, never a shell, so arguments that came from a request cannot
  become shell syntax;
* a timeout always; on expiry the child's whole process group is killed, so
  grandchildren cannot outlive the request;
* output capped per stream, and both streams drained concurrently, so a chatty
  child can neither exhaust memory nor block on a full pipe;
* a minimal, fixed environment (``LC_ALL=C``) so output is parseable and the
  server's own environment, with any secrets in it, is not handed down;
* a limit on how many processes run at once;
* a typed :class:`CommandResult`, and failures raised as hostcore errors
  (:class:`~hostcore.errors.CommandNotFound`,
  :class:`~hostcore.errors.CommandTimeout`,
  :class:`~hostcore.errors.CommandFailed`) that map to HTTP statuses;
* a command's output never reaches a client: it may quote a request's values,
  paths, or the host's secrets. A failure names the command and how it ended;
  the tail of its stderr goes to the log, as one escaped line.

Arguments are logged at DEBUG and appear in error details, and any local user
can read them from ``/proc``: pass secrets through ``input``, never in argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hostcore.config import RunnerSettings
from hostcore.errors import CommandFailed, CommandNotFound, CommandTimeout, Unavailable

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READ_CHUNK_BYTES = 64 * 1024
_LOGGED_STDERR_CHARS = 1000
_COMMAND_DESCRIPTION_CHARS = 200
# After SIGKILL the group normally dies within milliseconds; the bound only
# matters for a process stuck in the kernel or one that left the group and
# still holds our pipes.
_KILL_GRACE_S = 2.0


def replace_this_process(argv: Sequence[str], environment: Mapping[str, str]) -> NoReturn:
    """Become ``argv`` (``execv``: the same pid and open descriptors, this process's
    environment plus ``environment``). ``hostcore serve`` does, to run the server
    without the command line's framework in memory; nothing a request sent gets here."""
    os.environ.update(environment)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], list(argv))  # noqa: S606 - an argv list, never a shell


@dataclass(frozen=True)
class CommandResult:
    """What a finished process left behind; each stream holds at most the configured cap."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


class Runner:
    """Runs commands under the limits in :class:`~hostcore.config.RunnerSettings`."""

    def __init__(self, settings: RunnerSettings) -> None:
        self.settings = settings
        # The semaphore is created inside a running loop, one per loop, because an
        # asyncio primitive used from a second loop raises; a Runner may be built
        # before any loop exists and outlive one (tests, TestClient portals).
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run ``argv`` to completion and return what it printed and how it exited.

        ``env`` entries are added to the minimal default environment. Raises
        ``CommandNotFound`` when the executable is missing, ``Unavailable`` when it
        cannot be started, ``CommandTimeout`` when it outlives ``timeout_s`` (the
        settings' default when None) and, with ``check``, ``CommandFailed`` on a
        non-zero exit. A malformed ``argv`` is a programming error: ``ValueError``.
        """
        args = _validated_argv(argv)
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout!r}")
        child_env = _child_environment(env)
        executable = _resolve_executable(args[0], child_env["PATH"])

        async with self._semaphore():
            result = await self._run_process(executable, args, timeout, input, child_env, cwd)

        logger.debug(
            "command %s exited with %d in %.3f s",
            _describe(args),
            result.returncode,
            result.duration_s,
        )
        if check and not result.ok:
            detail = f"command {_describe(args)} {describe_exit(result.returncode)}"
            logger.warning(
                "%s; stderr ends: %r", detail, result.stderr_text[-_LOGGED_STDERR_CHARS:]
            )
            raise CommandFailed(detail)
        return result

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.settings.max_concurrency)
        return slots

    async def _run_process(
        self,
        executable: str,
        argv: tuple[str, ...],
        timeout_s: float,
        input: bytes | None,
        env: dict[str, str],
        cwd: Path | None,
    ) -> CommandResult:
        logger.debug("running %s", _describe(argv))
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                executable,
                *argv[1:],
                stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                # Its own process group, so a timeout can kill everything it spawned.
                start_new_session=True,
            )
        except OSError as exc:
            raise _start_error(argv, executable, exc) from exc

        assert process.stdout is not None and process.stderr is not None
        cap = self.settings.max_output_bytes
        stdout_task = asyncio.create_task(_read_capped(process.stdout, cap))
        stderr_task = asyncio.create_task(_read_capped(process.stderr, cap))
        exit_task = asyncio.create_task(process.wait())
        tasks: set[asyncio.Task[object]] = {stdout_task, stderr_task, exit_task}
        if input is not None:
            assert process.stdin is not None
            tasks.add(asyncio.create_task(_feed(process.stdin, input)))

        try:
            # asyncio.wait, unlike gather, leaves the tasks running when the timeout
            # fires, so the pipes keep draining while the group is killed.
            async with asyncio.timeout(timeout_s):
                await asyncio.wait(tasks)
        except TimeoutError:
            await _kill_group(process, tasks)
            logger.debug("command %s timed out after %g s", _describe(argv), timeout_s)
            raise CommandTimeout(
                f"command {_describe(argv)} timed out after {timeout_s:g} s and was killed"
            ) from None
        except BaseException:
            await _kill_group(process, tasks)
            raise

        stdout, stdout_truncated = stdout_task.result()
        stderr, stderr_truncated = stderr_task.result()
        return CommandResult(
            argv=argv,
            returncode=exit_task.result(),
            stdout=stdout,
            stderr=stderr,
            duration_s=time.monotonic() - started,
            stdout_truncated=stdout_truncated,
            stderr_truncated=stderr_truncated,
        )


def _validated_argv(argv: Sequence[str]) -> tuple[str, ...]:
    # A str or bytes is itself a sequence; run("ls -l") would otherwise try to
    # execute "l", "s", " ", ... one character at a time.
    if isinstance(argv, str | bytes) or not isinstance(argv, Sequence):
        raise ValueError(f"argv must be a list of strings, not {type(argv).__name__}: {argv!r}")
    if not argv:
        raise ValueError("argv must not be empty")
    for index, item in enumerate(argv):
        if not isinstance(item, str):
            raise ValueError(f"argv[{index}] must be a str, not {type(item).__name__}: {item!r}")
        if "\0" in item:
            raise ValueError(f"argv[{index}] contains a NUL byte: {item!r}")
    program = argv[0]
    # A relative path would be resolved against whatever directory the server
    # happens to run in, not against cwd=.
    if not program or ("/" in program and not program.startswith("/")):
        raise ValueError(f"argv[0] must be a command name or an absolute path, got {program!r}")
    return tuple(argv)


def _search_path() -> str:
    """The server's PATH plus the sbin directories a non-root service often lacks."""
    parts = [part for part in os.environ.get("PATH", "").split(os.pathsep) if part]
    parts += [part for part in DEFAULT_PATH.split(os.pathsep) if part not in parts]
    return os.pathsep.join(parts)


def _child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    environment = {"PATH": _search_path(), "LC_ALL": "C", "LANG": "C"}
    environment.update(extra or {})
    return environment


def _resolve_executable(program: str, search_path: str) -> str:
    """The path to execute, found the way the child's own PATH would find it."""
    found = shutil.which(program, path=search_path)
    if found is not None:
        return found
    if program.startswith("/") and Path(program).is_file():
        raise Unavailable(f"command {program!r} is not executable (permission denied)")
    raise CommandNotFound(f"required command {program!r} is not installed")


def _start_error(argv: tuple[str, ...], executable: str, exc: OSError) -> Unavailable:
    # which() already vouched for the executable; these cover a file removed
    # since, a missing script interpreter, a noexec mount or a missing cwd.
    if isinstance(exc, FileNotFoundError) and exc.filename == executable:
        return CommandNotFound(f"required command {argv[0]!r} is not installed")
    if isinstance(exc, PermissionError):
        return Unavailable(f"command {argv[0]!r} cannot be started: permission denied")
    where = f" ({exc.filename})" if exc.filename and exc.filename != executable else ""
    return Unavailable(f"command {argv[0]!r} cannot be started: {exc.strerror}{where}")


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Keep the first ``cap`` bytes; read and drop the rest so the writer never blocks."""
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(_READ_CHUNK_BYTES):
        room = cap - len(kept)
        if len(chunk) > room:
            truncated = True
            chunk = chunk[:room]
        kept += chunk
    return bytes(kept), truncated


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    # A child may exit, or be killed, without reading all its input; that is its
    # business, and its exit status says what happened.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()


async def _kill_group(
    process: asyncio.subprocess.Process, tasks: set[asyncio.Task[object]]
) -> None:
    """SIGKILL the child's process group, then reap it and let the pipes reach EOF."""
    # The group may already be empty: the child exited and left nothing behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    _, pending = await asyncio.wait(tasks, timeout=_KILL_GRACE_S)
    for task in pending:
        task.cancel()


def _describe(argv: Sequence[str]) -> str:
    """The command as a quoted shell line, shortened for messages."""
    line = shlex.join(argv)
    if len(line) > _COMMAND_DESCRIPTION_CHARS:
        line = line[: _COMMAND_DESCRIPTION_CHARS - 1] + "…"
    return repr(line)


def describe_exit(returncode: int) -> str:
    """How a process ended, for messages: "exited with status 1", "was killed by signal SIGKILL"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"
