"""`ors-migrate report`: the change record of a real lab run, as HTML opened in headless
Chromium, as Markdown, JSON and one screen of text; never a secret in any of them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, cli
from ruamel.yaml import YAML

from ors_migrate.journal import Journal
from ors_migrate.report import FORMATS, build_report, render_report

SCREENSHOT = Path("/tmp/report.png")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(page: Path, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [
            CHROMIUM or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def section(dom: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', dom, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


@pytest.mark.needs("chromium")
def test_report_of_a_lab_run_opens_in_chromium_with_its_timeline_and_redis_chart(
    make_lab, tmp_path
):
    lab = make_lab(clusters=1, pairs_per_cluster=1, secure=True)
    state_dir = tmp_path / "state"
    migrated = cli("run", str(lab.site), "--yes", "--state-dir", str(state_dir))
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    run = json.loads(cli("runs", "--json", "--state-dir", str(state_dir)).stdout)[0]
    page = tmp_path / "report.html"

    written = cli(
        "report",
        run["run_id"],
        "--format",
        "html",
        "--output",
        str(page),
        "--state-dir",
        str(state_dir),
    )
    assert written.returncode == 0, written.stderr

    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    timeline = section(dom, "timeline")
    playbook = YAML(typ="safe").load(REPO / "playbooks" / "migrate-to-redis.yaml")
    states = len(playbook["states"])  # every state of the playbook, each done
    assert len(re.findall(r'<tr class="state">', timeline)) == states
    assert timeline.count('class="done">done<') == states
    assert '<svg id="timeline-chart"' in timeline and "<rect" in timeline
    redis = section(dom, "redis")
    charts = re.findall(r'<figure class="redis-chart".*?</figure>', redis, re.S)
    assert len(charts) == 2  # the baseline window (prepare.2) and the enable.3 window
    for chart in charts:
        assert 'class="redis-cpu"' in chart and 'class="redis-memory"' in chart
        lines = re.findall(r'<polyline[^>]*points="([^"]+)"', chart)
        assert len(lines) == 2 * 6  # CPU and memory for each of the 6 Redis nodes
        assert all(len(points.split()) >= 2 for points in lines)
    assert "<script" not in dom
    assert not re.search(r'(src|href)="https?:', dom), "no external asset"
    assert run["plan_hash"] in dom

    chromium(page, tmp_path / "profile", "--window-size=1200,7000", f"--screenshot={SCREENSHOT}")
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 20_000

    password = (lab.root / "secrets" / "redis-ors.password").read_text().strip()
    assert password and password not in page.read_text()
    for fmt in FORMATS:
        shown = cli("report", run["run_id"], "--format", fmt, "--state-dir", str(state_dir))
        assert shown.returncode == 0, shown.stderr
        assert password not in shown.stdout, fmt

    record = json.loads(cli("report", "--format", "json", "--state-dir", str(state_dir)).stdout)
    assert record["run"]["plan_hash"] == run["plan_hash"]
    assert record["outcome"]["status"] == "succeeded"
    assert [(g["decision"], g["approved_by_yes"]) for g in record["gate_decisions"]] == [
        ("approve", True),
        ("approve", True),
    ]
    type_changes = [c for c in record["option_changes"] if c["option"] == "type"]
    assert [(c["old"], c["new"]) for c in type_changes] == [("cassandra", "redis")] * 2
    assert {c["new"] for c in record["option_changes"] if c["option"] == "password"} == {"***"}
    assert any(c["check"] == "redis.monitor.cpu" for c in record["checks"])
    assert all(s["seconds"] is not None for s in record["timeline"])
    assert len(record["switchovers"]) == 3  # prepare.5, enable.1, enable.4 for the one pair

    screen = cli("report", "--format", "text", "--state-dir", str(state_dir)).stdout
    assert len(screen.splitlines()) <= 30
    assert "✓ enable.4" in screen


def journal_with_a_leaked_secret(state_dir: Path) -> tuple[Journal, str]:
    journal = Journal(state_dir)
    run_id = journal.create_run(
        site_name="s",
        site_path="s.yaml",
        site_digest="d",
        playbook="p",
        playbook_digest="d",
        plan_hash="h",
        plan_json=json.dumps({"states": []}),
    )
    journal.record(
        run_id,
        "check",
        phase="forward",
        payload={
            "check": "redis.auth",
            "severity": "ok",
            "message": "logged in",
            "observed": {"password": "hunter2-leaked", "password_ref": "env:REDIS_PW"},
        },
    )
    journal.record(
        run_id,
        "action_ended",
        phase="forward",
        state_id="x",
        action_key="x/0",
        payload={
            "observed": {
                "app": "a",
                "changes": [
                    {"section": "persistence", "option": "password", "old": None, "new": "***"}
                ],
            },
            "seconds": 0.1,
        },
    )
    return journal, run_id


def test_a_value_under_a_secret_key_is_masked_even_if_the_journal_holds_it(tmp_path):
    journal, run_id = journal_with_a_leaked_secret(tmp_path)
    try:
        report = build_report(journal, journal.get_run(run_id))
    finally:
        journal.close()

    for fmt in FORMATS:
        assert "hunter2-leaked" not in render_report(report, fmt), fmt
    observed = report["checks"][0]["observed"]
    assert observed == {"password": "***", "password_ref": "env:REDIS_PW"}


def test_report_refuses_an_unknown_format_and_an_unknown_run(tmp_path):
    state_dir = str(tmp_path / "state")
    wrong_format = cli("report", "--format", "pdf", "--state-dir", state_dir)
    assert wrong_format.returncode == 2 and "markdown, html, json, text" in wrong_format.stderr
    no_run = cli("report", "20990101-000000-abcdef", "--state-dir", state_dir)
    assert no_run.returncode == 2 and "no run" in no_run.stderr


def test_shell_completion_is_available():
    script = cli("--show-completion", "bash")
    assert script.returncode == 0 and "complete" in script.stdout
