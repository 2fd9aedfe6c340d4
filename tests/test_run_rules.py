"""`run` starts only from a site and playbook that break no documented rule; an override is
deliberate, names the rule by its id, and is journaled with who made it."""

from __future__ import annotations

from conftest import cli
from tiny_site import gated_playbook, make_tiny_site

from ors_migrate.journal import Journal


def test_run_refuses_a_rule_error_and_journals_an_explicit_override(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    playbook = gated_playbook(site)
    state = str(tmp_path / "state")
    before = {p: p.read_bytes() for p in (tmp_path / "site").rglob("*.ini")}

    refused = cli("run", str(site.path), "--playbook", str(playbook), "--yes", "--state-dir", state)
    assert refused.returncode == 2
    assert "[ors.one-store-per-cluster]" in refused.stderr and "nothing was run" in refused.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "site").rglob("*.ini")} == before

    overridden = cli(
        "run",
        str(site.path),
        "--playbook",
        str(playbook),
        "--yes",
        "--state-dir",
        state,
        "--override-rule",
        "ors.one-store-per-cluster",
    )
    assert overridden.returncode == 0, overridden.stderr[-2000:]
    journal = Journal(tmp_path / "state")
    try:
        run = journal.runs()[-1]
        events = [e for e in journal.events(run.run_id) if e.kind == "rules_overridden"]
    finally:
        journal.close()
    assert [e.payload["rules"] for e in events] == [["ors.one-store-per-cluster"]]
    assert events[0].payload["by"]
