"""Rehearsing a site's own migration: `lab up --from SITE` builds a lab shaped like the site and
writes a site file that differs only in what must point at the lab, with the same plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, cli
from ruamel.yaml import YAML

from ors_migrate.lab.from_site import rehearsal_of, rehearsal_site_text
from ors_migrate.lab.lab import LabError
from ors_migrate.lab.layout import LabLayout
from ors_migrate.rehearsal import plan_outline
from ors_migrate.site import load_site

EXAMPLE = REPO / "examples" / "site.yaml"
# What `lab up --from` may change; everything else must be the production file's own.
POINTS_AT_THE_LAB = {"name", "hosts", "options_backend", "services", "rehearsal_of"}


def fake_lab_config(root: Path, nodes: int) -> dict[str, object]:
    tls = root / "redis" / "tls"
    return {
        "redis_nodes": [f"127.0.0.1:{30001 + i}" for i in range(nodes)],
        "redis_tls": {
            "cacert": str(tls / "ca.crt"),
            "cert": str(tls / "client.crt"),
            "key": str(tls / "client.key"),
        },
        "cassandra": {"cql_port": 19042, "thrift_port": 19160},
    }


def _load(text: str) -> dict:
    return YAML(typ="safe").load(text)


def test_rehearsal_site_differs_only_where_it_must_and_plans_the_same(tmp_path):
    layout = LabLayout(tmp_path / "lab")
    rehearsal = rehearsal_of(EXAMPLE, load_site(EXAMPLE), monitor_window_s=None)
    text = rehearsal_site_text(rehearsal, layout, fake_lab_config(layout.root, 6))
    lab_site = tmp_path / "lab-site.yaml"
    lab_site.write_text(text)

    production, lab = _load(EXAMPLE.read_text()), _load(text)
    changed = {key for key in production.keys() | lab.keys() if production.get(key) != lab.get(key)}
    assert changed <= POINTS_AT_THE_LAB | {"redis", "cassandra"}, changed
    assert lab["ors_clusters"] == production["ors_clusters"]  # names, pairs, roles, versions
    assert lab["ors"] == production["ors"]
    for key in ("username", "node_memory_mb", "aof", "replicas_per_master", "monitor"):
        assert lab["redis"][key] == production["redis"][key]
    assert len(lab["redis"]["nodes"]) == len(production["redis"]["nodes"]) == 6
    assert lab["redis"]["tls"]["enabled"] is True
    assert lab["redis"]["password"].startswith("file:" + str(layout.root))
    assert lab["cassandra"]["keyspace"] == production["cassandra"]["keyspace"]
    assert set(lab["hosts"]) == set(production["hosts"])
    assert lab["rehearsal_of"]["name"] == "prod-emea"
    assert "# A production-like site" in text  # the production file's own comments stay

    checked = cli("validate", str(lab_site))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        plan_outline(lab_site, "migrate-to-redis").states
        == plan_outline(EXAMPLE, "migrate-to-redis").states
    )


def test_what_the_lab_cannot_rehearse_is_said_or_refused(tmp_path):
    text = EXAMPLE.read_text()
    manual = tmp_path / "manual.yaml"
    manual.write_text(
        text.replace(
            "options_backend:\n  kind: command\n"
            "  get_command: /opt/genesys/bin/cfg-options.sh export --app {app}\n"
            "  set_command: /opt/genesys/bin/cfg-options.sh import --app {app} --json-stdin\n",
            "options_backend:\n  kind: manual\n",
        )
    )
    notes = rehearsal_of(manual, load_site(manual), monitor_window_s=10).differences
    assert any("'manual'" in note and "not rehearsed" in note for note in notes), notes
    assert any("monitoring window 10 s instead of the site's 600 s" in note for note in notes)

    four = tmp_path / "four-nodes.yaml"
    four.write_text(
        text.replace("    - redis-emea-06.example.com:6379\n", "").replace(
            "    - redis-emea-05.example.com:6379\n", ""
        )
    )
    with pytest.raises(LabError, match="4 nodes with 1 replica"):
        rehearsal_of(four, load_site(four), monitor_window_s=None)


@pytest.mark.slow
def test_lab_from_the_example_site_rehearses_its_migration(tmp_path):
    lab_dir = tmp_path / "lab"
    up = cli("lab", "up", "--dir", str(lab_dir), "--from", str(EXAMPLE), "--monitor-window-s", "3")
    try:
        assert up.returncode == 0, up.stderr
        assert "the same 15 states" in up.stdout, up.stdout
        status = json.loads(cli("lab", "status", "--dir", str(lab_dir), "--json").stdout)
        pairs = {a["ha_pair"] for a in status["apps"]}
        assert pairs == {"voice-1", "voice-2", "voice-3", "outbound-1", "outbound-2"}
        assert {a["cluster"] for a in status["apps"]} == {"ORS_EMEA_VOICE", "ORS_EMEA_OUTBOUND"}
        assert len(status["redis"]["nodes"]) == 6
        assert (lab_dir / "redis" / "tls" / "ca.crt").exists()
        site = lab_dir / "site.yaml"
        state = tmp_path / "state"

        # rehearsed as a night that runs three pairs at a time, at most two per ORS cluster
        run = cli(
            "run", str(site), "--yes", "--state-dir", str(state),
            "--parallel", "3", "--parallel-per-cluster", "2",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        status = json.loads(cli("lab", "status", "--dir", str(lab_dir), "--json").stdout)
        assert {a["type"] for a in status["apps"]} == {"redis"}
        assert {a["version"] for a in status["apps"]} == {"8.1.401.14"}  # the site's target

        run_id = json.loads(cli("runs", "--json", "--state-dir", str(state)).stdout)[0]["run_id"]
        report = cli("report", run_id, "--format", "json", "--state-dir", str(state))
        facts = json.loads(report.stdout)["rehearsal"]
        production = plan_outline(EXAMPLE, "migrate-to-redis").plan_hash
        assert facts["production_site"] == str(EXAMPLE)
        assert facts["production_plan_hash"] == production
        assert facts["lab_plan_hash"] == plan_outline(site, "migrate-to-redis").plan_hash
        markdown = cli("report", run_id, "--format", "markdown", "--state-dir", str(state)).stdout
        assert f"rehearsal of site 'prod-emea' ({EXAMPLE})" in markdown
    finally:
        cli("lab", "down", "--dir", str(lab_dir))
