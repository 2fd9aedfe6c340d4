"""Jump chains are checked at `validate` (cycles, a jump through a non-SSH host, an unknown
jump host) with an error naming file and line, and a run builds its SSH transports with the
same builder, so a chain that slipped past validation is bad input, never a RecursionError."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, cli

from ors_migrate.actions.transports import TransportPool
from ors_migrate.errors import InputError
from ors_migrate.secrets import Secrets
from ors_migrate.site import Host, Site, SshSettings, load_site

EXAMPLE = (REPO / "examples" / "site.yaml").read_text()
FIRST_JUMP = "      jump_host: genesys@bastion.emea.example.com\n"


def site_with_hosts(tmp_path: Path, first_jump: str, extra_hosts: str = "") -> Path:
    """The example site with host ors-emea-01 jumping through `first_jump`, and more hosts."""
    text = EXAMPLE.replace(FIRST_JUMP, f"      jump_host: {first_jump}\n", 1)
    text = text.replace("hosts:\n", "hosts:\n" + extra_hosts, 1)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    "first_jump, extra_hosts, message",
    [
        (
            "hop-b",
            "  hop-b:\n    ssh: {address: 10.0.0.2, jump_host: ors-emea-01}\n",
            "jump hosts form a cycle: hop-b -> ors-emea-01 -> hop-b",
        ),
        ("ors-emea-01", "", "jump hosts form a cycle: ors-emea-01 -> ors-emea-01"),
        (
            "here",
            "  here:\n    transport: local\n",
            "host 'ors-emea-01' jumps through 'here', which is not an SSH host",
        ),
        ("bastoin", "  bastion:\n    ssh: {address: 10.0.0.9}\n", "jump host 'bastoin'"),
    ],
    ids=["cycle", "self", "through-local", "unknown"],
)
def test_validate_refuses_a_broken_jump_chain_naming_its_line(
    tmp_path, first_jump, extra_hosts, message
):
    site = site_with_hosts(tmp_path, first_jump, extra_hosts)
    result = cli("validate", str(site))
    assert result.returncode == 2, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert message in shown
    blamed = "jump_host: ors-emea-01}" if first_jump == "hop-b" else f"jump_host: {first_jump}"
    assert f"{site}:{line_of(site, blamed)}" in shown
    assert "Traceback" not in shown and "RecursionError" not in shown
    if first_jump == "bastoin":
        assert "did you mean the site host 'bastion'" in shown


def test_a_jump_through_a_site_host_or_a_domain_is_valid(tmp_path):
    site = site_with_hosts(tmp_path, "bastion", "  bastion:\n    ssh: {address: 10.0.0.9}\n")
    result = cli("validate", str(site))
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_site(site).site.hosts["ors-emea-01"].ssh.jump_host == "bastion"


def test_a_run_builds_transports_with_the_same_builder_and_refuses_a_cycle():
    """A site that bypassed validation (built in code) still gets bad input, not a crash."""
    hosts = {
        "a": Host(ssh=SshSettings(address="10.0.0.1", jump_host="b")),
        "b": Host(ssh=SshSettings(address="10.0.0.2", jump_host="a")),
        "c": Host(ssh=SshSettings(address="10.0.0.3", jump_host="here")),
        "here": Host(transport="local"),
    }
    pool = TransportPool(Site.model_construct(hosts=hosts), Secrets())
    with pytest.raises(InputError, match="cycle: a -> b -> a"):
        pool.for_host("a")
    with pytest.raises(InputError, match="which is not an SSH host"):
        pool.for_host("c")
