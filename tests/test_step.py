"""The step protocol's shared helpers: polling until a condition holds, and running a command
that must succeed; the local transport replaces only a regular file."""

from __future__ import annotations

import time

import pytest

from ors_migrate.actions.local import LocalTransport
from ors_migrate.errors import CommandFailed, InputError
from ors_migrate.step import PlannedAction, Preview, Target, poll_until, run_checked


def test_poll_until_returns_the_first_result_that_is_done() -> None:
    seen = iter(range(10))

    result, done = poll_until(lambda: next(seen), lambda n: n == 3, timeout_s=5, interval_s=0.01)

    assert (result, done) == (3, True)


def test_poll_until_gives_the_last_result_when_time_runs_out() -> None:
    calls = []
    started = time.monotonic()

    result, done = poll_until(
        lambda: calls.append(1) or len(calls), lambda n: False, timeout_s=0.2, interval_s=0.05
    )

    assert done is False and result == len(calls) >= 3
    assert 0.2 <= time.monotonic() - started < 1.0


def test_an_error_of_the_probe_ends_the_polling_at_once() -> None:
    calls = []

    def probe() -> int:
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        poll_until(probe, lambda n: True, timeout_s=5, interval_s=0.01)
    assert len(calls) == 1


def test_run_checked_raises_with_the_command_and_its_stderr(tmp_path) -> None:
    transport = LocalTransport("here", "linux")

    assert run_checked(transport, "echo ok").stdout == "ok\n"
    with pytest.raises(CommandFailed, match=r"on here: `echo out; echo why >&2; exit 3` exited 3"):
        run_checked(transport, "echo out; echo why >&2; exit 3")
    with pytest.raises(CommandFailed) as failed:
        run_checked(transport, "echo said; exit 1", shown_as="the script", stdout_when_silent=True)
    assert failed.value.command == "the script" and failed.value.stderr == "said"


def test_the_local_transport_replaces_only_a_regular_file(tmp_path) -> None:
    transport = LocalTransport("here", "linux")
    real = tmp_path / "options.real"
    real.write_text("[persistence]\ntype=cassandra\n")
    link = tmp_path / "options.cfg"
    link.symlink_to(real)
    with pytest.raises(InputError, match="symbolic link") as refused:
        transport.write_file_atomic(str(link), b"new\n", backup_path=str(link) + ".bak")
    assert refused.value.file == str(link) and link.is_symlink()
    assert real.read_text() == "[persistence]\ntype=cassandra\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["options.cfg", "options.real"]


def test_a_planned_action_carries_its_targets_fields_in_the_targets_order() -> None:
    target = Target(cluster="c", ha_pair="p", app="a", host="h", role="backup")
    change = {"section": "s", "option": "o", "old": "1", "old_known": True, "new": "2"}
    action = PlannedAction(
        "k", "options.set", target, {}, "backup", True, Preview("d", [], [change])
    )

    data = action.as_dict()
    without_old = action.as_dict(with_old=False)

    keys = list(data)
    assert keys[2 : 2 + len(target.as_dict())] == list(target.as_dict())
    assert {k: data[k] for k in target.as_dict()} == target.as_dict()
    assert data["option_changes"] == [change] and data["option_changes"][0] is not change
    assert without_old["option_changes"] == [{"section": "s", "option": "o", "new": "2"}]
