"""The state directory is trusted only when the operator alone could have written it: created
0700 with 0600 files, a directory or file of another user (or writable by group or others)
refused with exit 2 naming the path, nothing followed through a symlink, a truncated or swapped
journal refused, and the commands that only read create nothing."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import cli
from needs import require

from ors_migrate.journal import Journal, RunLock
from ors_migrate.statedir import StateDirError

OTHER_USER = "orsm-other"


@pytest.fixture(scope="module")
def other_user() -> pwd.struct_passwd:
    """A second local user, as on a shared jump host."""
    require("root")
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", OTHER_USER], check=True)
        return pwd.getpwnam(OTHER_USER)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def journal_in(state: Path) -> Path:
    Journal(state).close()
    return state / "journal.sqlite3"


def test_state_directory_is_created_0700_with_journal_and_lock_0600(tmp_path):
    state = tmp_path / "deep" / "state"
    journal = journal_in(state)
    lock = RunLock(state, "tiny")
    lock.acquire("r1")
    try:
        assert mode(state) == 0o700
        assert mode(journal) == 0o600
        assert mode(lock.lock_path) == 0o600
        assert mode(lock.info_path) == 0o600
        assert mode(state / "locks") == 0o700
    finally:
        lock.release()


@pytest.mark.parametrize("command", [["runs"], ["status"], ["report"]])
def test_reading_commands_create_nothing(tmp_path, command):
    state = tmp_path / "state"
    result = cli(*command, "--state-dir", str(state))
    assert not state.exists()
    if command == ["runs"]:
        assert result.returncode == 0
        assert f"no runs in {state}" in result.stdout
    else:
        assert result.returncode == 2
        assert f"no runs in {state}" in result.stderr


@pytest.mark.parametrize("bits, who", [(0o770, "group"), (0o707, "others")])
def test_state_directory_writable_by_group_or_others_is_refused(tmp_path, bits, who):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, bits)
    result = cli("runs", "--state-dir", str(state))
    assert result.returncode == 2
    assert str(state) in result.stderr and f"writable by {who}" in result.stderr
    assert list(state.iterdir()) == []


def test_state_directory_of_another_user_is_refused(tmp_path, other_user):
    state = tmp_path / "state"
    journal_in(state)
    os.chown(state, other_user.pw_uid, other_user.pw_gid)
    for command in (["runs"], ["rollback", "--yes"], ["status"]):
        result = cli(*command, "--state-dir", str(state))
        assert result.returncode == 2, command
        assert f"{state}" in result.stderr and f"owned by uid {other_user.pw_uid}" in result.stderr


def test_journal_planted_by_another_user_is_refused(tmp_path, other_user):
    state = tmp_path / "state"
    journal = journal_in(state)
    os.chown(journal, other_user.pw_uid, other_user.pw_gid)
    result = cli("runs", "--state-dir", str(state))
    assert result.returncode == 2
    assert f"{journal}" in result.stderr and "owned by uid" in result.stderr


def test_another_user_cannot_even_enter_the_state_directory(tmp_path, other_user):
    """The 0700 directory keeps a second local user from planting anything at all."""
    state = tmp_path / "state"
    journal_in(state)
    os.chmod(tmp_path, 0o755)
    planted = subprocess.run(
        [
            "setpriv",
            f"--reuid={other_user.pw_uid}",
            f"--regid={other_user.pw_gid}",
            "--clear-groups",
            "sh",
            "-c",
            f"ln -s /etc/shadow {state}/locks-planted",
        ],
        capture_output=True,
        text=True,
    )
    assert planted.returncode != 0
    assert "Permission denied" in planted.stderr
    assert not (state / "locks-planted").is_symlink()


def test_symlinked_journal_is_refused_and_its_target_untouched(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "chosen-by-planter"
    (state / "journal.sqlite3").symlink_to(target)
    for command in (["runs"], ["rollback", "--yes"]):
        result = cli(*command, "--state-dir", str(state))
        assert result.returncode == 2, command
        assert "journal.sqlite3: is a symbolic link" in result.stderr
    assert not target.exists()


@pytest.mark.parametrize("which", ["lock_path", "info_path"])
def test_symlinked_lock_or_holder_is_refused_and_its_target_untouched(tmp_path, which):
    state = tmp_path / "state"
    journal_in(state)
    (state / "locks").mkdir(mode=0o700)
    target = tmp_path / "root-only"
    target.write_text("precious\n")
    os.chmod(target, 0o600)
    lock = RunLock(state, "tiny")
    getattr(lock, which).symlink_to(target)
    with pytest.raises(StateDirError, match="symbolic link"):
        lock.acquire("r1")
    lock.release()
    assert target.read_text() == "precious\n"
    assert mode(target) == 0o600


def test_truncated_journal_is_refused_not_read_as_no_runs(tmp_path):
    state = tmp_path / "state"
    journal = journal_in(state)
    journal.write_bytes(b"")
    result = cli("runs", "--state-dir", str(state))
    assert result.returncode == 2
    assert f"{journal}: is empty" in result.stderr
    assert "no runs" not in result.stdout


def test_replaced_journal_is_refused(tmp_path):
    """A journal copied in from elsewhere (another state directory) is not this directory's."""
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    journal = journal_in(state)
    other = journal_in(elsewhere)
    shutil.copyfile(other, journal)
    result = cli("runs", "--state-dir", str(state))
    assert result.returncode == 2
    assert "not the journal this state directory created" in result.stderr


def test_deleted_journal_is_refused(tmp_path):
    state = tmp_path / "state"
    journal_in(state).unlink()
    result = cli("runs", "--state-dir", str(state))
    assert result.returncode == 2
    assert "journal.sqlite3: is missing" in result.stderr


@pytest.mark.parametrize(
    "where, cause",
    [
        ("", "empty path"),
        ("/etc/hostname", "is not a directory"),
        ("/proc", "is read-only"),
        ("READONLY", "is read-only (mode 0500)"),
    ],
)
def test_unusable_state_directory_exits_2_naming_the_cause(tmp_path, where, cause):
    if where == "READONLY":
        where = str(tmp_path / "ro")
        os.mkdir(where, 0o500)
    for command in (["runs"], ["run", "site.yaml", "--yes"]):
        result = cli(*command, "--state-dir", where)
        assert result.returncode == 2, (command, result.stderr)
        assert cause in result.stderr
        assert "internal error" not in result.stderr


@pytest.mark.parametrize("planted", ["tiny.lock", "tiny.holder.json"])
def test_run_with_a_symlinked_lock_or_holder_exits_2_and_the_target_is_untouched(tmp_path, planted):
    from tiny_site import make_tiny_site

    site = make_tiny_site(tmp_path / "site")
    state = tmp_path / "state"
    journal_in(state)
    (state / "locks").mkdir(mode=0o700)
    target = tmp_path / "root-only"
    target.write_text("precious\n")
    os.chmod(target, 0o600)
    (state / "locks" / planted).symlink_to(target)

    result = cli("run", str(site.path), "--yes", "--state-dir", str(state))

    assert result.returncode == 2, result.stderr
    assert f"{state / 'locks' / planted}: is a symbolic link" in result.stderr
    assert target.read_text() == "precious\n" and mode(target) == 0o600
    assert (state / "locks" / planted).is_symlink()


def test_a_symlink_planted_by_another_user_in_a_shared_state_directory_is_never_followed(
    tmp_path, other_user
):
    """The attack of the issue: a state directory others may write, a holder path planted by a
    second local user pointing at a root-only file. Root's run refuses the directory (exit 2)
    and the file is untouched."""
    import tempfile

    from tiny_site import make_tiny_site

    site = make_tiny_site(tmp_path / "site")
    shared = Path(tempfile.mkdtemp(prefix="orsm-shared-"))  # reachable by the other user
    try:
        os.chmod(shared, 0o755)
        state = shared / "state"
        state.mkdir()
        os.chmod(state, 0o1777)
        target = shared / "root-only"
        target.write_text("precious\n")
        os.chmod(target, 0o600)
        planted = subprocess.run(
            ["setpriv", f"--reuid={other_user.pw_uid}", f"--regid={other_user.pw_gid}",
             "--clear-groups", "sh", "-c",
             f"mkdir -m 777 {state}/locks && ln -s {target} {state}/locks/tiny.holder.json"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert planted.returncode == 0, planted.stderr

        result = cli("run", str(site.path), "--yes", "--state-dir", str(state))

        assert result.returncode == 2, result.stderr
        assert f"{state}: the directory is writable by group and others" in result.stderr
        assert target.read_text() == "precious\n" and mode(target) == 0o600
        assert sorted(p.name for p in state.iterdir()) == ["locks"]
    finally:
        shutil.rmtree(shared)
