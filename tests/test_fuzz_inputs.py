"""Bad input never gets a traceback.

Site files and playbooks, generated from scratch or mutated from the real ones (the example
sites, the lab's site file, the bundled playbooks), go through what `validate` and `plan` do:
in-process for thousands of cases, and through the real command line for a few hundred. Only
`InputError`s may escape, each naming its file, and its line whenever the input is YAML; every
finding names its file and line; every plan renders in every format as text a terminal can
print, and `--format json` is strict JSON.

ORS_MIGRATE_FUZZ_SCALE=N runs N times as many cases, randomly seeded (CI runs a fixed set).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from conftest import REPO, cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from ors_migrate.errors import InputError
from ors_migrate.lab.lab import LabShape, _lab_config, _site_yaml, generic_topology
from ors_migrate.lab.layout import LabLayout
from ors_migrate.playbook import (
    ActionSpec,
    LoadedPlaybook,
    StateSpec,
    resolve_playbook_path,
)
from ors_migrate.render import FORMATS, render_plan
from ors_migrate.rules import Finding, check
from ors_migrate.runner import action_table, load_playbook, make_plan
from ors_migrate.site import LoadedSite, load_site

SCALE = float(os.environ.get("ORS_MIGRATE_FUZZ_SCALE", "1"))
MIN_CASES = 2000
CASE_TIME_LIMIT_S = 10.0
CASES: Counter[str] = Counter()
PLANNED: Counter[str] = Counter()
KNOWN_HITS: Counter[str] = Counter()


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- seeds -------------------------------------------------------------------------------------


def lab_site_text(secure: bool) -> bytes:
    """The site file `lab up` writes for two clusters of two HA pairs (no lab is started)."""
    layout = LabLayout(Path("/nonexistent/ors-lab"))
    nodes = [f"127.0.0.1:{port}" for port in range(30001, 30007)]
    config = _lab_config(
        LabShape(), generic_topology(LabShape()), nodes, {"cql_port": 9042, "thrift_port": 9160}
    )
    if secure:
        config["redis_tls"] = {"cacert": "/lab/ca.crt", "cert": "/lab/c.crt", "key": "/lab/c.key"}
    return _site_yaml(layout, config).encode()


EXAMPLE_SITES = sorted((REPO / "examples").glob("*.yaml"))
PLAYBOOK_FILES = sorted((REPO / "ors_migrate" / "playbooks").glob("*.yaml"))
SITE_SEEDS = [p.read_bytes() for p in EXAMPLE_SITES] + [lab_site_text(False), lab_site_text(True)]
PLAYBOOK_SEEDS = [path.read_bytes() for path in PLAYBOOK_FILES]


# --- mutations of real files -------------------------------------------------------------------

ODD_VALUES = [
    b"0", b"-1", b"65536", b"1e400", b"-1e400", b".inf", b"-.inf", b".nan", b"0x1F", b"0o17",
    b"1_000", b"99999999999999999999999999999999", b"9" * 5000,
    b"true", b"no", b"null", b"~", b"''", b'""', b"[]", b"{}", b"[1, [2, [3]]]", b"{a: {b: c}}",
    b"2001-12-14", b"2001-12-14t21:59:43.10-05:00", b"12:30:45",
    b"!!binary aGVsbG8=", b"!!set {a, b}", b"!!omap [a: 1, b: 2]", b"!!str 1", b"!!int x",
    b"!!float abc", b"!custom x", b"!!python/object/apply:os.system [echo]",
    b"'{unknown}'", b"'{'", b"'}'", b"'a {0} b'", b"'{app.__class__}'", b"'{app[0]}'",
    b"\"awk '{print $1}' {app}\"", b"'%s %(app)s $app'",
    b"x" * 20000, "é🙂\u202e\u2028".encode(), b'"\\ud800"', b'"\\x00"', b'"a\\tb\\nc"',
    b"env:X", b"env:", b"file:", b"prompt", b"hunter2",
    b"host:0", b"host:65536", b"'[::1]:6379'", b"':6379'", b"host:port", b"host:6379:1",
    b"*undefined", b"&dangling", b"|\n  block\n", b">-", b"? complex", b"- a", b"a: b: c",
    b"@reserved", b"`tick", b"%", b"#comment",
    b"8.1.401.10", b"8.1", b"08.01.0401.10", b"8..1", b"v8", b"'8.1.401.10 '",
    b"cassandra_in_use", b"redis_tls", b"to_start", b"enable.9", b"prepare.1",
    b"redis.monitor", b"options.set", b"operator.note", b"service.switchover",
    b"site", b"ors_cluster", b"ha_pair", b"app", b"backup", b"primary", b"down",
]  # fmt: skip
UNKNOWN_KEYS = [
    b"extra", b"nmae", b"hsots", b"ha_pair", b"<<", b"'quoted key'", b"? [complex]", b"1",
    b"null", b"password", b"ssh", b"role", b"with", b"states", b"name", b"\xc3\xa9",
]  # fmt: skip
RAW_BYTES = [
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\t", b"\r", b"\r\n", b"\x0c", b"\x85",
    b"{", b"}", b"[", b"]", b":", b"- ", b"&a ", b"*a", b"!!binary ", b"? ", b"---\n",
    b"...\n", b"%YAML 1.1\n", b"%TAG ! tag:x,2000:\n", b"\xef\xbb\xbf", b"\\", b'"', b"'",
    b"#", b"|", b">", b"\xe2\x80\xa8",
]  # fmt: skip
KEY_VALUE = re.compile(rb"^(\s*(?:- )?)([^:#\n]+?):([ \t]+|$)(.*?)(\r?\n?)$", re.S)
LIST_ITEM = re.compile(rb"^(\s*- )(.*?)(\r?\n?)$", re.S)


@dataclass(frozen=True)
class Mutation:
    """One edit of a file, at positions taken modulo its size so that any draw applies."""

    kind: str
    at: int
    other: int
    payload: bytes

    def apply(self, text: bytes) -> bytes:
        return MUTATORS[self.kind](text, self)


def _lines(text: bytes) -> list[bytes]:
    return text.splitlines(keepends=True) or [b""]


def _indent(line: bytes) -> bytes:
    stripped = line.lstrip(b" ")
    width = len(line) - len(stripped) + (2 if stripped.startswith(b"- ") else 0)
    return b" " * width


def delete_lines(text: bytes, m: Mutation) -> bytes:
    lines = _lines(text)
    start = m.at % len(lines)
    return b"".join(lines[:start] + lines[start + 1 + m.other % 5 :])


def duplicate_line(text: bytes, m: Mutation) -> bytes:
    """Duplicate keys, duplicate list items, duplicate names."""
    lines = _lines(text)
    at = m.at % len(lines)
    return b"".join(lines[: at + 1] + [lines[at]] + lines[at + 1 :])


def move_line(text: bytes, m: Mutation) -> bytes:
    lines = _lines(text)
    line = lines.pop(m.at % len(lines))
    lines.insert(m.other % (len(lines) + 1), line)
    return b"".join(lines)


def truncate(text: bytes, m: Mutation) -> bytes:
    return text[: m.at % (len(text) + 1)]


def flip_byte(text: bytes, m: Mutation) -> bytes:
    if not text:
        return bytes([m.other % 256])
    at = m.at % len(text)
    return text[:at] + bytes([m.other % 256]) + text[at + 1 :]


def insert_bytes(text: bytes, m: Mutation) -> bytes:
    at = m.at % (len(text) + 1)
    return text[:at] + m.payload + text[at:]


def replace_value(text: bytes, m: Mutation) -> bytes:
    """Give a `key: value` or `- value` line a value of another type or shape."""
    lines = _lines(text)
    at = m.at % len(lines)
    if match := KEY_VALUE.match(lines[at]):
        lines[at] = match[1] + match[2] + b": " + m.payload + match[5]
    elif match := LIST_ITEM.match(lines[at]):
        lines[at] = match[1] + m.payload + match[3]
    return b"".join(lines)


def insert_unknown_key(text: bytes, m: Mutation) -> bytes:
    lines = _lines(text)
    at = m.at % len(lines)
    new = _indent(lines[at]) + m.payload + b": " + ODD_VALUES[m.other % len(ODD_VALUES)] + b"\n"
    return b"".join(lines[:at] + [new] + lines[at:])


def nest_deeply(text: bytes, m: Mutation) -> bytes:
    depth = 1 + m.other % 400
    styles = [b"[" * depth + b"x" + b"]" * depth, b"{a: " * depth + b"x" + b"}" * depth]
    return replace_value(text, Mutation("replace_value", m.at, 0, styles[m.other % 2]))


def tabify(text: bytes, m: Mutation) -> bytes:
    lines = _lines(text)
    at = m.at % len(lines)
    lines[at] = re.sub(rb"^ +", b"\t", lines[at])
    return b"".join(lines)


def anchor_and_alias(text: bytes, m: Mutation) -> bytes:
    """Anchor one value and use it at another place (sometimes before it is defined)."""
    lines = _lines(text)
    at, other = m.at % len(lines), m.other % len(lines)
    if match := KEY_VALUE.match(lines[at]):
        lines[at] = match[1] + match[2] + b": &anc " + match[4] + match[5]
    if match := KEY_VALUE.match(lines[other]):
        lines[other] = match[1] + match[2] + b": *anc" + match[5]
    elif match := LIST_ITEM.match(lines[other]):
        lines[other] = match[1] + b"*anc" + match[3]
    return b"".join(lines)


def alias_fan_out(text: bytes, m: Mutation) -> bytes:
    """A small billion laughs: at most 10**4 values here; the full-size one goes through the
    command line, under a memory limit (`test_hostile_files_...`)."""
    levels, fan = 1 + m.at % 4, 2 + m.other % 9
    lines = [b"lol0: &l0 [lol]\n"]
    for level in range(1, levels + 1):
        aliases = b", ".join([b"*l%d" % (level - 1)] * fan)
        lines.append(b"lol%d: &l%d [%s]\n" % (level, level, aliases))
    return b"".join(lines) + text


MUTATORS: dict[str, Callable[[bytes, Mutation], bytes]] = {
    "delete_lines": delete_lines,
    "duplicate_line": duplicate_line,
    "move_line": move_line,
    "truncate": truncate,
    "flip_byte": flip_byte,
    "insert_bytes": insert_bytes,
    "replace_value": replace_value,
    "insert_unknown_key": insert_unknown_key,
    "nest_deeply": nest_deeply,
    "tabify": tabify,
    "anchor_and_alias": anchor_and_alias,
    "alias_fan_out": alias_fan_out,
}
PAYLOADS = {
    "insert_bytes": RAW_BYTES,
    "replace_value": ODD_VALUES,
    "insert_unknown_key": UNKNOWN_KEYS,
}


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    kind = draw(st.sampled_from(sorted(MUTATORS)))
    payload = draw(st.sampled_from(PAYLOADS.get(kind, [b""])))
    return Mutation(kind, draw(st.integers(0, 1 << 20)), draw(st.integers(0, 1 << 20)), payload)


def edited(text: bytes, edits: list[Mutation]) -> bytes:
    for mutation in edits:
        text = mutation.apply(text)
    return text


file_edits = st.lists(mutations(), min_size=1, max_size=4)


@functools.cache
def plannable_pairs() -> list[tuple[int, int]]:
    """(site seed, playbook seed) pairs that plan without error: where mutations start from."""
    pairs = []
    with tempfile.TemporaryDirectory() as directory:
        for s, raw in enumerate(SITE_SEEDS):
            path = Path(directory) / f"site-{s}.yaml"
            path.write_bytes(raw)
            site = load_site(path)
            for p, playbook in enumerate(PLAYBOOK_FILES):
                try:
                    make_plan(site, load_playbook(str(playbook)))
                except InputError:
                    continue
                pairs.append((s, p))
    return pairs


seed_pairs = st.deferred(lambda: st.sampled_from(plannable_pairs()))


def mutated_sites() -> st.SearchStrategy[tuple[bytes, int]]:
    """A mutated seed site, and the seed playbook it planned with."""
    return st.builds(lambda pair, chosen: (edited(SITE_SEEDS[pair[0]], chosen), pair[1]),
                     seed_pairs, file_edits)  # fmt: skip


def mutated_playbooks() -> st.SearchStrategy[tuple[bytes, int]]:
    """A mutated seed playbook, and the seed site it planned with."""
    return st.builds(lambda pair, chosen: (edited(PLAYBOOK_SEEDS[pair[1]], chosen), pair[0]),
                     seed_pairs, file_edits)  # fmt: skip


# --- documents generated from scratch ----------------------------------------------------------
# Mostly valid documents, then a few structural edits (a value replaced by an odd one, a key
# removed, an unknown key added), written as block YAML or as JSON, sometimes byte-edited too.

PLACEHOLDERS = ["{app}", "{host}", "{cluster}", "{pair}", "{peer}", "{install_dir}"]
ODD_TEXT = [
    "", " ", "{unknown}", "{", "}", "{0}", "{app!r}", "{app.real}", "awk '{print $1}'", "x" * 300,
    "env:X", "prompt", "file:/x", "8.1.401.10", "abc", "host:6379", "é\u202e", "\ud800",
    "x {version}", "x {primary}", "x {backup}", "x {env_file}", "x {changes_file}", "{{x}}",
]  # fmt: skip
odd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(ODD_TEXT),
)
odd_values = st.recursive(
    odd_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
names = st.builds(
    str.__add__, st.sampled_from(ALPHANUMERIC), st.text(ALPHANUMERIC + "_.-", max_size=9)
)
paths = st.lists(st.text("abcdefghijklmnopqrstuvwxyz.", min_size=1, max_size=8), min_size=1,
                 max_size=4).map(lambda parts: "/" + "/".join(parts))  # fmt: skip
commands = st.lists(
    st.sampled_from(["/opt/genesys/bin/mlcmd.sh", " -start ", " ", "--", *PLACEHOLDERS]),
    min_size=1,
    max_size=5,
).map("".join)
host_ports = st.builds("{}:{}".format, names, st.integers(1, 65535))
secret_refs = st.sampled_from(["env:ORS_REDIS_PASSWORD", "file:/etc/ors/pw", "prompt"])
versions = st.sampled_from(["8.1.401.10", "8.1.401.12", "8.1.401.13", "8.1.400.48", "8.1.300.1"])
positive = st.floats(min_value=0.01, max_value=1e6)


def some(**fields: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    return fields


def mapping(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


ssh_settings = mapping(
    some(address=names),
    some(port=st.integers(1, 65535), user=names, key_file=paths, key_passphrase=secret_refs,
         jump_host=names, accept_new_host_key=st.booleans(), connect_timeout_s=positive),
)  # fmt: skip
hosts_entry = st.one_of(
    mapping(some(transport=st.just("local")), some(platform=st.sampled_from(["linux", "windows"]))),
    mapping(
        some(transport=st.just("ssh")),
        some(platform=st.sampled_from(["linux", "windows"]), ssh=ssh_settings),
    ),
)
options_backend = st.one_of(
    mapping(
        some(kind=st.just("ini-file"), path=st.builds("/opt/{}/{{app}}.ini".format, names)), {}
    ),
    mapping(some(kind=st.just("command"), get_command=commands, set_command=commands), {}),
    mapping(some(kind=st.just("manual")), {}),
)
services = mapping(
    some(start=commands, stop=commands, status=commands, switchover=commands),
    some(version=commands, sessions=commands, upgrade=commands.map(lambda c: c + " {version}"),
         ready_timeout_s=positive, poll_interval_s=positive),
)  # fmt: skip
tls = mapping(
    some(enabled=st.booleans()),
    some(cert=paths, key=paths, cacert=paths, cacertdir=paths, sni=names),
)
redis = mapping(
    some(nodes=st.lists(host_ports, min_size=1, max_size=6)),
    some(mode=st.sampled_from(["cluster", "cluster", "standalone", "sentinel"]), username=names,
         password=secret_refs, tls=tls, node_memory_mb=st.integers(1, 10**6),
         aof=st.booleans(), replicas_per_master=st.integers(0, 3),
         monitor=mapping({}, some(window_s=positive, interval_s=positive,
                                  max_cpu_percent=st.floats(1, 100)))),
)  # fmt: skip
fips_settings = mapping(
    some(
        lca_env_file=paths,
        windows_config_dir=st.just("C:\\GCTI\\ORS_FIPS_CFG"),
        security_pack_dir=paths,
    ),
    some(lca_restart=commands, verify_providers=st.booleans()),
)
ors_settings = mapping(
    some(fips=fips_settings),
    some(min_version=versions, target_version=versions, sessionid_with_nodeid_section=names,
         extra_persistence_options=st.dictionaries(names, names, max_size=2),
         digital_persistence=mapping(some(section=names, option=names, value=names), {}),
         fips_enabled=st.booleans()),
)  # fmt: skip


@st.composite
def ors_clusters(draw: st.DrawFn, hosts: list[str]) -> list[dict[str, Any]]:
    """One install folder per host: applications on a host share LCA's environment (FIPS)."""
    details = mapping({}, some(memory_mb=st.integers(1, 10**5), version=versions))
    clusters = []
    for c in range(draw(st.integers(1, 2))):
        pairs = []
        for p in range(draw(st.integers(1, 2))):
            apps = []
            for role in ("primary", "backup"):
                host = draw(st.sampled_from(hosts))
                app = {"name": f"ors-{c}-{p}-{role}", "host": host, "role": role}
                apps.append({**app, "install_dir": f"/opt/genesys/ors-{host}", **draw(details)})
            pairs.append({"name": f"pair-{c}-{p}", "apps": apps})
        clusters.append({"name": f"ORS_CL{c}", "ha_pairs": pairs})
    return clusters


@st.composite
def clean_sites(draw: st.DrawFn) -> dict[str, Any]:
    hosts = draw(st.dictionaries(names, hosts_entry, min_size=1, max_size=2))
    removal = mapping(
        {},
        some(drop_keyspace=st.booleans(), snapshot=st.booleans(),
             snapshot_hosts=st.lists(st.sampled_from(sorted(hosts)), min_size=1, max_size=2)),
    )  # fmt: skip
    cassandra = mapping(
        some(contact_points=st.lists(host_ports, min_size=1, max_size=3)),
        some(in_use=st.booleans(), version=st.sampled_from(["2.2.19", "3.11.4", "4.0.1"]),
             password=secret_refs, nodetool_host=st.sampled_from(sorted(hosts)), removal=removal),
    )  # fmt: skip
    return draw(mapping(
        some(version=st.just(1), name=names, hosts=st.just(hosts),
             options_backend=options_backend, services=services,
             ors_clusters=ors_clusters(sorted(hosts)), redis=redis, ors=ors_settings),
        some(cassandra=cassandra),
    ))  # fmt: skip


def bundled_action_args() -> dict[str, list[dict[str, Any]]]:
    """The `with:` arguments each action is given in the bundled playbooks."""
    found: dict[str, list[dict[str, Any]]] = {}
    for text in PLAYBOOK_SEEDS:
        for state in YAML(typ="safe", pure=True).load(text)["states"]:
            for action in state["actions"]:
                found.setdefault(action["do"], []).append(action.get("with") or {})
    return found


ACTION_ARGS = bundled_action_args()


@st.composite
def clean_actions(draw: st.DrawFn, scope: str) -> dict[str, Any]:
    fitting = sorted(n for n, a in action_table().items() if scope in a.scopes)
    name = draw(st.sampled_from(fitting or sorted(action_table())))
    action: dict[str, Any] = {"do": name}
    kind = action_table()[name]
    if kind.needs_role and scope == "ha_pair":
        action["role"] = draw(st.sampled_from(["primary", "backup"]))
    args = draw(st.sampled_from(ACTION_ARGS.get(name, [{}])))
    if args:
        action["with"] = copy.deepcopy(args)
    if draw(st.booleans()):
        action["when"] = draw(st.sampled_from(get_args(ActionSpec.model_fields["when"].annotation)))
    return action


@st.composite
def clean_states(draw: st.DrawFn, index: int) -> dict[str, Any]:
    scope = draw(st.sampled_from(["site", "ors_cluster", "ha_pair", "app"]))
    state = {
        "id": f"state-{index}",
        "title": f"State {index}",
        "seed_step": draw(st.sampled_from([None, "prepare.4", "enable.1", "rollback.1", "post.1"])),
        "scope": scope,
        "actions": draw(st.lists(clean_actions(scope), min_size=1, max_size=3)),
    }
    optional = some(
        gate=st.text(min_size=1, max_size=40),
        when=st.sampled_from(get_args(StateSpec.model_fields["when"].annotation)),
        enables_redis=st.booleans(),
        on_failure=st.sampled_from(["stop", "rollback"]),
        retry=mapping({}, some(attempts=st.integers(1, 20), backoff_s=st.floats(0, 60))),
        timeout_s=positive,
    )
    return {**state, **draw(mapping({}, optional))}


@st.composite
def clean_playbooks(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 5))
    return {
        "name": "fuzzed",
        "title": "A generated playbook",
        **draw(mapping({}, some(rollback_playbook=st.sampled_from(["rollback", None])))),
        "states": [draw(clean_states(i)) for i in range(count)],
    }


def _places(node: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value in a document, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        yield node, key
        if isinstance(value, dict | list) and value:
            yield from _places(value)


@dataclass(frozen=True)
class Edit:
    kind: str  # "replace" | "delete" | "add"
    at: int
    value: Any

    def apply(self, document: dict[str, Any]) -> None:
        places = list(_places(document))
        container, key = places[self.at % len(places)]
        if self.kind == "replace":
            container[key] = self.value
        elif self.kind == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[f"unknown_{self.at % 3}"] = self.value
        else:
            container.append(self.value)


def perturbed(documents: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    one_edit = st.builds(
        Edit, st.sampled_from(["replace", "replace", "delete", "add"]), st.integers(0, 1 << 16),
        odd_values,
    )  # fmt: skip
    edits: st.SearchStrategy[list[Edit]] = st.one_of(
        st.just([]), st.lists(one_edit, min_size=1, max_size=2)
    )

    def apply(document: dict[str, Any], chosen: list[Edit]) -> dict[str, Any]:
        document = copy.deepcopy(document)
        for edit in chosen:
            edit.apply(document)
        return document

    return st.builds(apply, documents, edits)


def yaml_scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return json.dumps(value, ensure_ascii=False)


def block_yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML with JSON scalars (double-quoted strings are valid YAML)."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines += [f"{pad}{yaml_scalar(str(key))}:", *block_yaml(item, indent + 2)]
            else:
                lines.append(f"{pad}{yaml_scalar(str(key))}: {yaml_scalar(item)}")
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            if isinstance(item, dict | list) and item:
                inner = block_yaml(item, indent + 2)
                lines += [f"{pad}- {inner[0][indent + 2 :]}", *inner[1:]]
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
        return lines
    return [pad + yaml_scalar(value)]


def written(document: dict[str, Any], as_json: bool) -> bytes:
    text = json.dumps(document, indent=2) if as_json else "\n".join(block_yaml(document)) + "\n"
    return text.encode("utf-8", "surrogatepass")


def generated(documents: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    files = st.builds(written, perturbed(documents), st.booleans())
    return st.one_of(
        files, files, files, st.builds(edited, files, st.lists(mutations(), max_size=1))
    )


# --- what `validate` and `plan` do, and what must hold -----------------------------------------


class Hang(Exception):
    """An input took longer than any input may."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def is_yaml(raw: bytes) -> bool:
    """Whether the input is well-formed YAML text (then every error must name a line)."""
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return False
    if "\x00" in text:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            YAML(typ="rt", pure=True).compose(text)
    except Exception:
        return False
    return True


def assert_located(err: InputError, inputs: dict[str, bytes]) -> None:
    """Each problem names one of the input files, and its line whenever that file is YAML."""
    printable(err.render())
    for problem in getattr(err, "problems", [err]):
        assert problem.file in inputs, f"error names no input file: {problem.render()}"
        if problem.line is None:
            assert not is_yaml(inputs[problem.file]), f"error names no line: {problem.render()}"


def assert_findings_located(findings: list[Finding]) -> None:
    for finding in findings:
        assert finding.file and finding.line, f"finding not located: {finding}"


def validate_and_plan(loaded: LoadedSite, playbook: LoadedPlaybook) -> None:
    """`validate` (rules on the plan without current options) and `plan` (every format)."""
    assert_findings_located(
        check(loaded, make_plan(loaded, playbook, read_current=False), playbook)
    )
    plan = make_plan(loaded, playbook)
    for fmt in FORMATS:
        printable(render_plan(plan, fmt))
    json.loads(render_plan(plan, "json"), parse_constant=refuse_constant)


class UnprintableOutput(Exception):
    """Text the command line would fail to write to a terminal or a pipe."""


def printable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnprintableOutput(f"{exc}: {text[max(0, exc.start - 40) : exc.end + 40]!r}") from None
    return text


def innermost_product_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/ors_migrate/" in f.filename]
    return (
        f"{frames[-1].filename.rsplit('/ors_migrate/', 1)[1]}:{frames[-1].name}" if frames else ""
    )


@dataclass(frozen=True)
class KnownBug:
    """A bug the fuzzing found, reported to the owner of `owner_file`. While it is in
    KNOWN_BUGS, inputs that hit it are counted, not failed, so that the fuzzing keeps looking
    for new ones, and its minimal cases below are strict xfails: they fail once the bug is
    fixed, and then it leaves KNOWN_BUGS while its cases stay as regression tests."""

    name: str
    owner_file: str
    seen_in_process: Callable[[BaseException], bool]
    seen_on_stderr: Callable[[str], bool]


def crash_in(where: str | tuple[str, ...], *exceptions: type[BaseException]) -> dict[str, Any]:
    """A crash raised in `where`: "<module under ors_migrate/>:<function>", or several."""
    places = (where,) if isinstance(where, str) else where

    def in_process(exc: BaseException) -> bool:
        return isinstance(exc, exceptions) and innermost_product_frame(exc) in places

    def on_stderr(stderr: str) -> bool:
        frames = re.findall(r'File "[^"]*/ors_migrate/([^"]+)", line \d+, in (\S+)', stderr)
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        return (
            bool(frames)
            and ":".join(frames[-1]) in places
            and any(last.startswith(e.__name__) for e in exceptions)
        )

    return {"seen_in_process": in_process, "seen_on_stderr": on_stderr}


def unlocated(*rules: str) -> dict[str, Any]:
    """An InputError of one of `rules` that names no file or no line."""

    def in_process(exc: BaseException) -> bool:
        return isinstance(exc, InputError) and exc.rule in rules

    def on_stderr(stderr: str) -> bool:
        return any(f"[{rule}]" in stderr for rule in rules)

    return {"seen_in_process": in_process, "seen_on_stderr": on_stderr}


PLAN_TIME_SITE_RULES = (
    "cassandra-defined", "removal-keeps-redis", "snapshot-hosts", "fips-env-value",
    "fips-install-dir", "fips-env-file", "fips-config-dir", "fips-shared-environment",
    "fips-platform", "fips-security-pack",
)  # fmt: skip
TEMPLATE_ERRORS = (KeyError, ValueError, IndexError, AttributeError)
TEMPLATE_FILLERS = (
    "actions/service.py:render", "actions/fips.py:fips_paths", "actions/fips.py:_command",
    "site.py:options_path", "runner.py:read",
)  # fmt: skip
SITE_OWNER = "ors_migrate/site.py"
TEMPLATE_BRACES = KnownBug(
    "a site template with braces that are not its placeholders crashes the planner",
    f"{SITE_OWNER} (check templates when loading); crash sites: {', '.join(TEMPLATE_FILLERS)}",
    **crash_in(TEMPLATE_FILLERS, *TEMPLATE_ERRORS),
)
EMPTY_MERMAID = KnownBug(
    "a plan with no states has no mermaid diagram",
    "ors_migrate/render.py",
    **crash_in("render.py:as_mermaid", IndexError),
)
ARGUMENT_TYPE = KnownBug(
    "an action argument of the wrong type (window_s: abc) crashes the planner",
    "ors_migrate/playbook.py (check `with:` per action) or ors_migrate/actions/checks.py",
    **crash_in("actions/checks.py:preview", ValueError, TypeError, OverflowError),
)
MERGED_KEY = KnownBug(
    "an unknown key merged in with `<<:` crashes the error's line lookup",
    "ors_migrate/yamlfile.py",
    **crash_in("yamlfile.py:line_of", KeyError),
)
SURROGATES = KnownBug(
    "a surrogate escape (\\ud83d\\ude00, as json.dumps writes) makes unprintable output",
    "ors_migrate/yamlfile.py",
    seen_in_process=lambda exc: isinstance(exc, UnprintableOutput),
    seen_on_stderr=lambda stderr: "surrogates not allowed" in stderr,
)
ANCHOR_WARNING = KnownBug(
    "ruamel's ReusedAnchorWarning is printed to stderr",
    "ors_migrate/yamlfile.py",
    seen_in_process=lambda exc: type(exc).__name__ == "ReusedAnchorWarning",
    seen_on_stderr=lambda stderr: "ReusedAnchorWarning" in stderr,
)
PLAN_TIME_UNLOCATED = KnownBug(
    "site errors found while planning name no file or line",
    "ors_migrate/actions/fips.py, ors_migrate/actions/cassandra_removal.py",
    **unlocated(*PLAN_TIME_SITE_RULES),
)
CONSTRUCT_UNLOCATED = KnownBug(
    "a YAML value that cannot be built (!!int x, 5000 digits) names no line",
    "ors_migrate/yamlfile.py",
    **unlocated("yaml-syntax"),
)
PLACEHOLDER_NOT_FILLED = KnownBug(
    "a placeholder the site file accepts for a template is not filled for that template",
    f"{SITE_OWNER} (placeholders per template, not per section) or the crash sites: "
    f"{', '.join(TEMPLATE_FILLERS)}",
    **crash_in(TEMPLATE_FILLERS, KeyError),
)
SERVICE_PLACEHOLDER_NOT_FILLED = KnownBug(
    "a service command accepts {version}, {primary} and {backup}, filled only for upgrade and "
    "switchover",
    f"{SITE_OWNER} (placeholders per service command) or ors_migrate/actions/service.py",
    **crash_in("actions/service.py:render", KeyError),
)
# The bugs above but the last are fixed and no longer tolerated; each keeps its minimal case.
KNOWN_BUGS: list[KnownBug] = []


def known_bug(exc: BaseException) -> bool:
    found = next((bug for bug in KNOWN_BUGS if bug.seen_in_process(exc)), None)
    if found is not None:
        KNOWN_HITS[found.name] += 1
    return found is not None


@contextmanager
def warnings_as_errors() -> Iterator[None]:
    """A warning would be printed on the operator's terminal: it counts as a crash."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        yield


def check_input(
    raw: bytes, path: Path, run: Callable[[Path], None], partner: str, kind: str
) -> None:
    """Run `run` on the input written to `path`: it plans, or an InputError comes out that is
    located in that file or in its `partner` (the seed site or playbook it is planned with)."""
    path.write_bytes(raw)
    inputs = {str(path): raw, partner: Path(partner).read_bytes()}
    CASES[kind] += 1
    try:
        with time_limit(CASE_TIME_LIMIT_S), warnings_as_errors():
            run(path)
    except InputError as err:
        try:
            assert_located(err, inputs)
        except AssertionError:
            if not known_bug(err):
                raise
        return
    except Exception as exc:
        if not known_bug(exc):
            raise
        return
    PLANNED[kind] += 1


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def playbooks() -> list[LoadedPlaybook]:
    """Every seed playbook, loaded: the partners of the site cases."""
    return [load_playbook(str(path)) for path in PLAYBOOK_FILES]


@pytest.fixture(scope="module")
def sites(workdir: Path) -> list[LoadedSite]:
    """Every seed site, loaded: the partners of the playbook cases."""
    return [load_site(path) for path in write_seed_sites(workdir)]


def write_seed_sites(directory: Path) -> list[Path]:
    paths = [directory / f"seed-site-{index}.yaml" for index in range(len(SITE_SEEDS))]
    for path, raw in zip(paths, SITE_SEEDS, strict=True):
        path.write_bytes(raw)
    return paths


def site_runner(playbook: LoadedPlaybook) -> Callable[[Path], None]:
    return lambda path: validate_and_plan(load_site(path), playbook)


def playbook_runner(site: LoadedSite) -> Callable[[Path], None]:
    return lambda path: validate_and_plan(site, load_playbook(str(path)))


any_playbook = st.sampled_from(range(len(PLAYBOOK_FILES)))
any_site = st.sampled_from(range(len(SITE_SEEDS)))


def test_every_seed_site_plans_with_a_seed_playbook():
    planned = {site for site, _ in plannable_pairs()}
    assert planned == set(range(len(SITE_SEEDS)))
    assert ACTION_ARGS, "the bundled playbooks give the generator its action arguments"


@pytest.mark.slow
@fuzz_settings(650)
@given(case=mutated_sites())
def test_mutated_site_files_get_a_located_error_or_a_plan(case, playbooks, workdir):
    raw, chosen = case
    playbook = playbooks[chosen]
    check_input(raw, workdir / "site.yaml", site_runner(playbook), playbook.path, "site mutated")


@pytest.mark.slow
@fuzz_settings(450)
@given(raw=generated(clean_sites()), chosen=any_playbook)
def test_generated_site_files_get_a_located_error_or_a_plan(raw, chosen, playbooks, workdir):
    playbook = playbooks[chosen]
    runner = site_runner(playbook)
    check_input(raw, workdir / "site.yaml", runner, playbook.path, "site generated")


@pytest.mark.slow
@fuzz_settings(450)
@given(case=mutated_playbooks())
def test_mutated_playbooks_get_a_located_error_or_a_plan(case, sites, workdir):
    raw, chosen = case
    site = sites[chosen]
    check_input(
        raw, workdir / "playbook.yaml", playbook_runner(site), site.path, "playbook mutated"
    )


@pytest.mark.slow
@fuzz_settings(450)
@given(raw=generated(clean_playbooks()), chosen=any_site)
def test_generated_playbooks_get_a_located_error_or_a_plan(raw, chosen, sites, workdir):
    site = sites[chosen]
    runner = playbook_runner(site)
    check_input(raw, workdir / "playbook.yaml", runner, site.path, "playbook generated")


# --- the real command line ---------------------------------------------------------------------

CLI_INPUTS = 80
CLI_WORKERS = 4


@dataclass(frozen=True)
class CliCase:
    kind: str  # "site" | "playbook"
    raw: bytes
    partner: int  # the seed playbook of a site case, the seed site of a playbook case

    def files(self, path: Path, seed_sites: list[Path]) -> tuple[Path, Path]:
        """The site file and the playbook file of the case, the input written to `path`."""
        if self.kind == "site":
            return path, PLAYBOOK_FILES[self.partner]
        return seed_sites[self.partner], path


cli_cases = st.one_of(
    st.builds(lambda case: CliCase("site", *case), mutated_sites()),
    st.builds(CliCase, st.just("site"), generated(clean_sites()), any_playbook),
    st.builds(lambda case: CliCase("playbook", *case), mutated_playbooks()),
    st.builds(CliCase, st.just("playbook"), generated(clean_playbooks()), any_site),
)


def cli_problem(args: list[str], inputs: dict[str, bytes]) -> str | None:
    """What is wrong with how the command line answered, or None (a known bug is counted)."""
    result = cli(*args, timeout=120)
    problem = answer_problem(args, inputs, result)
    known = next((bug for bug in KNOWN_BUGS if bug.seen_on_stderr(result.stderr)), None)
    if problem and known:
        KNOWN_HITS[f"{known.name} (command line)"] += 1
        return None
    return problem


def answer_problem(
    args: list[str], inputs: dict[str, bytes], result: subprocess.CompletedProcess[str]
) -> str | None:
    if "Traceback" in result.stderr:
        return f"traceback:\n{result.stderr[-3000:]}"
    if re.search(r"^\S+:\d+: \w*Warning: ", result.stderr, re.M):
        return f"a warning on stderr:\n{result.stderr[-3000:]}"
    if result.returncode not in (0, 2):
        return f"exit {result.returncode}: {result.stderr[-1000:]}"
    if result.returncode == 2 and result.stderr.startswith("error: "):
        for path, raw in inputs.items():
            if re.match(
                re.escape(f"error: {path}") + (r":\d+" if is_yaml(raw) else ""), result.stderr
            ):
                return None
        return f"not located: {result.stderr[:1000]}"
    findings = result.stdout if args[0] == "validate" else result.stderr
    for line in findings.splitlines()[:-1]:
        if not re.match(r"\S+:\d+: ", line):
            return f"finding not located: {line}"
    if result.returncode == 0 and args[0] == "plan":
        json.loads(result.stdout, parse_constant=refuse_constant)
    return None


def run_cli_case(index: int, case: CliCase, directory: Path, seed_sites: list[Path]) -> list[str]:
    path = directory / f"cli-{index}.yaml"
    path.write_bytes(case.raw)
    site, playbook = case.files(path, seed_sites)
    inputs = {str(site): site.read_bytes(), str(playbook): playbook.read_bytes()}
    problems = []
    for args in (
        ["validate", str(site), "--playbook", str(playbook)],
        ["plan", str(site), "--playbook", str(playbook), "--format", "json"],
    ):
        CASES["command line"] += 1
        problem = cli_problem(args, inputs)
        if problem:
            problems.append(f"{' '.join(args)}: {problem}")
    return problems


@pytest.mark.slow
def test_the_command_line_answers_bad_input_with_exit_2_and_never_a_traceback(workdir):
    batch: list[CliCase] = []

    @fuzz_settings(CLI_INPUTS)
    @given(cli_cases)
    def collect(case: CliCase) -> None:
        batch.append(case)

    collect()
    directory = workdir / "cli"
    directory.mkdir()
    seed_sites = write_seed_sites(directory)
    with ThreadPoolExecutor(CLI_WORKERS) as pool:
        answers = pool.map(
            lambda n: run_cli_case(n, batch[n], directory, seed_sites), range(len(batch))
        )
        problems = [problem for found in answers for problem in found]
    assert not problems, f"{len(problems)} bad answers; the first: {problems[0]}"


def billion_laughs(levels: int = 9, fan: int = 10) -> bytes:
    lines = [b"version: 1", b"lol0: &l0 [lol]"]
    for level in range(1, levels + 1):
        aliases = b", ".join([b"*l%d" % (level - 1)] * fan)
        lines.append(b"lol%d: &l%d [%s]" % (level, level, aliases))
    return b"\n".join(lines) + b"\n"


HOSTILE_FILES = {
    "billion-laughs": billion_laughs(),
    "self-referencing-alias": b"name: &a [*a]\n",
    "nesting-1200-deep": b"name: " + b"[" * 1_200 + b"]" * 1_200 + b"\n",
    "six-megabytes": b"name: x\n" + b"# padding\n" * 600_000,
    "binary": bytes(range(256)) * 64,
    "utf-16": "name: x\n".encode("utf-16"),
    "empty": b"",
}


MEMORY_LIMIT_KIB = 2 * 1024 * 1024


def run_limited(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The command line under a 2 GiB address-space limit: an alias bomb cannot take the host."""
    CASES["command line"] += 1
    limited = ["/bin/sh", "-c", f'ulimit -v {MEMORY_LIMIT_KIB} && exec "$0" "$@"']
    return subprocess.run(
        [*limited, sys.executable, "-m", "ors_migrate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_files_are_refused_quickly_within_bounded_memory(name, workdir):
    path = workdir / f"{name}.yaml"
    path.write_bytes(HOSTILE_FILES[name])
    commands = (["validate", str(path)], ["plan", str(path), "--format", "json"])
    with ThreadPoolExecutor(len(commands)) as pool:
        for result in pool.map(run_limited, commands):
            assert "Traceback" not in result.stderr, result.stderr[-2000:]
            assert result.returncode == 2, result.stderr[-2000:]
            assert result.stderr.startswith(f"error: {path}"), result.stderr[-2000:]


# --- bugs the fuzzing found, kept as minimal cases until their owners fix them -----------------

MINIMAL_SITE = """\
version: 1
name: tiny
hosts:
  h1: {transport: ssh, ssh: {address: 10.0.0.1}}
  h2: {transport: ssh, ssh: {address: 10.0.0.2}}
options_backend: {kind: manual}
services:
  start: mlcmd -start {app}
  stop: mlcmd -stop {app}
  status: ors-role {app}
  switchover: mlcmd -switchover {pair}
ors:
  fips:
    lca_env_file: /etc/lca.env
ors_clusters:
  - name: CL
    ha_pairs:
      - name: p1
        apps:
          - {name: a1, host: h1, role: primary, install_dir: /opt/ors/a1}
          - {name: b1, host: h2, role: backup, install_dir: /opt/ors/b1}
redis:
  nodes: [r1:6379, r2:6379, r3:6379]
"""
ONLY_TO_START_PLAYBOOK = """\
name: only-to-start
title: A playbook whose only state runs with rollback --to start
states:
  - id: restore
    title: Restore
    seed_step: null
    scope: app
    when: to_start
    actions:
      - do: options.restore_original
"""
MONITOR_PLAYBOOK = """\
name: monitor
title: Monitor Redis
states:
  - id: monitor
    title: Monitor
    seed_step: enable.3
    actions:
      - do: redis.monitor
        with: {window_s: 60}
"""


class Unlocated(AssertionError):
    """An InputError that names no file, or no line although the input is YAML."""


def edit(text: str, old: str, new: str) -> str:
    if old not in text:
        raise LookupError(f"the regression case no longer applies: {old!r} is gone")
    return text.replace(old, new, 1)


def plan_strictly(workdir: Path, site_text: str, playbook: str) -> None:
    """Validate and plan with no known bug tolerated: a plan, or a located InputError.
    `playbook` is a bundled playbook's name or a playbook's text."""
    site_path = workdir / "regression-site.yaml"
    site_path.write_text(site_text)
    playbook_path = resolve_playbook_path(playbook)
    if "\n" in playbook:
        playbook_path = workdir / "regression-playbook.yaml"
        playbook_path.write_text(playbook)
    inputs = {str(p): p.read_bytes() for p in (site_path, playbook_path)}
    with warnings_as_errors():
        try:
            validate_and_plan(load_site(site_path), load_playbook(str(playbook_path)))
        except InputError as err:
            try:
                assert_located(err, inputs)
            except AssertionError as exc:
                raise Unlocated(str(exc)) from None


def found(
    case_id: str, site_text: str, playbook: str, bug: KnownBug, raises: type[BaseException]
) -> Any:
    """The minimal input of a bug the fuzzing found: a plan or a located error once the bug is
    fixed; while it is in KNOWN_BUGS, a strict xfail that expects exactly how it fails."""
    if bug in KNOWN_BUGS:
        reason = f"{bug.name}; owner: {bug.owner_file}"
        xfail = pytest.mark.xfail(strict=True, raises=raises, reason=reason)
        return pytest.param(site_text, playbook, id=case_id, marks=xfail)
    return pytest.param(site_text, playbook, id=case_id)


SITE = MINIMAL_SITE
LOCAL_INI_SITE = edit(
    edit(SITE, "h1: {transport: ssh, ssh: {address: 10.0.0.1}}", "h1: {transport: local}"),
    "{kind: manual}",
    "{kind: ini-file, path: '/opt/{application}/options.ini'}",
)
REGRESSIONS = [
    found("service-command-with-awk-braces",
          edit(SITE, "ors-role {app}", "ors-role {app} | awk '{print $1}'"), "migrate-to-redis",
          TEMPLATE_BRACES, KeyError),
    found("fips-path-with-an-unknown-placeholder",
          edit(SITE, "/etc/lca.env", "/etc/{unknown}.env"), "fips-linux",
          TEMPLATE_BRACES, KeyError),
    found("options-path-with-an-unknown-placeholder", LOCAL_INI_SITE, "migrate-to-redis",
          TEMPLATE_BRACES, KeyError),
    found("mermaid-plan-without-states", SITE, ONLY_TO_START_PLAYBOOK, EMPTY_MERMAID, IndexError),
    found("monitor-window-that-is-not-a-number", SITE,
          edit(MONITOR_PLAYBOOK, "window_s: 60", "window_s: abc"), ARGUMENT_TYPE, ValueError),
    found("unknown-key-from-a-merge-key",
          edit(SITE, "  start: mlcmd", "  <<: {typo: 1}\n  start: mlcmd"), "migrate-to-redis",
          MERGED_KEY, KeyError),
    found("json-escaped-emoji-in-a-title", SITE,
          edit(MONITOR_PLAYBOOK, "title: Monitor Redis", 'title: "Monitor \\ud83d\\udcc8"'),
          SURROGATES, UnprintableOutput),
    found("anchor-defined-twice", edit(SITE, "name: tiny", "name: &n tiny\nnote: &n 1"),
          "migrate-to-redis", ANCHOR_WARNING, Warning),
    found("fips-without-install-dir", edit(SITE, ", install_dir: /opt/ors/a1", ""), "fips-linux",
          PLAN_TIME_UNLOCATED, Unlocated),
    found("int-tag-on-a-word", edit(SITE, "version: 1", "version: !!int one"),
          "migrate-to-redis", CONSTRUCT_UNLOCATED, Unlocated),
    found("number-of-5000-digits", edit(SITE, "version: 1", "version: " + "9" * 5000),
          "migrate-to-redis", CONSTRUCT_UNLOCATED, Unlocated),
    found("start-command-with-the-upgrade-version",
          edit(SITE, "start: mlcmd -start {app}", "start: mlcmd -start {app} {version}"),
          "migrate-to-redis", SERVICE_PLACEHOLDER_NOT_FILLED, KeyError),
    found("status-command-with-the-switchover-primary",
          edit(SITE, "status: ors-role {app}", "status: ors-role {primary}"), "migrate-to-redis",
          SERVICE_PLACEHOLDER_NOT_FILLED, KeyError),
    found("lca-restart-command-with-the-app",
          edit(SITE, "lca_env_file: /etc/lca.env",
               "lca_env_file: /etc/lca.env\n    lca_restart: systemctl restart lca-{app}"),
          "fips-linux", PLACEHOLDER_NOT_FILLED, KeyError),
    found("lca-env-file-with-the-env-file", edit(SITE, "/etc/lca.env", "/etc/{env_file}"),
          "fips-linux", PLACEHOLDER_NOT_FILLED, KeyError),
    found("options-path-with-the-changes-file",
          edit(LOCAL_INI_SITE, "/opt/{application}/", "/opt/{changes_file}/"),
          "migrate-to-redis", PLACEHOLDER_NOT_FILLED, KeyError),
]  # fmt: skip


def test_the_minimal_site_plans_with_the_playbooks_of_the_regression_cases(workdir):
    site = workdir / "minimal-site.yaml"
    site.write_text(MINIMAL_SITE)
    monitor = workdir / "monitor.yaml"
    monitor.write_text(MONITOR_PLAYBOOK)
    for playbook in ("migrate-to-redis", "fips-linux", str(monitor)):
        validate_and_plan(load_site(site), load_playbook(playbook))


@pytest.mark.parametrize(("site_text", "playbook"), REGRESSIONS)
def test_found_by_fuzzing_now_gets_a_located_error_or_a_plan(site_text, playbook, workdir):
    plan_strictly(workdir, site_text, playbook)


# --- the count ---------------------------------------------------------------------------------

FUZZ_KINDS = {"site mutated", "site generated", "playbook mutated", "playbook generated"}


@pytest.mark.slow
def test_the_fuzzing_ran_at_least_2000_cases_and_reached_the_planner(capsys):
    if not FUZZ_KINDS | {"command line"} <= set(CASES):
        pytest.skip("counted only when the whole module runs")
    total = sum(CASES.values())
    with capsys.disabled():
        counts = ", ".join(f"{kind} {n} ({PLANNED[kind]} planned)" for kind, n in CASES.items())
        known = ", ".join(f"{name} x{n}" for name, n in sorted(KNOWN_HITS.items())) or "none"
        print(f"\nfuzzed {total} inputs: {counts}; known crashes hit: {known}")
    assert total >= MIN_CASES
    for kind in ("site generated", "playbook generated"):
        assert PLANNED[kind] >= CASES[kind] // 10, f"too few {kind} inputs reach the planner"
