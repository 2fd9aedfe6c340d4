"""Safe by default, on the tiny file-and-shell site: rollback asks (no terminal and no --yes:
exit 2, nothing restarted), refuses a changed site file naming the change, undoes only what the
run changed; `abandon` ends a run without touching the estate; `run` refuses an estate already
on Redis (exit 3) and an unresolvable secret (exit 2) before creating a run; a renamed copy of
the site file cannot run against the same applications (exit 4).

Every start of an application appends its name to the file `starts` (the site's `start`
command), so "nothing restarted" is measured, not assumed."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, cli
from durable_runs import PARTIAL_ENABLE, cli_json, has_event, journal_events
from test_durable_runs import UPGRADE_ONLY
from tiny_site import (
    APPS,
    HELD_TIMEOUT_S,
    ROLLBACK_WITH_RESTART,
    VERIFY_VERSION,
    TinySite,
    gated_playbook,
    held_while,
    make_tiny_site,
)

from ors_migrate.journal import Journal


def counted_site(root: Path, **kwargs: object) -> TinySite:
    """A tiny site whose every application start is logged to `root/starts`."""
    root.mkdir(parents=True, exist_ok=True)
    log = shlex.quote(str(root / "starts"))
    return make_tiny_site(root, start=f"echo {{app}} >> {log}", **kwargs)  # type: ignore[arg-type]


def starts(site: TinySite) -> list[str]:
    path = site.root / "starts"
    return path.read_text().split() if path.exists() else []


def failed_after_enabling(site: TinySite, state: Path) -> str:
    """A run that set type=redis on the backup, switched over, then failed its verification
    and stopped there (no automatic rollback): the estate is half migrated."""
    playbook = gated_playbook(site, VERIFY_VERSION)
    site.write_playbook("tiny-rollback", ROLLBACK_WITH_RESTART)
    done = cli(
        "run", str(site.path), "--playbook", str(playbook), "--yes", "--no-auto-rollback",
        "--state-dir", str(state), *PARTIAL_ENABLE,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    run = cli_json("runs", "--state-dir", str(state))[-1]
    assert run["status"] == "failed"
    assert "type=redis" in site.options("ors-b").read_text()
    return str(run["run_id"])


def test_rollback_without_a_terminal_or_yes_exits_2_and_restarts_nothing(tmp_path):
    site = counted_site(tmp_path / "site", version="8.1.400.48")
    state = tmp_path / "state"
    run_id = failed_after_enabling(site, state)
    before = (starts(site), [site.options(a).read_text() for a in APPS], len(journal_events(state)))

    asked = cli("rollback", "--state-dir", str(state))

    assert asked.returncode == 2, asked.stderr
    assert "needs confirmation, but there is no terminal; nothing was done" in asked.stderr
    assert "applications whose options go back: ors-a, ors-b" in asked.stderr
    assert "restarts: 1, switchovers: 1" in asked.stderr
    after = (starts(site), [site.options(a).read_text() for a in APPS], len(journal_events(state)))
    assert after == before
    assert cli_json("status", run_id, "--state-dir", str(state))["status"] == "failed"

    confirmed = cli("rollback", "--yes", "--state-dir", str(state))
    assert confirmed.returncode == 0, confirmed.stderr
    assert len(starts(site)) == len(before[0]) + 1
    assert all("type=cassandra" in site.options(app).read_text() for app in APPS)


def test_rollback_after_the_site_file_changed_is_refused_naming_the_change(tmp_path):
    site = counted_site(tmp_path / "site", version="8.1.400.48")
    state = tmp_path / "state"
    run_id = failed_after_enabling(site, state)
    text = site.path.read_text()
    site.path.write_text(text.replace('  stop: "echo down', '  stop: "logger stopping; echo down'))
    assert site.path.read_text() != text
    before = starts(site)

    refused = cli("rollback", run_id, "--yes", "--state-dir", str(state))

    assert refused.returncode == 2, refused.stderr
    assert f"run {run_id} cannot be rolled back with the files as they are now" in refused.stderr
    assert f"the site file {site.path} changed since it started" in refused.stderr
    assert "runs other commands: `[here] logger stopping; echo down" in refused.stderr
    assert starts(site) == before
    assert "type=redis" in site.options("ors-b").read_text()


def test_rollback_of_a_run_that_changed_nothing_restarts_nothing_and_ends_it(tmp_path):
    site = counted_site(tmp_path / "site", version="8.1.400.48")
    state = tmp_path / "state"
    failed = cli(
        "run", str(site.path), "--playbook", str(site.write_playbook("u", UPGRADE_ONLY)),
        "--yes", "--state-dir", str(state),
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    before = (starts(site), [site.options(a).read_text() for a in APPS])

    back = cli("rollback", "--state-dir", str(state))  # no terminal, no --yes: nothing to ask

    assert back.returncode == 0, back.stderr
    assert "nothing to roll back: the run changed no option" in back.stderr
    assert (starts(site), [site.options(a).read_text() for a in APPS]) == before
    assert cli_json("runs", "--state-dir", str(state))[-1]["status"] == "rolled_back"


def test_abandon_ends_a_failed_run_without_touching_the_estate_and_a_new_run_can_start(tmp_path):
    site = counted_site(tmp_path / "site", version="8.1.400.48")
    state = tmp_path / "state"
    run_id = failed_after_enabling(site, state)
    playbook = str(site.write_playbook("u", UPGRADE_ONLY))
    new_run = ("run", str(site.path), "--playbook", playbook, "--yes", "--state-dir", str(state))
    blocked = cli(*new_run)
    assert blocked.returncode == 2 and f"abandon {run_id} --reason" in blocked.stderr
    before = (starts(site), [site.options(a).read_text() for a in APPS])

    site.path.rename(site.root / "gone.yaml")  # the estate behind the run is gone
    ended = cli("abandon", run_id, "--reason", "estate rebuilt", "--state-dir", str(state))
    site.root.joinpath("gone.yaml").rename(site.path)

    assert ended.returncode == 0, ended.stderr
    assert (starts(site), [site.options(a).read_text() for a in APPS]) == before
    assert cli_json("runs", "--state-dir", str(state))[-1]["status"] == "abandoned"
    assert cli_json("status", run_id, "--state-dir", str(state))["status"] == "abandoned"
    journal = Journal(state)
    try:
        (event,) = [e for e in journal.events(run_id) if e.kind == "abandoned"]
    finally:
        journal.close()
    assert event.payload["reason"] == "estate rebuilt" and event.payload["by"] == "root"
    again = cli("abandon", run_id, "--reason", "twice", "--state-dir", str(state))
    assert again.returncode == 2 and "is abandoned" in again.stderr
    site.install("8.1.401.12")
    assert cli(*new_run).returncode == 0


def holding_run(site: TinySite, state: Path, hold: Path) -> subprocess.Popen[bytes]:
    """A run of `site` that waits in its upgrade command while `hold` exists."""
    playbook = site.write_playbook("u", UPGRADE_ONLY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ors_migrate", "run", str(site.path), "--playbook", str(playbook),
         "--yes", "--state-dir", str(state)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not has_event("action_intent")(journal_events(state)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def test_a_renamed_copy_of_the_site_file_exits_4_while_the_first_runs(tmp_path):
    hold = tmp_path / "site" / "hold"
    site = make_tiny_site(
        tmp_path / "site", upgrade=held_while(hold), ready_timeout_s=HELD_TIMEOUT_S
    )
    hold.touch()
    state = tmp_path / "state"
    first = holding_run(site, state, hold)
    try:
        run_id = cli_json("runs", "--state-dir", str(state))[0]["run_id"]
        copy = tmp_path / "copy.yaml"
        copy.write_text(site.path.read_text().replace("name: tiny", "name: tiny-copy"))
        second = cli(
            "run", str(copy), "--playbook", str(site.root / "u.yaml"), "--yes",
            "--state-dir", str(state),
        )  # fmt: skip
        assert second.returncode == 4, second.stderr
        assert "application ors-a on host here is held by run" in second.stderr
        assert f"run {run_id} of site 'tiny'" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        aborted = cli("abandon", run_id, "--reason", "x", "--state-dir", str(state))
        assert aborted.returncode == 4, aborted.stderr
    finally:
        hold.unlink()
        first.wait(60)
    assert [r["site"] for r in cli_json("runs", "--state-dir", str(state))] == ["tiny"]


def test_rollback_without_a_run_id_refuses_to_guess_between_sites(tmp_path):
    state = tmp_path / "state"
    ids = []
    for name in ("tiny", "tiny-other"):
        site = counted_site(tmp_path / name, version="8.1.400.48")
        site.path.write_text(site.path.read_text().replace("name: tiny", f"name: {name}"))
        playbook = site.write_playbook("u", UPGRADE_ONLY)
        cli("run", str(site.path), "--playbook", str(playbook), "--yes", "--state-dir", str(state))
        ids.append(cli_json("runs", "--state-dir", str(state))[-1]["run_id"])

    refused = cli("rollback", "--yes", "--state-dir", str(state))

    assert refused.returncode == 2, refused.stderr
    assert "runs of 2 sites" in refused.stderr
    assert f"{ids[0]} (site tiny, failed)" in refused.stderr
    assert f"{ids[1]} (site tiny-other, failed)" in refused.stderr


def test_an_unresolvable_secret_exits_2_before_any_run_is_created(tmp_path):
    site = counted_site(tmp_path / "site", redis_password="ORSM_TEST_UNSET_PASSWORD")
    state = tmp_path / "state"
    done = cli(
        "run", str(site.path), "--playbook", str(gated_playbook(site)), "--yes",
        "--state-dir", str(state), *PARTIAL_ENABLE,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "environment variable ORSM_TEST_UNSET_PASSWORD is not set" in done.stderr
    assert cli_json("runs", "--state-dir", str(state)) == []
    assert starts(site) == []


def test_an_estate_already_on_redis_exits_3_with_zero_restarts_and_no_run(tmp_path):
    site = counted_site(tmp_path / "site")
    for app in APPS:
        options = site.options(app)
        options.write_text(options.read_text().replace("type=cassandra", "type=redis"))
    state = tmp_path / "state"
    done = cli(
        "run", str(site.path), "--playbook", str(gated_playbook(site)), "--yes",
        "--state-dir", str(state), *PARTIAL_ENABLE,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "already runs with [persistence] type=redis" in done.stderr
    assert "--playbook remove-cassandra" in done.stderr
    assert starts(site) == []
    assert cli_json("runs", "--state-dir", str(state)) == []


def test_runs_with_no_runs_says_so(tmp_path):
    shown = cli("runs", "--state-dir", str(tmp_path / "empty"))
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"no runs in {tmp_path / 'empty'}"
    assert json.loads(cli("runs", "--json", "--state-dir", str(tmp_path / "e")).stdout) == []


def test_only_the_applications_whose_options_the_run_changed_are_rolled_back(tmp_path):
    """ors-a's edit changed a value, ors-b's found every value in place, and no edit of the
    second state ended (it may have changed ors-a again): only ors-a goes back, and with no
    pair of a changed application, nothing restarts."""
    from ors_migrate.runner import load_playbook, make_plan
    from ors_migrate.site import load_site
    from ors_migrate.undo import changed_apps, restricted, summarize

    site = make_tiny_site(tmp_path / "site")
    loaded = load_site(site.path)
    forward = make_plan(loaded, load_playbook(str(gated_playbook(site))), read_current=False)
    rollback = make_plan(
        loaded,
        load_playbook(str(site.write_playbook("r", ROLLBACK_WITH_RESTART))),
        read_current=False,
    )
    journal = Journal(tmp_path / "state")
    try:
        run_id = journal.create_run(
            site_name="tiny", site_path=str(site.path), site_digest="d", playbook="gated",
            playbook_digest="d", plan_hash=forward.plan_hash,
            plan_json=json.dumps(forward.as_dict()),
        )  # fmt: skip
        keys = {a.target.app: a.key for a in forward.state("configure").actions}
        for app, old, new in (("ors-a", None, "x:1"), ("ors-b", "x:1", "x:1")):
            change = {"section": "persistence", "option": "redis-nodes", "old": old, "new": new}
            journal.record(run_id, "action_intent", phase="forward", action_key=keys[app],
                           payload={"app": app, "set": "preparation"})  # fmt: skip
            journal.record(run_id, "action_ended", phase="forward", action_key=keys[app],
                           payload={"observed": {"app": app, "changes": [change]}})  # fmt: skip
        apps = changed_apps(journal, journal.get_run(run_id))  # type: ignore[arg-type]
    finally:
        journal.close()

    assert apps == {"ors-a"}
    cut = restricted(rollback, apps, set())
    assert [(s.id, [a.target.app for a in s.actions]) for s in cut.states] == [
        ("disable-redis", ["ors-a"])
    ]
    assert summarize(cut, apps).restarts == summarize(cut, apps).switchovers == 0
    whole = restricted(rollback, apps, {"pair-1"})
    assert summarize(whole, apps).restarts == 1 and summarize(whole, apps).switchovers == 1


def test_at_a_terminal_rollback_shows_what_it_will_do_and_a_no_does_nothing(tmp_path):
    from pty_session import finish, spawn

    site = counted_site(tmp_path / "site", version="8.1.400.48")
    state = tmp_path / "state"
    run_id = failed_after_enabling(site, state)
    before = (starts(site), [site.options(a).read_text() for a in APPS])

    child = spawn("rollback", run_id, "--state-dir", str(state), cwd=REPO)
    child.expect("applications whose options go back: ors-a, ors-b")
    child.expect("restarts: 1, switchovers: 1")
    child.expect("Roll back now?")
    child.send("n")
    child.send("\r")
    assert finish(child) == 130
    assert (starts(site), [site.options(a).read_text() for a in APPS]) == before

    child = spawn("rollback", run_id, "--state-dir", str(state), cwd=REPO)
    child.expect("Roll back now?")
    child.send("y")
    child.send("\r")
    assert finish(child) == 0
    assert len(starts(site)) == len(before[0]) + 1
    assert all("type=cassandra" in site.options(app).read_text() for app in APPS)
