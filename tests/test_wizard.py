"""`ors-migrate init`: the wizard answered in a real pseudo-terminal, the same answers from a
file, editing an existing site file, and every way it refuses bad input without writing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
import yaml
from conftest import REPO, cli
from pty_session import choose, finish, spawn

from ors_migrate.wizard import (
    check_address,
    check_cassandra_version,
    check_jump,
    check_nodes,
    check_secret_ref,
    check_template,
)

CLEAR_LINE = "\x15"  # Ctrl-U: the default shown in a text prompt is removed before typing


@dataclass(frozen=True)
class Pick:
    """A choice in a list, reached with the down arrow from the default."""

    value: str
    downs: int = 0


@dataclass(frozen=True)
class Wrong:
    """An answer the wizard must refuse, showing `reason`, before taking `then`."""

    bad: str | bool
    reason: str
    then: str | bool


Answer = str | bool | Pick | Wrong

# A two-cluster site over SSH, with one Windows host (so TLS must be refused).
STEPS: list[tuple[str, str, Answer]] = [
    ("name", "Site name", "contact-emea"),
    ("transport", "How are the ORS hosts reached?", Pick("ssh")),
    ("ssh.user", "SSH user on the ORS hosts", "genesys"),
    ("ssh.port", "SSH port", "2222"),
    ("ssh.key_file", "SSH private key file", "~/.ssh/id_ed25519"),
    ("ssh.key_passphrase", "SSH key passphrase reference", "env:ORS_KEY_PASSPHRASE"),
    ("ssh.known_hosts", "known_hosts file", "~/.ssh/known_hosts"),
    ("ssh.jump_host", "Jump host", "genesys@bastion.example.com"),
    ("ssh.accept_new_host_key", "Accept the key of a host never seen before", False),
    ("clusters", "How many ORS clusters?", "2"),
    ("cluster.1.name", "ORS cluster 1: name", "ORS_VOICE"),
    ("cluster.1.pairs", "ORS_VOICE: how many HA pairs?", "1"),
    ("cluster.1.pair.1.name", "ORS_VOICE pair 1: HA pair name", "voice-1"),
    ("cluster.1.pair.1.primary.app", "voice-1: primary ORS Application name", "ORS_V1A"),
    ("cluster.1.pair.1.primary.host", "voice-1: primary runs on host", "ors-01"),
    ("host.ors-01.platform", "Host ors-01: platform", Pick("linux")),
    ("host.ors-01.address", "Host ors-01: SSH address", "10.20.1.11"),
    ("cluster.1.pair.1.backup.app", "voice-1: backup ORS Application name", "ORS_V1B"),
    ("cluster.1.pair.1.backup.host", "voice-1: backup runs on host", "ors-02"),
    ("host.ors-02.platform", "Host ors-02: platform", Pick("windows", downs=1)),
    ("host.ors-02.address", "Host ors-02: SSH address", "10.20.1.12"),
    ("cluster.2.name", "ORS cluster 2: name", "ORS_OUTBOUND"),
    ("cluster.2.pairs", "ORS_OUTBOUND: how many HA pairs?", "1"),
    ("cluster.2.pair.1.name", "ORS_OUTBOUND pair 1: HA pair name", "outbound-1"),
    ("cluster.2.pair.1.primary.app", "outbound-1: primary ORS Application name", "ORS_O1A"),
    ("cluster.2.pair.1.primary.host", "outbound-1: primary runs on host", "ors-02"),
    ("cluster.2.pair.1.backup.app", "outbound-1: backup ORS Application name", "ORS_O1B"),
    ("cluster.2.pair.1.backup.host", "outbound-1: backup runs on host", "ors-01"),
    ("options.backend", "Where are ORS application options", Pick("ini-file")),
    ("options.path", "Options file path on the host", "/opt/genesys/ors/{app}/options.ini"),
    ("services.start", "Command that starts an application", "/opt/gen/mlcmd.sh -start {app}"),
    ("services.stop", "Command that stops an application", "/opt/gen/mlcmd.sh -stop {app}"),
    ("services.status", "Command that prints an application's role", "/opt/gen/role.sh {app}"),
    ("services.switchover", "Command that switches an HA pair", "/opt/gen/mlcmd.sh -so {pair}"),
    ("services.version", "Command that prints an application's ORS version", "/opt/gen/v.sh {app}"),
    ("services.sessions", "Command that prints an application's count", "/opt/gen/s.sh {app}"),
    ("services.upgrade", "Command that installs ORS", ""),
    (
        "redis.nodes",
        "Redis Cluster nodes",
        Wrong(
            "redis-1:6379;redis-2",
            "'redis-2' is not host:port",
            "redis-1:6379;redis-2:6379;redis-3:6379",
        ),
    ),
    ("redis.username", "Redis ACL user", "ors"),
    (
        "redis.password",
        "Redis password reference",
        Wrong("hunter2-not-a-ref", "never the password itself", "env:ORS_REDIS_PASSWORD"),
    ),
    (
        "redis.tls.enabled",
        "Does ORS talk to Redis over TLS?",
        Wrong(True, "TLS is not available for ORS on Windows", False),
    ),
    ("cassandra.in_use", "Does ORS persist to Cassandra today?", True),
    ("cassandra.contact_points", "Cassandra contact points", "cass-1:9042;cass-2:9042"),
    ("cassandra.thrift_port", "Cassandra Thrift port", "9160"),
    ("cassandra.keyspace", "ORS keyspace", "orchestration"),
    ("cassandra.version", "Cassandra version", "3.11.4"),
    ("cassandra.username", "Cassandra user", ""),
    ("cassandra.password", "Cassandra password reference", ""),
]


def final_answers() -> dict[str, str | bool]:
    out: dict[str, str | bool] = {}
    for key, _, answer in STEPS:
        if isinstance(answer, Wrong):
            answer = answer.then
        out[key] = answer.value if isinstance(answer, Pick) else answer
    return out


def spawn_init(*args: str, cwd: Path) -> pexpect.spawn:
    return spawn("init", *args, cwd=cwd)


def give(child: pexpect.spawn, answer: str | bool | Pick) -> None:
    if isinstance(answer, bool):
        child.send("y" if answer else "n")
    elif isinstance(answer, Pick):
        choose(child, answer.downs)
    else:
        child.send(CLEAR_LINE + answer + "\r")


def answer_in_terminal(child: pexpect.spawn) -> list[str]:
    """Walk every question; returns the reasons seen for the wrong answers."""
    reasons = []
    for _, prompt, answer in STEPS:
        child.expect_exact(prompt)
        if isinstance(answer, Wrong):
            give(child, answer.bad)
            child.expect_exact(answer.reason)
            reasons.append(answer.reason)
            if isinstance(answer.bad, bool):
                child.expect_exact(prompt)  # a refused choice is asked again
            answer = answer.then
        give(child, answer)
    return reasons


def test_init_in_a_terminal_writes_a_two_cluster_site_that_validates(tmp_path):
    child = spawn_init("site.yaml", "--save-answers", "answers.yaml", cwd=tmp_path)
    reasons = answer_in_terminal(child)
    assert finish(child) == 0, child.before
    assert len(reasons) == 3

    site = tmp_path / "site.yaml"
    checked = cli("validate", str(site))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    data = yaml.safe_load(site.read_text())
    assert [c["name"] for c in data["ors_clusters"]] == ["ORS_VOICE", "ORS_OUTBOUND"]
    assert data["hosts"]["ors-02"]["platform"] == "windows"
    assert data["hosts"]["ors-01"]["ssh"] == {
        "address": "10.20.1.11",
        "user": "genesys",
        "port": 2222,
        "key_file": "~/.ssh/id_ed25519",
        "key_passphrase": "env:ORS_KEY_PASSPHRASE",
        "jump_host": "genesys@bastion.example.com",
    }
    assert data["redis"]["nodes"] == ["redis-1:6379", "redis-2:6379", "redis-3:6379"]
    assert data["redis"]["password"] == "env:ORS_REDIS_PASSWORD"
    assert "tls" not in data["redis"]
    assert data["cassandra"]["contact_points"] == ["cass-1:9042", "cass-2:9042"]
    for written in (site, tmp_path / "answers.yaml"):
        assert "hunter2" not in written.read_text()
    assert yaml.safe_load((tmp_path / "answers.yaml").read_text()) == final_answers()


def test_answers_file_gives_the_same_site_file_as_the_terminal(tmp_path):
    child = spawn_init("by-hand.yaml", cwd=tmp_path)
    answer_in_terminal(child)
    assert finish(child) == 0, child.before
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump(final_answers()))

    result = cli("init", str(tmp_path / "automated.yaml"), "--answers", str(answers))

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "automated.yaml").read_text() == (tmp_path / "by-hand.yaml").read_text()


def test_set_flags_override_answers_and_a_bad_one_names_its_key(tmp_path):
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump(final_answers()))
    site = tmp_path / "site.yaml"

    bad = cli("init", str(site), "--answers", str(answers), "--set", "redis.nodes=r1:6379;r2")
    assert bad.returncode == 2
    assert "redis.nodes: 'r2' is not host:port" in bad.stderr
    assert not site.exists()

    good = cli("init", str(site), "--answers", str(answers), "--set", "redis.nodes=a:1;b:2;c:3")
    assert good.returncode == 0, good.stderr
    assert yaml.safe_load(site.read_text())["redis"]["nodes"] == ["a:1", "b:2", "c:3"]


def test_tls_on_a_windows_host_is_refused_from_an_answers_file_too(tmp_path):
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump({**final_answers(), "redis.tls.enabled": True}))

    result = cli("init", str(tmp_path / "site.yaml"), "--answers", str(answers))

    assert result.returncode == 2
    assert "redis.tls.enabled: TLS is not available for ORS on Windows" in result.stderr
    assert "ors-02" in result.stderr


def test_tls_cert_without_key_is_refused(tmp_path):
    answers = {
        **final_answers(),
        "host.ors-02.platform": "linux",
        "redis.tls.enabled": True,
        "redis.tls.cert": "/etc/ors/tls/client.crt",
        "redis.tls.key": "",
    }
    (tmp_path / "answers.yaml").write_text(yaml.safe_dump(answers))

    result = cli("init", str(tmp_path / "s.yaml"), "--answers", str(tmp_path / "answers.yaml"))

    assert result.returncode == 2
    assert "redis.tls.key: tls-cert and tls-key go together" in result.stderr


def test_a_misspelt_answer_key_is_an_error_not_a_silent_default(tmp_path):
    (tmp_path / "answers.yaml").write_text(
        yaml.safe_dump({**final_answers(), "redis.passwd": "env:X"})
    )

    result = cli("init", str(tmp_path / "s.yaml"), "--answers", str(tmp_path / "answers.yaml"))

    assert result.returncode == 2
    assert "not asked: redis.passwd" in result.stderr
    assert not (tmp_path / "s.yaml").exists()


def test_init_without_a_terminal_or_answers_says_so_and_exits_2_at_once(tmp_path):
    started = time.monotonic()
    result = cli("init", str(tmp_path / "site.yaml"), timeout=30)

    assert result.returncode == 2
    assert "--answers FILE" in result.stderr
    assert time.monotonic() - started < 15
    assert not (tmp_path / "site.yaml").exists()


def test_init_refuses_to_overwrite_without_force(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("keep me\n")
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump(final_answers()))

    refused = cli("init", str(site), "--answers", str(answers))
    assert refused.returncode == 2
    assert "--force" in refused.stderr
    assert site.read_text() == "keep me\n"

    forced = cli("init", str(site), "--answers", str(answers), "--force")
    assert forced.returncode == 0, forced.stderr
    assert cli("validate", str(site)).returncode == 0


def test_init_from_an_existing_site_keeps_what_the_questions_do_not_cover(tmp_path):
    example = REPO / "examples" / "site.yaml"
    edited = tmp_path / "edited.yaml"

    result = cli("init", str(edited), "--from", str(example), "--set", "cluster.2.name=ORS_EMEA_OB")

    assert result.returncode == 0, result.stderr
    assert cli("validate", str(edited)).returncode == 0
    before, after = yaml.safe_load(example.read_text()), yaml.safe_load(edited.read_text())
    assert after["ors_clusters"][1]["name"] == "ORS_EMEA_OB"
    after["ors_clusters"][1]["name"] = before["ors_clusters"][1]["name"]
    assert after == before


def test_answer_checks_explain_what_is_wrong():
    assert check_nodes(3)("r1:6379;r2:6379") == (
        "2 node(s) given; a Redis Cluster for ORS has at least 3"
    )
    assert check_nodes(3)("r1:6379,r2:6379 r3:6379") is None
    assert check_nodes(3)("r1:6379;r1:6379;r2:6379") == "a node is listed twice"
    assert check_nodes(1)("r1:99999") == "port 99999 in 'r1:99999' is outside 1-65535"
    assert check_secret_ref("s3cret") is not None and "s3cret" not in check_secret_ref("s3cret")
    assert check_secret_ref("file:/etc/ors/redis.pw") is None
    assert check_template("services.stop", ("app",))("stop {application}") == (
        "unknown placeholder {application} in 'stop {application}'; placeholders here: {app}, "
        "{cluster}, {host}, {install_dir}, {pair}, {peer}; write a literal brace doubled "
        "({{ or }})"
    )
    assert check_template("services.switchover", ("pair", "app"))("switch") == (
        "the command must name its target with {pair} or {app}"
    )
    assert check_address("ors-01:22") is not None
    assert check_address("fe80::1") is None
    assert check_jump("a@b:22,c") is not None
    assert check_cassandra_version("4.0.1") == (
        "ORS persists to Cassandra 3.x or lower only; this cluster cannot be ORS's"
    )


@pytest.mark.parametrize("secret", ["hunter2", "p@ss word"])
def test_a_password_is_never_accepted_in_place_of_a_reference(tmp_path, secret):
    (tmp_path / "answers.yaml").write_text(
        yaml.safe_dump({**final_answers(), "cassandra.password": secret})
    )

    result = cli("init", str(tmp_path / "s.yaml"), "--answers", str(tmp_path / "answers.yaml"))

    assert result.returncode == 2
    assert "never the password itself" in result.stderr
    assert secret not in result.stderr


@pytest.mark.needs("tmux")
def test_first_screen_as_an_80_column_terminal_shows_it(tmp_path):
    """The rendered screen (tmux's own terminal emulation), not the byte stream: the opening
    note and the first question fit an 80x24 terminal as the operator sees them."""
    socket = f"orsm-{os.getpid()}"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    command = f"cd {tmp_path} && PYTHONPATH={REPO} {sys.executable} -m ors_migrate init site.yaml"
    subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "24", command], check=True)
    try:
        deadline = time.monotonic() + 20
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p"], capture_output=True, text=True
            ).stdout
            if "?" in screen:
                break
            time.sleep(0.2)
        lines = screen.splitlines()
        words = " ".join(screen.split())  # a word cut at the right margin would not match
        assert "nothing is written before the last one" in words, screen
        assert any(line.startswith("?") for line in lines), screen
        assert all(len(line) <= 80 for line in lines)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    assert not (tmp_path / "site.yaml").exists()
