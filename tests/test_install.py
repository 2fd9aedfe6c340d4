"""Installed as users install it: a wheel built from the project, in a fresh virtual environment,
plans the examples with every bundled playbook from a directory that is not the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from ors_migrate.playbook import bundled_playbooks

pytestmark = pytest.mark.slow


def sources(into: Path) -> Path:
    """The tracked files of the checkout, so the build leaves the checkout as it was."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, into / name)
    return into


def test_wheel_in_a_fresh_venv_plans_the_examples_from_another_directory(tmp_path):
    source = sources(tmp_path / "src")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("ors_migrate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    packed = {Path(n).stem for n in names if n.startswith("ors_migrate/playbooks/")}
    assert packed == set(bundled_playbooks())
    modules = {
        str(path.relative_to(REPO))
        for path in (REPO / "ors_migrate").rglob("*.py")
        if "playbooks" not in path.parts
    }
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tool = venv / "bin" / "ors-migrate"
    for example in sorted((REPO / "examples").glob("site*.yaml")):
        shown = subprocess.run(
            [str(tool), "plan", str(example)], cwd=elsewhere, capture_output=True, text=True
        )
        assert shown.returncode == 0, (example.name, shown.stderr[-2000:])
        assert "plan_hash" in shown.stdout
    for playbook in bundled_playbooks():
        shown = subprocess.run(
            [str(tool), "plan", str(REPO / "examples" / "site.yaml"), "--playbook", playbook],
            cwd=elsewhere,
            capture_output=True,
            text=True,
        )
        # A playbook may refuse this site by a documented rule (exit 2), never for want of
        # its own file.
        assert "no playbook" not in shown.stderr.lower(), (playbook, shown.stderr)
        assert shown.returncode in (0, 2), (playbook, shown.stderr[-2000:])
