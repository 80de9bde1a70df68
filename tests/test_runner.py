"""The runner against real processes: capture, limits, cleanup and errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hostcore.config import RunnerSettings
from hostcore.errors import CommandFailed, CommandNotFound, CommandTimeout, Unavailable
from hostcore.runner import CommandResult, Runner
from tests.helpers import wait_until

PYTHON = sys.executable
# Bounds a wait that only a hang would reach.
HANG_GUARD_S = 30.0


def make_runner(**settings: Any) -> Runner:
    # A short default so a regression that hangs fails fast instead of stalling the suite.
    settings.setdefault("timeout_s", 5.0)
    return Runner(RunnerSettings(**settings))


@pytest.fixture
def runner() -> Runner:
    return make_runner()


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z"


async def wait_until_gone(pids: Sequence[int]) -> list[int]:
    """The pids still running once all are gone (or the guard ran out): SIGKILL lands
    quickly but not instantly."""
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: not any(map(is_running, pids)), HANG_GUARD_S, "the kill")
    return [pid for pid in pids if is_running(pid)]


def pids_in(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []


async def read_pids(path: Path, count: int) -> list[int]:
    """The pids a child wrote to ``path``, once all ``count`` of them are there."""
    await wait_until(lambda: len(pids_in(path)) == count, HANG_GUARD_S, f"{count} pids in {path}")
    return pids_in(path)


async def test_captures_stdout_stderr_and_exit(runner: Runner) -> None:
    result = await runner.run(["/bin/sh", "-c", "echo out; echo err >&2"])

    assert isinstance(result, CommandResult)
    assert result.argv == ("/bin/sh", "-c", "echo out; echo err >&2")
    assert result.ok
    assert result.returncode == 0
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"
    assert result.stdout_text == "out\n"
    assert result.stderr_text == "err\n"
    assert not result.stdout_truncated
    assert not result.stderr_truncated
    assert result.duration_s > 0


async def test_resolves_bare_names_on_path(runner: Runner) -> None:
    result = await runner.run(["echo", "hello"])

    assert result.argv == ("echo", "hello")
    assert result.stdout == b"hello\n"


async def test_text_replaces_invalid_utf8(runner: Runner) -> None:
    result = await runner.run(["printf", "caf\\351"])

    assert result.stdout == b"caf\xe9"
    assert result.stdout_text == "caf\ufffd"


async def test_nonzero_exit_is_returned_without_check(runner: Runner) -> None:
    result = await runner.run(["/bin/sh", "-c", "exit 3"])

    assert result.returncode == 3
    assert not result.ok


async def test_check_failure_names_the_command_and_exit_but_not_its_output(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    # The texts are assembled by printf, so they are in the output but not in argv.
    script = 'printf "token=%s" secret; printf "disk on %s" fire >&2; exit 2'

    with pytest.raises(CommandFailed) as caught:
        await runner.run(["/bin/sh", "-c", script], check=True)

    error = caught.value
    assert error.status_code == 502
    assert error.detail == f"command {shlex.join(['/bin/sh', '-c', script])!r} exited with status 2"
    assert "disk on fire" not in error.detail and "token=secret" not in error.detail


async def test_check_failure_logs_the_stderr_tail_as_a_warning(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hostcore.runner")
    script = 'printf "%05000d" 0 >&2; printf " disk on fire\\nforged line" >&2; exit 2'

    with pytest.raises(CommandFailed):
        await runner.run(["/bin/sh", "-c", script], check=True)

    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "exited with status 2" in record.getMessage()
    assert record.getMessage().endswith("disk on fire\\nforged line'")  # one line, escaped
    assert len(record.getMessage()) < 2000


async def test_check_names_the_signal_that_killed_the_child(runner: Runner) -> None:
    with pytest.raises(CommandFailed, match="killed by signal SIGTERM"):
        await runner.run(["/bin/sh", "-c", "kill -TERM $$"], check=True)


async def test_check_passes_on_success(runner: Runner) -> None:
    result = await runner.run(["true"], check=True)

    assert result.ok


async def test_input_is_written_to_stdin(runner: Runner) -> None:
    data = b"line one\nline two\x00binary\xff"

    result = await runner.run(["cat"], input=data)

    assert result.stdout == data


async def test_stdin_is_devnull_without_input(runner: Runner) -> None:
    # cat would wait forever on an inherited or open pipe.
    result = await runner.run(["cat"], timeout_s=2)

    assert result.ok
    assert result.stdout == b""


async def test_child_may_exit_without_reading_its_input(runner: Runner) -> None:
    result = await runner.run(["true"], input=b"x" * (4 * 1024 * 1024))

    assert result.ok


async def test_missing_command_is_unavailable(runner: Runner) -> None:
    with pytest.raises(CommandNotFound) as caught:
        await runner.run(["hostcore-no-such-command", "--flag"])

    error = caught.value
    assert isinstance(error, Unavailable)
    assert error.status_code == 503
    assert error.detail == "required command 'hostcore-no-such-command' is not installed"


async def test_missing_absolute_path_is_command_not_found(runner: Runner) -> None:
    with pytest.raises(CommandNotFound, match="'/nonexistent/hostcore' is not installed"):
        await runner.run(["/nonexistent/hostcore"])


async def test_non_executable_file_is_unavailable(runner: Runner, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)

    with pytest.raises(Unavailable, match="not executable") as caught:
        await runner.run([str(script)])

    assert not isinstance(caught.value, CommandNotFound)


async def test_missing_cwd_is_unavailable(runner: Runner, tmp_path: Path) -> None:
    missing = tmp_path / "gone"

    with pytest.raises(Unavailable, match="cannot be started") as caught:
        await runner.run(["true"], cwd=missing)

    assert str(missing) in caught.value.detail


async def test_cwd_is_used(runner: Runner, tmp_path: Path) -> None:
    result = await runner.run(["pwd"], cwd=tmp_path)

    assert result.stdout_text.strip() == str(tmp_path)


async def test_timeout_kills_child_and_grandchild(tmp_path: Path) -> None:
    runner = make_runner(timeout_s=0.3)
    pid_file = tmp_path / "pids"
    script = 'sleep 30 & echo $$ $! > "$1"; sleep 30'

    task = asyncio.create_task(runner.run(["/bin/sh", "-c", script, "sh", str(pid_file)]))
    pids = await read_pids(pid_file, 2)
    with pytest.raises(CommandTimeout) as caught:
        await task

    error = caught.value
    assert error.status_code == 504
    assert "timed out after 0.3 s" in error.detail
    assert "/bin/sh -c" in error.detail
    assert await wait_until_gone(pids) == []


async def test_timeout_argument_overrides_settings(runner: Runner) -> None:
    # The settings' timeout (5 s) or sleep's own end (30 s) would name another figure.
    with pytest.raises(CommandTimeout, match=r"'sleep 30' timed out after 0\.2 s"):
        await runner.run(["sleep", "30"], timeout_s=0.2)


async def test_cancelling_a_run_kills_the_process_group(runner: Runner, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = 'sleep 30 & echo $$ $! > "$1"; sleep 30'

    task = asyncio.create_task(runner.run(["/bin/sh", "-c", script, "sh", str(pid_file)]))
    pids = await read_pids(pid_file, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await wait_until_gone(pids) == []


async def test_output_is_capped_without_blocking_the_child() -> None:
    runner = make_runner(max_output_bytes=64 * 1024)
    # stderr is written first and in full: reading the streams one after the
    # other would leave the child blocked on a full stderr pipe.
    script = (
        "import sys\n"
        "sys.stderr.buffer.write(b'e' * 5_000_000); sys.stderr.flush()\n"
        "sys.stdout.buffer.write(b'o' * 5_000_000)\n"
    )

    result = await runner.run([PYTHON, "-c", script])

    assert result.ok
    assert result.stdout == b"o" * 64 * 1024
    assert result.stderr == b"e" * 64 * 1024
    assert result.stdout_truncated
    assert result.stderr_truncated


async def test_output_exactly_at_the_cap_is_not_truncated() -> None:
    runner = make_runner(max_output_bytes=2048)

    result = await runner.run([PYTHON, "-c", "import sys; sys.stdout.write('x' * 2048)"])

    assert len(result.stdout) == 2048
    assert not result.stdout_truncated


async def test_concurrency_is_limited(tmp_path: Path) -> None:
    runner = make_runner(max_concurrency=2)
    running = tmp_path / "running"
    running.mkdir()
    counts = tmp_path / "counts"
    # Each child marks itself running, records how many are running, and unmarks
    # itself before exiting: a count above the limit means too many overlapped.
    script = 'touch "$1/$2"; ls "$1" | wc -l >> "$3"; sleep 0.3; rm "$1/$2"'

    await asyncio.gather(
        *(
            runner.run(["/bin/sh", "-c", script, "sh", str(running), str(n), str(counts)])
            for n in range(5)
        )
    )

    seen = [int(line) for line in counts.read_text().split()]
    assert len(seen) == 5
    assert max(seen) == 2


def test_runner_outlives_event_loops() -> None:
    runner = make_runner(max_concurrency=1)

    async def contend() -> None:
        # Two runs for one slot: the second waits on the semaphore, which ties
        # a semaphore to the loop it waited in.
        await asyncio.gather(runner.run(["true"]), runner.run(["true"]))

    asyncio.run(contend())
    asyncio.run(contend())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("ls -l", "must be a list of strings, not str"),
        (b"ls", "must be a list of strings, not bytes"),
        ({"ls"}, "must be a list of strings, not set"),
        ([], "must not be empty"),
        (["echo", b"hi"], r"argv\[1\] must be a str, not bytes"),
        (["echo", 1], r"argv\[1\] must be a str, not int"),
        (["echo", "a\0b"], r"argv\[1\] contains a NUL byte"),
        ([""], "command name or an absolute path"),
        (["bin/echo"], "command name or an absolute path"),
    ],
)
async def test_malformed_argv_is_a_value_error(runner: Runner, argv: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await runner.run(argv)


async def test_non_positive_timeout_is_a_value_error(runner: Runner) -> None:
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        await runner.run(["true"], timeout_s=0)


async def test_shell_metacharacters_are_passed_literally(runner: Runner) -> None:
    hostile = "$(id); rm -rf / `id` | cat > /tmp/x && * ~ \"'"

    result = await runner.run(["echo", hostile])

    assert result.stdout_text == hostile + "\n"


async def test_default_environment_is_minimal(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTCORE_TEST_SECRET", "hunter2")

    result = await runner.run(["env"])

    variables = dict(line.split("=", 1) for line in result.stdout_text.splitlines())
    assert "HOSTCORE_TEST_SECRET" not in variables
    assert set(variables) == {"PATH", "LC_ALL", "LANG"}
    assert variables["LC_ALL"] == "C"
    assert variables["LANG"] == "C"


async def test_env_entries_are_added(runner: Runner) -> None:
    result = await runner.run(["env"], env={"HOSTCORE_EXTRA": "1"})

    variables = dict(line.split("=", 1) for line in result.stdout_text.splitlines())
    assert variables["HOSTCORE_EXTRA"] == "1"
    assert variables["LC_ALL"] == "C"


async def test_env_path_is_used_to_find_the_command(runner: Runner) -> None:
    with pytest.raises(CommandNotFound):
        await runner.run(["echo", "hi"], env={"PATH": "/nonexistent"})


async def test_logs_command_and_exit_at_debug(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.runner")

    await runner.run(["/bin/sh", "-c", "exit 4"], env={"HOSTCORE_TEST_SECRET": "hunter2"})

    assert "\"/bin/sh -c 'exit 4'\" exited with 4 in" in caplog.text
    assert "hunter2" not in caplog.text
