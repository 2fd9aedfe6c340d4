"""The estate lock: a copy of a site file under another name cannot run against the same
applications and options files while the first runs, and is refused naming the run that holds
them, never a run killed earlier; a claim is all or nothing, a killed holder needs no unlock,
and its files are created 0600 in a 0700 directory, never through a symlink, and never over
something that is not a regular file. (The refusal through `ors-migrate run` is
test_safe_by_default's renamed-copy test; a killed run resumed without unlocking,
test_durable_runs'.)"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_site import make_tiny_site

from ors_migrate.errors import RunLocked
from ors_migrate.estate_lock import claim_digest, estate_claims
from ors_migrate.journal import RunLock
from ors_migrate.site import load_site
from ors_migrate.statedir import StateDirError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def claims(tmp_path: Path) -> dict[str, str]:
    """The tiny site's claims: two applications and their two options files."""
    return estate_claims(load_site(make_tiny_site(tmp_path / "site").path).site)


def claim_files(state: Path, claims: dict[str, str]) -> list[Path]:
    return [state / "locks" / "estate" / f"{claim_digest(key)}.lock" for key in sorted(claims)]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_copy_under_another_name_is_refused_naming_the_run_that_holds_the_claim(tmp_path, claims):
    state = tmp_path / "state"
    first = RunLock(state, "tiny", claims)
    first.acquire("run-1")
    try:
        shared = dict(list(claims.items())[1:])  # the copy shares all but one claim
        copy = RunLock(state, "tiny-copy", shared)
        with pytest.raises(RunLocked) as refused:
            copy.acquire("run-2")
        message = str(refused.value)
        first_shared = shared[min(shared)]  # claims are taken in a fixed order
        assert message.startswith(f"{first_shared} is held by run run-1 of site 'tiny'")
        assert f"(pid {os.getpid()})" in message
        assert copy.holder() is None  # refused: nothing of the copy's run is left behind
        assert [mode(p) for p in claim_files(state, claims)] == [0o600] * len(claims)
        assert mode(state / "locks" / "estate") == 0o700
    finally:
        first.release()
    copy.acquire("run-2")  # the claims are free again once the first run ends
    copy.release()


def test_claims_are_all_or_none(tmp_path, claims):
    """A run refused on its last claim keeps none of the others."""
    state = tmp_path / "state"
    keys = sorted(claims)
    last = RunLock(state, "last", {keys[-1]: claims[keys[-1]]})
    last.acquire("run-last")
    refused = RunLock(state, "all", claims)
    with pytest.raises(RunLocked):
        refused.acquire("run-all")
    last.release()
    others = RunLock(state, "first", {keys[0]: claims[keys[0]]})
    others.acquire("run-first")  # the claim taken before the refusal was let go
    others.release()


HOLD = """
import sys, time
from pathlib import Path
from ors_migrate.estate_lock import estate_claims
from ors_migrate.journal import RunLock
from ors_migrate.site import load_site
lock = RunLock(Path(sys.argv[1]), "killed", estate_claims(load_site(sys.argv[2]).site))
lock.acquire("run-killed")
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_needs_no_unlock_and_is_never_named(tmp_path, claims):
    """The killed run's holder file stays, listing the claims; the next runs take them, and a
    run refused later names the live holder, not the killed one."""
    state = tmp_path / "state"
    site = tmp_path / "site" / "site.yaml"
    held = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state), str(site)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert held.stdout is not None and held.stdout.readline() == "held\n"
        with pytest.raises(RunLocked, match=f"held by run run-killed .* \\(pid {held.pid}\\)"):
            RunLock(state, "copy", claims).acquire("run-copy")
    finally:
        held.send_signal(signal.SIGKILL)
        held.wait()
        assert held.stdout is not None
        held.stdout.close()
    stale = state / "locks" / "killed.holder.json"
    assert stale.exists() and claim_digest(sorted(claims)[0]) in stale.read_text()

    live = RunLock(state, "copy", claims)
    live.acquire("run-copy")
    try:
        with pytest.raises(RunLocked) as refused:
            RunLock(state, "another", claims).acquire("run-another")
        assert "held by run run-copy of site 'copy'" in str(refused.value)
    finally:
        live.release()


@pytest.mark.parametrize("planted", ["symlink", "fifo", "directory"])
def test_a_claim_file_that_is_a_symlink_or_not_a_regular_file_is_refused_and_left_alone(
    tmp_path, claims, planted
):
    state = tmp_path / "state"
    made = RunLock(state, "tiny", claims)
    made.acquire("run-0")  # the directories and the claim files, as a first run leaves them
    made.release()
    target = tmp_path / "root-only"
    target.write_text("precious\n")
    os.chmod(target, 0o600)
    path = claim_files(state, claims)[-1]
    path.unlink()
    if planted == "symlink":
        path.symlink_to(target)
    elif planted == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path.mkdir(mode=0o700)
    lock = RunLock(state, "tiny-copy", claims)

    with pytest.raises(StateDirError, match=f"{path}: (is a symbolic link|is not a regular file)"):
        lock.acquire("run-1")

    assert target.read_text() == "precious\n" and mode(target) == 0o600
    is_kind = {"symlink": stat.S_ISLNK, "fifo": stat.S_ISFIFO, "directory": stat.S_ISDIR}[planted]
    assert is_kind(os.lstat(path).st_mode)  # left as it was, not replaced
    assert lock.holder() is None
    rest = {key: claims[key] for key in sorted(claims)[:-1]}
    free = RunLock(state, "free", rest)
    free.acquire("run-2")  # the claims taken before the refusal were let go
    free.release()
