"""Files written for the user replace only regular files: `report -o` and `schema -o` onto a
symlink, a device node or a directory exit 2 and leave it as it was; a missing parent directory
is exit 2 naming the path, never an internal error."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import cli
from needs import require

from ors_migrate.journal import Journal


def state_with_a_run(state_dir: Path) -> str:
    journal = Journal(state_dir)
    try:
        return journal.create_run(
            site_name="s",
            site_path="s.yaml",
            site_digest="d",
            playbook="p",
            playbook_digest="d",
            plan_hash="h",
            plan_json=json.dumps({"states": []}),
        )
    finally:
        journal.close()


def output_commands(state_dir: Path, target: Path) -> list[list[str]]:
    return [
        ["report", "--state-dir", str(state_dir), "-o", str(target)],
        ["schema", "-o", str(target)],
    ]


def test_output_onto_a_symlink_is_refused_and_both_are_unchanged(tmp_path):
    state = tmp_path / "state"
    state_with_a_run(state)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    link = tmp_path / "report.md"
    link.symlink_to(victim)
    for command in output_commands(state, link):
        result = cli(*command)
        assert result.returncode == 2, result.stderr
        assert f"cannot write {link}: it is a symbolic link" in result.stderr
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert victim.read_text() == "keep me\n"


def test_output_onto_a_device_node_is_refused_and_it_stays_a_device(tmp_path):
    require("root")
    state = tmp_path / "state"
    state_with_a_run(state)
    device = tmp_path / "null-copy"
    os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    for command in output_commands(state, device):
        result = cli(*command)
        assert result.returncode == 2, result.stderr
        assert "it is a character device" in result.stderr
    st = os.lstat(device)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_output_onto_a_directory_is_refused(tmp_path):
    state = tmp_path / "state"
    state_with_a_run(state)
    for command in output_commands(state, tmp_path):
        result = cli(*command)
        assert result.returncode == 2
        assert "it is a directory" in result.stderr
        assert "internal error" not in result.stderr


def test_output_into_a_missing_directory_names_it(tmp_path):
    state = tmp_path / "state"
    state_with_a_run(state)
    target = tmp_path / "missing" / "x.md"
    for command in output_commands(state, target):
        result = cli(*command)
        assert result.returncode == 2
        assert f"the directory {target.parent} does not exist" in result.stderr
        assert "internal error" not in result.stderr


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_output_replaces_a_regular_file(tmp_path, fmt):
    state = tmp_path / "state"
    run_id = state_with_a_run(state)
    target = tmp_path / "out"
    target.write_text("old")
    result = cli("report", run_id, "-f", fmt, "--state-dir", str(state), "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert run_id in target.read_text()
