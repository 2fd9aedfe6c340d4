"""The wizard's answer checks come from the site model: every question is walked with good and
bad answers, and an answer the wizard takes always gives a site the model accepts. Templates
agree both ways: the wizard takes exactly the placeholders the model allows for that field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ors_migrate.errors import InputError
from ors_migrate.site import Site
from ors_migrate.wizard import Answer, AnswersPrompter, Question, Wizard, site_document

BASE: dict[str, Answer] = {
    "name": "emea",
    "transport": "ssh",
    "ssh.user": "genesys",
    "ssh.port": "22",
    "ssh.key_file": "",
    "ssh.key_passphrase": "env:KEY_PASSPHRASE",
    "ssh.known_hosts": "~/.ssh/known_hosts",
    "ssh.jump_host": "",
    "ssh.accept_new_host_key": False,
    "clusters": "1",
    "cluster.1.name": "ORS_A",
    "cluster.1.pairs": "1",
    "cluster.1.pair.1.name": "pair-1",
    "cluster.1.pair.1.primary.app": "ORS_1A",
    "cluster.1.pair.1.primary.host": "ors-01",
    "host.ors-01.platform": "linux",
    "host.ors-01.address": "10.0.0.1",
    "cluster.1.pair.1.backup.app": "ORS_1B",
    "cluster.1.pair.1.backup.host": "ors-02",
    "host.ors-02.platform": "linux",
    "host.ors-02.address": "10.0.0.2",
    "options.backend": "command",
    "options.get_command": "cfgtool get {app}",
    "options.set_command": "cfgtool set {app}",
    "services.start": "ml start {app}",
    "services.stop": "ml stop {app}",
    "services.status": "ml status {app}",
    "services.switchover": "ml switchover {pair}",
    "services.version": "",
    "services.sessions": "",
    "services.upgrade": "",
    "redis.nodes": "r1:6379;r2:6379;r3:6379",
    "redis.username": "",
    "redis.password": "env:REDIS_PASSWORD",
    "redis.tls.enabled": False,
    "cassandra.in_use": True,
    "cassandra.contact_points": "c1:9042",
    "cassandra.thrift_port": "9160",
    "cassandra.keyspace": "orchestration",
    "cassandra.version": "",
    "cassandra.username": "",
    "cassandra.password": "",
}
INI_FILE = {**BASE, "options.backend": "ini-file", "options.path": "/opt/ors/{app}.ini"}
# Answers a question's count or choice decides the shape of the rest by; walked separately.
SHAPING = {"clusters", "cluster.1.pairs", "transport", "options.backend"}
PROBES = [
    "x",
    "ORS_B",
    "bad name!",
    "two words",
    "-leading-dash",
    "n" * 129,
    "r9:6379",
    "r9:99999",
    "10.0.0.9",
    "host:22",
    "fe80::1",
    "genesys@bastion:2222",
    "a@b:22,c",
    "env:OTHER",
    "file:/etc/pw",
    "prompt",
    "s3cret",
    "0",
    "7",
    "70000",
    "3.11.4",
    "4.0.1",
    "r1:6379;r2:6379",
    "r1:6379;r1:6379;r2:6379",
    "r1:1;r2:2;r3:3;r4:4",
    "cmd {app}",
    "cmd {app",
    "cmd {application}",
    "awk '{{print $1}}' {app}",
]
PLACEHOLDERS = [
    "app",
    "host",
    "cluster",
    "pair",
    "peer",
    "install_dir",
    "primary",
    "backup",
    "version",
    "changes_file",
    "tag",
    "keyspace",
    "env_file",
]


class Recorder(AnswersPrompter):
    """Answers from a mapping, keeping every question asked."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__(answers, "answers.yaml")
        self.questions: list[Question] = []

    def ask(self, question: Question, default: Answer | None) -> Answer:
        self.questions.append(question)
        return super().ask(question, default)


def wizard_takes(answers: dict[str, Answer]) -> dict[str, Answer] | None:
    """The wizard's answers, or None when it refuses one of them."""
    try:
        return Wizard(Recorder(answers)).run()
    except InputError:
        return None


def model_takes(answers: dict[str, Answer]) -> bool:
    try:
        Site.model_validate(site_document(answers))
    except (ValidationError, ValueError, KeyError):
        return False
    return True


def questions(answers: dict[str, Answer]) -> list[Question]:
    recorder = Recorder(answers)
    Wizard(recorder).run()
    return recorder.questions


def test_both_base_answer_sets_give_valid_sites() -> None:
    for base in (BASE, INI_FILE):
        taken = wizard_takes(base)
        assert taken is not None
        assert model_takes(taken)


@pytest.mark.parametrize("base", [BASE, INI_FILE], ids=["command-backend", "ini-file"])
def test_every_answer_the_wizard_takes_gives_a_site_the_model_accepts(base) -> None:
    walked = [q for q in questions(base) if q.kind == "text" and q.key not in SHAPING]
    assert len(walked) >= 25
    refused = 0
    for question in walked:
        for probe in PROBES:
            taken = wizard_takes({**base, question.key: probe})
            if taken is None:
                refused += 1
                continue
            assert model_takes(taken), f"the wizard took {question.key}={probe!r}"
    assert refused > len(walked)  # the probes do reach the checks


@pytest.mark.parametrize("base", [BASE, INI_FILE], ids=["command-backend", "ini-file"])
def test_template_questions_take_exactly_the_placeholders_the_model_allows(base) -> None:
    templates = [q for q in questions(base) if q.key.startswith(("services.", "options."))]
    templates = [q for q in templates if q.kind == "text"]
    assert templates
    for question in templates:
        for name in PLACEHOLDERS:
            answer = f"/bin/cmd {{app}} {{pair}} {{{name}}}"
            wizard = wizard_takes({**base, question.key: answer}) is not None
            model = model_takes({**base, question.key: answer})
            assert wizard == model, f"{question.key} {{{name}}}: wizard {wizard}, model {model}"


def test_set_command_may_name_the_changes_file() -> None:
    answers = {**BASE, "options.set_command": "cfgtool set {app} --from {changes_file}"}
    taken = wizard_takes(answers)
    assert taken is not None and model_takes(taken)


def test_switchover_may_name_the_primary_and_the_backup() -> None:
    answers = {**BASE, "services.switchover": "ml switch --from {primary} --to {backup}"}
    taken = wizard_takes(answers)
    assert taken is not None and model_takes(taken)


def test_get_command_may_not_name_the_peer() -> None:
    answers = {**BASE, "options.get_command": "cfgtool get {app} {peer}"}
    with pytest.raises(InputError, match=r"options.get_command: unknown placeholder \{peer\}"):
        Wizard(Recorder(answers)).run()
    assert not model_takes(answers)
