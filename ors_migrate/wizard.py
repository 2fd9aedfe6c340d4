"""`ors-migrate init`: the questions that build a site file.

The same questions are asked in a terminal (questionary) or answered from a file and `--set`
flags for automation; every answer is checked as it is given, by the same rules either way, so a
set of answers always gives the same site file. The file is written (atomically) only once the
whole site passes the checks of `validate`. Passwords are asked for as references (`env:NAME`,
`file:PATH`, `prompt`), never as values.

Each question has a stable key (`redis.nodes`, `cluster.1.pair.2.backup.host`, ...); an answers
file maps keys to answers. `init --save-answers FILE` writes the answers of a session as such a
file, and `init --from SITE` starts from an existing site file: its values become the defaults,
and whatever the questions do not cover (memory sizes, versions, monitoring thresholds, other
hosts) is kept as it was.
"""

from __future__ import annotations

import copy
import re
import shutil
import string
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ors_migrate.errors import EXIT_BAD_INPUT, InputError
from ors_migrate.site import (
    HOST_PORT,
    JUMP_SPEC,
    NAME,
    SECRET_REF,
    TEMPLATE_PLACEHOLDERS,
    SshSettings,
    known_jump,
    parse_host_port,
)
from ors_migrate.site import check_template as check_site_template

Answer = str | bool
Check = Callable[[Any], str | None]
Kind = Literal["text", "select", "confirm"]

NAME_RE = re.compile(NAME)
ADDRESS_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
MAX_CLUSTERS = 20
MAX_PAIRS = 50
SERVICE_COMMANDS: list[tuple[str, str, tuple[str, ...], bool]] = [
    # (key, what it does, placeholders of which one is needed, optional); the placeholders a
    # command may use are the site model's (site.TEMPLATE_PLACEHOLDERS)
    ("start", "starts an application", ("app",), False),
    ("stop", "stops an application", ("app",), False),
    ("status", "prints an application's role (primary|backup|down)", ("app",), False),
    (
        "switchover",
        "switches an HA pair over to its backup",
        ("pair", "app", "primary", "backup"),
        False,
    ),
    ("version", "prints an application's ORS version", ("app",), True),
    ("sessions", "prints an application's count of sessions in progress", ("app",), True),
    ("upgrade", "installs ORS {version} for an application", ("app",), True),
]


# Questions and answers
@dataclass(frozen=True)
class Question:
    key: str
    message: str
    kind: Kind = "text"
    choices: tuple[str, ...] = ()
    check: Check | None = None
    optional: bool = False


def problem_with(question: Question, answer: Answer) -> str | None:
    """Why `answer` is not acceptable, or None. The one rule book of both prompters."""
    if question.kind == "confirm" and not isinstance(answer, bool):
        return "answer yes or no"
    if question.kind == "text":
        answer = str(answer).strip()
        if not answer and not question.optional:
            return "an answer is needed"
    if question.kind == "select" and answer not in question.choices:
        return f"choose one of {', '.join(question.choices)}"
    return question.check(answer) if question.check else None


class Prompter(Protocol):
    def ask(self, question: Question, default: Answer | None) -> Answer: ...


class TerminalPrompter:
    """Asks in the terminal. A text answer is checked as it is typed: the reason shows under
    the prompt and the answer is not taken until it is right; a choice that breaks a rule
    (TLS on Windows) is explained and asked again."""

    def ask(self, question: Question, default: Answer | None) -> Answer:
        while True:
            answer = self._prompt(question, default)
            reason = problem_with(question, answer)
            if reason is None:
                return answer.strip() if isinstance(answer, str) else answer
            print(f"  ✗ {reason}", file=sys.stderr)

    def _prompt(self, question: Question, default: Answer | None) -> Answer:
        import questionary

        if question.kind == "confirm":
            return bool(questionary.confirm(question.message, default=bool(default)).unsafe_ask())
        if question.kind == "select":
            chosen = default if default in question.choices else question.choices[0]
            return str(
                questionary.select(
                    question.message, choices=list(question.choices), default=chosen
                ).unsafe_ask()
            )

        def validate(text: str) -> bool | str:
            return problem_with(question, text) or True

        shown = "" if default is None else str(default)
        return str(
            questionary.text(question.message, default=shown, validate=validate).unsafe_ask()
        )


class AnswersPrompter:
    """Answers from a mapping (an answers file and `--set` flags); a missing answer takes the
    default; a wrong or missing one is an error naming the key and the reason."""

    def __init__(self, answers: dict[str, Any], source: str) -> None:
        self.answers = answers
        self.source = source
        self.asked: set[str] = set()

    def ask(self, question: Question, default: Answer | None) -> Answer:
        self.asked.add(question.key)
        if question.key in self.answers:
            answer = _coerce(question, self.answers[question.key])
        elif default is not None:
            answer = default
        elif question.optional:
            answer = ""
        else:
            raise InputError(
                f"no answer for '{question.key}' ({question.message})",
                file=self.source,
                rule="init.answer-missing",
            )
        reason = problem_with(question, answer)
        if reason is not None:
            raise InputError(f"{question.key}: {reason}", file=self.source, rule="init.answer")
        return answer.strip() if isinstance(answer, str) else answer

    def not_asked(self) -> list[str]:
        return sorted(set(self.answers) - self.asked)


def _coerce(question: Question, value: Any) -> Answer:
    if question.kind == "confirm":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("yes", "y", "true"):
            return True
        if text in ("no", "n", "false"):
            return False
        return text
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


# Answer checks: each returns the reason an answer is wrong, or None
def check_name(value: str) -> str | None:
    if len(value) > 128 or not NAME_RE.match(value):
        return "use letters, digits, '_', '.' and '-', starting with a letter or digit"
    return None


def check_count(low: int, high: int) -> Check:
    def check(value: str) -> str | None:
        if not value.isdigit() or not low <= int(value) <= high:
            return f"give a whole number from {low} to {high}"
        return None

    return check


def check_port(value: str) -> str | None:
    return check_count(1, 65535)(value)


def allow_empty(check: Check) -> Check:
    """An optional answer: empty is fine, anything else must pass `check`."""
    return lambda value: None if not value else check(value)


def check_address(value: str) -> str | None:
    if HOST_PORT.match(value) and not value.count(":") > 1:
        return "give the address without a port (the SSH port is asked separately)"
    if not ADDRESS_RE.match(value):
        return f"'{value}' is not a host name or IP address"
    return None


def check_jump(value: str) -> str | None:
    """The site model's rule for a jump host outside the site (every host the wizard writes
    shares these SSH settings, so a jump through one of them would be a cycle)."""
    if not value:
        return None
    if not JUMP_SPEC.match(value):
        return "give one jump host as [user@]host[:port]"
    if not known_jump(value, SshSettings()):
        return (
            "unknown jump host: give a domain name or an IP address, or a Host of your "
            "~/.ssh/config"
        )
    return None


def check_no_spaces(value: str) -> str | None:
    return "no spaces, please" if any(c.isspace() for c in value) else None


def check_secret_ref(value: str) -> str | None:
    if value and not SECRET_REF.match(value):
        return (
            "give a reference to the password (env:NAME, file:PATH or prompt), never the "
            "password itself"
        )
    return None


def split_nodes(value: str) -> list[str]:
    return [n for n in re.split(r"[;,\s]+", value.strip()) if n]


def check_nodes(minimum: int) -> Check:
    """host:port list (`;`, `,` or spaces between), no duplicates, at least `minimum`."""

    def check(value: str) -> str | None:
        nodes = split_nodes(value)
        for node in nodes:
            try:
                parse_host_port(node)
            except ValueError as exc:
                return str(exc)
        if len(set(nodes)) != len(nodes):
            return "a node is listed twice"
        if len(nodes) < minimum:
            return f"{len(nodes)} node(s) given; a Redis Cluster for ORS has at least {minimum}"
        return None

    return check


def placeholders_in(template: str) -> set[str]:
    """The {names} of a template that the site model accepted."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(site_field: str, needs_one_of: tuple[str, ...]) -> Check:
    """The site model's check of the template field `site_field` (the placeholders it may
    use), and the wizard's own: the command names its target with one of `needs_one_of`."""

    def check(value: str) -> str | None:
        try:
            check_site_template(value, TEMPLATE_PLACEHOLDERS[site_field])
        except ValueError as exc:
            return str(exc)
        names = placeholders_in(value)
        if needs_one_of and not names & set(needs_one_of):
            wanted = " or ".join(f"{{{n}}}" for n in needs_one_of)
            return f"the command must name its target with {wanted}"
        return None

    return check


def check_cassandra_version(value: str) -> str | None:
    if not value:
        return None
    if not re.match(r"^[0-9]+(\.[0-9]+)*$", value):
        return f"'{value}' is not a version such as 3.11.4"
    if int(value.split(".")[0]) > 3:
        return "ORS persists to Cassandra 3.x or lower only; this cluster cannot be ORS's"
    return None


# The questions, in order
class Wizard:
    def __init__(self, prompter: Prompter, defaults: dict[str, Answer] | None = None) -> None:
        self.prompter = prompter
        self.defaults = defaults or {}
        self.answers: dict[str, Answer] = {}

    def ask(
        self,
        key: str,
        message: str,
        *,
        default: Answer | None = None,
        check: Check | None = None,
        optional: bool = False,
        kind: Kind = "text",
        choices: tuple[str, ...] = (),
    ) -> Answer:
        question = Question(key, message, kind, choices, check, optional)
        answer = self.prompter.ask(question, self.defaults.get(key, default))
        self.answers[key] = answer
        return answer

    def text(self, key: str, message: str, **kw: Any) -> str:
        return str(self.ask(key, message, **kw))

    def select(self, key: str, message: str, choices: tuple[str, ...], default: str) -> str:
        return str(self.ask(key, message, kind="select", choices=choices, default=default))

    def confirm(self, key: str, message: str, *, default: bool, check: Check | None = None) -> bool:
        return bool(self.ask(key, message, kind="confirm", default=default, check=check))

    def reference(self, key: str, what: str) -> str:
        """A secret is asked for as a reference to it, never as its value."""
        return self.text(
            key,
            f"{what} reference: env:NAME, file:PATH or prompt (empty: none)",
            optional=True,
            check=check_secret_ref,
        )

    def run(self) -> dict[str, Answer]:
        self.text("name", "Site name (as in runs and locks)", check=check_name)
        transport = self.select(
            "transport", "How are the ORS hosts reached?", ("ssh", "local"), "ssh"
        )
        if transport == "ssh":
            self.ask_ssh()
        clusters = int(
            self.text(
                "clusters",
                "How many ORS clusters?",
                default="1",
                check=check_count(1, MAX_CLUSTERS),
            )
        )
        for c in range(1, clusters + 1):
            self.ask_cluster(c, transport)
        self.ask_options_backend()
        self.ask_services()
        self.ask_redis()
        self.ask_tls()
        self.ask_cassandra()
        return self.answers

    def ask_ssh(self) -> None:
        self.text("ssh.user", "SSH user on the ORS hosts", optional=True, check=check_no_spaces)
        self.text(
            "ssh.port",
            "SSH port (empty: from the ssh config, else 22)",
            optional=True,
            check=allow_empty(check_port),
        )
        self.text(
            "ssh.key_file", "SSH private key file (empty: agent or ssh config)", optional=True
        )
        self.reference("ssh.key_passphrase", "SSH key passphrase")
        self.text("ssh.known_hosts", "known_hosts file", default=DEFAULT_KNOWN_HOSTS)
        self.text(
            "ssh.jump_host",
            "Jump host, [user@]host[:port] (empty: none)",
            optional=True,
            check=check_jump,
        )
        self.confirm(
            "ssh.accept_new_host_key",
            "Accept the key of a host never seen before (otherwise refuse it)?",
            default=False,
        )

    def _taken(self, suffix: str) -> set[str]:
        return {str(v) for k, v in self.answers.items() if k.endswith(suffix)}

    def _unique(self, suffix: str, what: str) -> Check:
        def check(value: str) -> str | None:
            if value in self._taken(suffix):
                return f"{what} '{value}' is already used"
            return check_name(value)

        return check

    def ask_cluster(self, c: int, transport: str) -> None:
        prefix = f"cluster.{c}"
        name = self.text(
            f"{prefix}.name",
            f"ORS cluster {c}: name (the <name> in ORS:<name> keys)",
            check=self._unique(".name", "that name"),
        )
        pairs = int(
            self.text(
                f"{prefix}.pairs",
                f"{name}: how many HA pairs?",
                default="1",
                check=check_count(1, MAX_PAIRS),
            )
        )
        for p in range(1, pairs + 1):
            self.ask_pair(f"{prefix}.pair.{p}", f"{name} pair {p}", transport)

    def ask_pair(self, prefix: str, label: str, transport: str) -> None:
        pair = self.text(
            f"{prefix}.name", f"{label}: HA pair name", check=self._unique(".name", "that name")
        )
        for role in ("primary", "backup"):
            self.text(
                f"{prefix}.{role}.app",
                f"{pair}: {role} ORS Application name",
                check=self._unique(".app", "application"),
            )
            host = self.text(
                f"{prefix}.{role}.host", f"{pair}: {role} runs on host", check=check_name
            )
            if f"host.{host}.platform" not in self.answers:
                self.ask_host(host, transport)

    def ask_host(self, host: str, transport: str) -> None:
        self.select(
            f"host.{host}.platform", f"Host {host}: platform", ("linux", "windows"), "linux"
        )
        if transport == "ssh":
            self.text(
                f"host.{host}.address",
                f"Host {host}: SSH address",
                default=host,
                check=check_address,
            )

    def ask_options_backend(self) -> None:
        kind = self.select(
            "options.backend",
            "Where are ORS application options read and written?",
            ("ini-file", "command", "manual"),
            "ini-file",
        )
        if kind == "ini-file":
            self.text(
                "options.path",
                "Options file path on the host; placeholders {app} {cluster} {pair} {host}",
                check=check_template("options_backend.path", ("app",)),
            )
        elif kind == "command":
            for which in ("get", "set"):
                self.text(
                    f"options.{which}_command",
                    f"Command that {which}s an application's options (values on stdin)",
                    check=check_template(f"options_backend.{which}_command", ("app",)),
                )

    def ask_services(self) -> None:
        for name, what, needs, optional in SERVICE_COMMANDS:
            self.text(
                f"services.{name}",
                f"Command that {what}" + (" (empty: none)" if optional else ""),
                optional=optional,
                check=allow_empty(check_template(f"services.{name}", needs)),
            )

    def ask_redis(self) -> None:
        self.text(
            "redis.nodes",
            "Redis Cluster nodes, host:port;host:port;...",
            check=check_nodes(3),
        )
        self.text(
            "redis.username", "Redis ACL user (empty: none)", optional=True, check=check_no_spaces
        )
        self.reference("redis.password", "Redis password")

    def _windows_hosts(self) -> list[str]:
        return sorted(
            k[len("host.") : -len(".platform")]
            for k, v in self.answers.items()
            if k.startswith("host.") and k.endswith(".platform") and v == "windows"
        )

    def _tls_allowed(self, enabled: bool) -> str | None:
        windows = self._windows_hosts()
        if enabled and windows:
            return (
                "TLS is not available for ORS on Windows, and these hosts run Windows: "
                + ", ".join(windows)
            )
        return None

    def ask_tls(self) -> None:
        enabled = self.confirm(
            "redis.tls.enabled",
            "Does ORS talk to Redis over TLS?",
            default=False,
            check=self._tls_allowed,
        )
        if not enabled:
            return
        cert = self.text(
            "redis.tls.cert", "tls-cert: client certificate (empty: none)", optional=True
        )
        self.text(
            "redis.tls.key",
            "tls-key: client key (goes with tls-cert)",
            optional=True,
            check=lambda key: _cert_and_key(cert, key),
        )
        cacert = self.text(
            "redis.tls.cacert", "tls-cacert: CA certificate (empty: none)", optional=True
        )
        if not cacert:
            self.text(
                "redis.tls.cacertdir",
                "tls-cacertdir: directory of CA certificates",
                optional=True,
                check=_ca_given,
            )
        self.text("redis.tls.sni", "tls-sni: server name (empty: none)", optional=True)

    def ask_cassandra(self) -> None:
        if not self.confirm(
            "cassandra.in_use", "Does ORS persist to Cassandra today?", default=True
        ):
            return
        self.text(
            "cassandra.contact_points",
            "Cassandra contact points, host:port;... (CQL port)",
            check=check_nodes(1),
        )
        self.text(
            "cassandra.thrift_port", "Cassandra Thrift port", default="9160", check=check_port
        )
        self.text("cassandra.keyspace", "ORS keyspace", default="orchestration", check=check_name)
        self.text(
            "cassandra.version",
            "Cassandra version (empty: found by the checks)",
            optional=True,
            check=check_cassandra_version,
        )
        self.text(
            "cassandra.username",
            "Cassandra user (empty: none)",
            optional=True,
            check=check_no_spaces,
        )
        self.reference("cassandra.password", "Cassandra password")


def _ca_given(cacertdir: str) -> str | None:
    if not cacertdir:
        return "with TLS on, ORS needs a CA: give tls-cacert (a file) or tls-cacertdir"
    return None


def _cert_and_key(cert: str, key: str) -> str | None:
    if cert and not key:
        return "tls-cert and tls-key go together: tls-cert is given, so give tls-key too"
    if key and not cert:
        return "tls-cert and tls-key go together: no tls-cert was given, so leave tls-key empty"
    return None


# From answers to a site document, and back
def _put(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set a field; an empty answer removes it (the schema's default applies)."""
    if value is None or value == "" or value == {}:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _hosts(answers: dict[str, Answer], base: dict[str, Any]) -> dict[str, Any]:
    hosts = copy.deepcopy(base)
    known_hosts = answers.get("ssh.known_hosts")
    ssh_common = {
        "user": answers.get("ssh.user"),
        "port": int(str(answers["ssh.port"])) if answers.get("ssh.port") else None,
        "key_file": answers.get("ssh.key_file"),
        "key_passphrase": answers.get("ssh.key_passphrase"),
        "known_hosts": None if known_hosts == DEFAULT_KNOWN_HOSTS else known_hosts,
        "jump_host": answers.get("ssh.jump_host"),
    }
    for key, platform in answers.items():
        if not (key.startswith("host.") and key.endswith(".platform")):
            continue
        name = key[len("host.") : -len(".platform")]
        host = hosts.setdefault(name, {})
        host["transport"] = answers["transport"]
        host["platform"] = platform
        if answers["transport"] == "local":
            host.pop("ssh", None)
            continue
        ssh = host.setdefault("ssh", {})
        _put(ssh, "address", answers.get(f"host.{name}.address"))
        for field_name, value in ssh_common.items():
            _put(ssh, field_name, value)
        _put(ssh, "accept_new_host_key", answers.get("ssh.accept_new_host_key") or None)
    return hosts


def _clusters(answers: dict[str, Answer], base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Clusters from the answers; fields not asked (memory_mb, version...) are kept per app."""
    old_apps = {
        app["name"]: app
        for cluster in base
        for pair in cluster.get("ha_pairs", [])
        for app in pair.get("apps", [])
    }
    clusters = []
    for c in range(1, int(str(answers["clusters"])) + 1):
        pairs = []
        for p in range(1, int(str(answers[f"cluster.{c}.pairs"])) + 1):
            prefix = f"cluster.{c}.pair.{p}"
            apps = []
            for role in ("primary", "backup"):
                name = str(answers[f"{prefix}.{role}.app"])
                app = copy.deepcopy(old_apps.get(name, {}))
                app.update(name=name, host=answers[f"{prefix}.{role}.host"], role=role)
                apps.append({"name": name, **app})
            pairs.append({"name": answers[f"{prefix}.name"], "apps": apps})
        clusters.append({"name": answers[f"cluster.{c}.name"], "ha_pairs": pairs})
    return clusters


def _options_backend(answers: dict[str, Answer], base: dict[str, Any]) -> dict[str, Any]:
    backend = {k: v for k, v in base.items() if k == "backup_suffix"}
    backend["kind"] = answers["options.backend"]
    for name in ("path", "get_command", "set_command"):
        _put(backend, name, answers.get(f"options.{name}"))
    return backend


def _services(answers: dict[str, Answer], base: dict[str, Any]) -> dict[str, Any]:
    services = copy.deepcopy(base)
    for name, *_ in SERVICE_COMMANDS:
        _put(services, name, answers.get(f"services.{name}"))
    return services


def _redis(answers: dict[str, Answer], base: dict[str, Any]) -> dict[str, Any]:
    redis = copy.deepcopy(base)
    redis["nodes"] = split_nodes(str(answers["redis.nodes"]))
    _put(redis, "username", answers.get("redis.username"))
    _put(redis, "password", answers.get("redis.password"))
    tls = {} if not answers.get("redis.tls.enabled") else {"enabled": True}
    for name in ("cert", "key", "cacert", "cacertdir", "sni"):
        _put(tls, name, answers.get(f"redis.tls.{name}") if tls else None)
    _put(redis, "tls", tls)
    return redis


def _cassandra(answers: dict[str, Answer], base: dict[str, Any] | None) -> dict[str, Any] | None:
    cassandra = copy.deepcopy(base or {})
    if not answers.get("cassandra.in_use"):
        return {**cassandra, "in_use": False} if base else None
    cassandra["in_use"] = True
    cassandra["contact_points"] = split_nodes(str(answers["cassandra.contact_points"]))
    cassandra["thrift_port"] = int(str(answers["cassandra.thrift_port"]))
    for name in ("keyspace", "version", "username", "password"):
        _put(cassandra, name, answers.get(f"cassandra.{name}"))
    return cassandra


def site_document(answers: dict[str, Answer], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The site file's content for these answers; `base` (an existing site document) supplies
    whatever the questions do not cover."""
    base = copy.deepcopy(base or {})
    built: dict[str, Any] = {
        "version": 1,
        "name": answers["name"],
        "hosts": _hosts(answers, base.pop("hosts", {})),
        "options_backend": _options_backend(answers, base.pop("options_backend", {})),
        "services": _services(answers, base.pop("services", {})),
    }
    if "ors" in base:
        built["ors"] = base.pop("ors")
    built["ors_clusters"] = _clusters(answers, base.pop("ors_clusters", []))
    built["redis"] = _redis(answers, base.pop("redis", {}))
    cassandra = _cassandra(answers, base.pop("cassandra", None))
    base.pop("version", None)
    base.pop("name", None)
    if cassandra is not None:
        built["cassandra"] = cassandra
    return {**built, **base}


def defaults_from_document(doc: dict[str, Any]) -> dict[str, Answer]:
    """The answers that would rebuild `doc`: the defaults of `init --from`."""
    answers: dict[str, Answer] = {"name": str(doc.get("name", ""))}
    hosts = doc.get("hosts", {})
    clusters = doc.get("ors_clusters", [])
    ors_hosts = [a["host"] for c in clusters for p in c["ha_pairs"] for a in p["apps"]]
    first = hosts.get(ors_hosts[0], {}) if ors_hosts else {}
    answers["transport"] = first.get("transport", "ssh")
    ssh = first.get("ssh") or {}
    for name in ("user", "port", "key_file", "key_passphrase", "known_hosts", "jump_host"):
        if ssh.get(name) is not None:
            answers[f"ssh.{name}"] = str(ssh[name])
    answers["ssh.accept_new_host_key"] = bool(ssh.get("accept_new_host_key", False))
    answers["clusters"] = str(len(clusters))
    for c, cluster in enumerate(clusters, start=1):
        answers[f"cluster.{c}.name"] = cluster["name"]
        answers[f"cluster.{c}.pairs"] = str(len(cluster["ha_pairs"]))
        for p, pair in enumerate(cluster["ha_pairs"], start=1):
            prefix = f"cluster.{c}.pair.{p}"
            answers[f"{prefix}.name"] = pair["name"]
            for app in pair["apps"]:
                answers[f"{prefix}.{app['role']}.app"] = app["name"]
                answers[f"{prefix}.{app['role']}.host"] = app["host"]
    for name in dict.fromkeys(ors_hosts):
        host = hosts.get(name, {})
        answers[f"host.{name}.platform"] = host.get("platform", "linux")
        address = (host.get("ssh") or {}).get("address")
        if address:
            answers[f"host.{name}.address"] = str(address)
    _defaults_of_sections(doc, answers)
    return answers


def _defaults_of_sections(doc: dict[str, Any], answers: dict[str, Answer]) -> None:
    backend = doc.get("options_backend", {})
    answers["options.backend"] = backend.get("kind", "ini-file")
    for name in ("path", "get_command", "set_command"):
        if backend.get(name):
            answers[f"options.{name}"] = str(backend[name])
    for name, value in doc.get("services", {}).items():
        if isinstance(value, str):
            answers[f"services.{name}"] = value
    redis = doc.get("redis", {})
    answers["redis.nodes"] = ";".join(redis.get("nodes", []))
    for name in ("username", "password"):
        if redis.get(name):
            answers[f"redis.{name}"] = str(redis[name])
    tls = redis.get("tls") or {}
    answers["redis.tls.enabled"] = bool(tls.get("enabled", False))
    for name in ("cert", "key", "cacert", "cacertdir", "sni"):
        if tls.get(name):
            answers[f"redis.tls.{name}"] = str(tls[name])
    cassandra = doc.get("cassandra")
    answers["cassandra.in_use"] = bool(cassandra and cassandra.get("in_use", True))
    for name, value in (cassandra or {}).items():
        if name == "contact_points":
            answers["cassandra.contact_points"] = ";".join(value)
        elif name in ("thrift_port", "keyspace", "version", "username", "password"):
            answers[f"cassandra.{name}"] = str(value)


# Writing and checking the file
def dump_yaml(data: dict[str, Any], header: str = "") -> str:
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt", pure=True)
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 200
    out = io.StringIO()
    yaml.dump(data, out)
    return header + out.getvalue()


def check_site_text(text: str, shown_as: str) -> list[str]:
    """The errors `validate` would report for this site file content."""
    from ors_migrate.rules import check, errors_in
    from ors_migrate.runner import load_playbook, make_plan
    from ors_migrate.site import load_site

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(shown_as).name
        path.write_text(text, encoding="utf-8")
        try:
            loaded = load_site(path)
            playbook = load_playbook("migrate-to-redis")
            findings = check(loaded, make_plan(loaded, playbook, read_current=False), playbook)
        except InputError as exc:
            return [exc.detail + (f" ({exc.field})" if exc.field else "")]
        return [f"{f.message} ({f.field})" if f.field else f.message for f in errors_in(findings)]


def write_atomically(path: Path, text: str, *, force: bool) -> None:
    """Write via a temporary file in the same directory; without `force` an existing file is
    never replaced, even one created while the questions were asked."""
    from ors_migrate.userfiles import write_user_file

    write_user_file(path, text, overwrite=force, rule="init")


def answers_yaml(answers: dict[str, Answer]) -> str:
    return dump_yaml(
        dict(answers), "# Answers for `ors-migrate init --answers FILE` (keys are question ids).\n"
    )


HEADER = (
    "# Site file written by `ors-migrate init`. Check it with `ors-migrate validate FILE`.\n"
    "# Secrets are references only (env:NAME, file:PATH or prompt), never values.\n"
)


@dataclass
class InitRequest:
    site: Path
    from_site: Path | None = None
    answers_file: Path | None = None
    sets: list[str] = field(default_factory=list)
    save_answers: Path | None = None
    force: bool = False


def _answers_from(request: InitRequest) -> dict[str, Any]:
    from ors_migrate.yamlfile import load_yaml

    answers: dict[str, Any] = {}
    if request.answers_file is not None:
        answers.update(load_yaml(request.answers_file, InputError, "answers file").data())
    for item in request.sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE, not '{item}'", rule="init.set")
        answers[key.strip()] = value
    return answers


def _base_document(request: InitRequest) -> dict[str, Any] | None:
    if request.from_site is None:
        return None
    from ors_migrate.site import load_site

    return dict(load_site(request.from_site).document.data())


def run_init(request: InitRequest) -> int:
    """Ask (or read) the answers, build the site, check it like `validate`, write it."""
    if request.site.exists() and not request.force:
        raise InputError(
            f"{request.site} exists; pass --force to overwrite it (or choose another file)",
            file=str(request.site),
            rule="init.exists",
        )
    base = _base_document(request)
    defaults = defaults_from_document(base) if base else {}
    automated = request.answers_file is not None or bool(request.sets)
    if automated:
        source = str(request.answers_file or "--set")
        prompter: Prompter = AnswersPrompter(_answers_from(request), source)
    elif sys.stdin.isatty() and sys.stdout.isatty():
        note = (
            f"Describing the site for {request.site}. Each answer is checked as you give it; "
            "nothing is written before the last one; Ctrl-C leaves without writing."
        )
        width = shutil.get_terminal_size().columns
        print(textwrap.fill(note, width=max(40, width - 1)), file=sys.stderr)
        prompter = TerminalPrompter()
    else:
        print(
            "error: init asks its questions in a terminal, and stdin is not one; answer them "
            "from a file with --answers FILE (and/or --set KEY=VALUE)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    answers = Wizard(prompter, defaults).run()
    if isinstance(prompter, AnswersPrompter) and prompter.not_asked():
        raise InputError(
            "answers for questions that were not asked: " + ", ".join(prompter.not_asked()),
            file=str(request.answers_file or "--set"),
            rule="init.answer-unknown",
        )
    if request.save_answers is not None:
        write_atomically(request.save_answers, answers_yaml(answers), force=request.force)
    return _write_site(request, site_document(answers, base), answers)


def _write_site(request: InitRequest, document: dict[str, Any], answers: dict[str, Answer]) -> int:
    text = dump_yaml(document, HEADER)
    problems = check_site_text(text, str(request.site))
    if problems:
        kept = request.site.with_name(request.site.name + ".answers.yaml")
        write_atomically(kept, answers_yaml(answers), force=True)
        print(
            f"error: the site would not validate; nothing written to {request.site}",
            file=sys.stderr,
        )
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(
            f"your answers are in {kept}: fix them and run init --answers {kept}", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    write_atomically(request.site, text, force=request.force)
    print(
        f"wrote {request.site}; check it with `ors-migrate validate {request.site}`",
        file=sys.stderr,
    )
    return 0
