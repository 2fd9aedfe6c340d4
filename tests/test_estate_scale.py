"""What keeps `plan` and `run --resume` quick on a large estate, and reading exactly what they
read before: the C parser's reading of a plain YAML file is ruamel's, line numbers included, and
the journal decodes each event once per process. (The speed itself is measured in bench/.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ors_migrate.errors import InputError
from ors_migrate.journal import Journal
from ors_migrate.site import load_site
from ors_migrate.yamlfile import LocatedDocument, parse_yaml

REPO = Path(__file__).resolve().parents[1]
PLAIN_FILES = sorted([*REPO.glob("examples/*.yaml"), *REPO.glob("playbooks/*.yaml")])


def read_by_ruamel(text: str) -> LocatedDocument:
    return LocatedDocument("f.yaml", YAML(typ="rt", pure=True).load(text))


def every_path(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            found += every_path(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += every_path(value, (*path, index))
    return found


@pytest.mark.parametrize("path", PLAIN_FILES, ids=lambda p: p.name)
def test_a_plain_yaml_file_reads_the_same_through_libyaml_as_through_ruamel(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    fast = parse_yaml(text.encode(), str(path), InputError, "file")
    slow = read_by_ruamel(text)

    assert fast.lines is not None, "a plain file takes the fast path"
    assert repr(fast.data()) == repr(slow.data())  # the same values of the same types
    for where in every_path(fast.data()):
        assert fast.line_of(where) == slow.line_of(where), where
    assert fast.line_of(("no-such-key", 3)) == slow.line_of(("no-such-key", 3)) == 1


SCALARS = """\
a: 1
b: 0o17
c: 1_000
d: 1.5
e: .inf
f: yes
g: on
h: ~
i:
j: '1'
k: 8.1.401.12
l: 0x1f
m: 1e3
n: "true"
o: True
p: 2026-11-30
q: |
  two
  lines
r: ORS_01
s: no
t: NULL
u: FALSE
v: .5
w: -x
x: null-ish
y: /opt/ors
z: é
1: an integer key
"""


def test_scalars_read_as_yaml_1_2_as_ruamel_reads_them() -> None:
    fast = parse_yaml(SCALARS.encode(), "f.yaml", InputError, "file")

    assert fast.lines is not None
    assert repr(fast.data()) == repr(read_by_ruamel(SCALARS).data())
    assert fast.data()["f"] == "yes" and fast.data()["g"] == "on"  # not booleans, as in 1.1


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # anchors and aliases
        "a: !!str 1\n",  # an explicit tag
        "base: &b {x: 1}\nc:\n  <<: *b\n",  # a merge key
        "a: 1\na: 2\n",  # a duplicate key
        "%YAML 1.1\n---\na: yes\n",  # a directive
        "a: 1\n---\nb: 2\n",  # two documents
        "a:\n\t- 1\n",  # a tab
    ],
)
def test_anything_beyond_plain_yaml_is_left_to_ruamel(text: str) -> None:
    try:
        document = parse_yaml(text.encode(), "f.yaml", InputError, "file")
    except InputError as error:
        assert error.file == "f.yaml" and error.rule
        return
    assert document.lines is None


def test_a_site_error_names_the_same_line_through_the_fast_path(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    text = (REPO / "examples" / "site.yaml").read_text(encoding="utf-8")
    site.write_text(text.replace("role: backup", "role: spare", 1), encoding="utf-8")

    with pytest.raises(InputError) as raised:
        load_site(site)

    expected = text.splitlines().index(
        next(line for line in text.splitlines() if "role: backup" in line)
    )
    assert raised.value.line == expected + 1


def test_the_journal_decodes_each_event_once_and_still_sees_events_recorded_since(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "state")
    other = Journal(tmp_path / "state")  # another process writing the same journal
    try:
        run_id = journal.create_run(
            site_name="s",
            site_path=str(tmp_path),
            site_digest="-",
            playbook="p",
            playbook_digest="-",
            plan_hash="h",
            plan_json="{}",
        )
        journal.record(run_id, "check", phase="forward", payload={"n": 1})
        first = journal.events(run_id)
        other.record(run_id, "check", phase="forward", payload={"n": 2})
        second = journal.events(run_id)

        assert [e.payload.get("n") for e in second] == [None, 1, 2]
        assert all(a is b for a, b in zip(first, second, strict=False))  # not decoded again
        assert [e.seq for e in other.events(run_id)] == [e.seq for e in second]
    finally:
        journal.close()
        other.close()


def test_a_runs_plan_is_kept_apart_from_its_row_and_an_earlier_journals_row_still_reads(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "state")
    try:
        run_id = journal.create_run(
            site_name="s",
            site_path=str(tmp_path),
            site_digest="-",
            playbook="p",
            playbook_digest="-",
            plan_hash="h",
            plan_json='{"states": []}',
        )
        journal.set_status(run_id, "paused", current_state="x")
        in_row = journal.db.execute("SELECT plan_json FROM runs WHERE run_id = ?", (run_id,))
        assert in_row.fetchone()[0] == ""  # a status change rewrites a small row
        record = journal.get_run(run_id)
        assert record is not None and record.plan_json == '{"states": []}'
        assert record.status == "paused"

        # A run written before plans had their own table keeps its plan in its row.
        journal.db.execute(
            "INSERT INTO runs SELECT 'old', site_name, site_path, site_digest, playbook,"
            " playbook_digest, plan_hash, '{\"old\": true}', status, phase, current_state,"
            " operator, hostname, created_at, updated_at, outcome, playbook_path FROM runs"
        )
        old = journal.get_run("old")
        assert old is not None and old.plan_json == '{"old": true}'
    finally:
        journal.close()


def test_the_topology_is_read_several_pairs_at_once_in_site_order_first_error_first() -> None:
    import threading
    from types import SimpleNamespace

    from ors_migrate.actions.service_control import for_every_pair
    from ors_migrate.errors import VerificationFailed

    ctx = SimpleNamespace(site=load_site(REPO / "examples" / "site.yaml").site)
    together = threading.Barrier(5, timeout=10)  # every pair's read waits for the others

    def read(pair: str) -> str:
        together.wait()
        return pair.upper()

    assert list(for_every_pair(ctx, read).items()) == [  # type: ignore[arg-type]
        ("voice-1", "VOICE-1"),
        ("voice-2", "VOICE-2"),
        ("voice-3", "VOICE-3"),
        ("outbound-1", "OUTBOUND-1"),
        ("outbound-2", "OUTBOUND-2"),
    ]

    def fail_late(pair: str) -> str:
        if pair in ("voice-2", "outbound-2"):
            raise VerificationFailed(f"{pair} has no single primary")
        return pair

    with pytest.raises(VerificationFailed, match="voice-2"):
        for_every_pair(ctx, fail_late)  # type: ignore[arg-type]


def outcome(text: str) -> tuple[Any, ...]:
    """What reading `text` gives: its data, or the refusal's file, line and rule."""
    try:
        document = parse_yaml(text.encode(), "f.yaml", InputError, "file")
    except InputError as error:
        return ("refused", error.file, error.line, error.rule)
    return ("read", repr(document.data()))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\t# c\n", 1),  # a tab before a comment
        ("a:\tb\n", 1),  # a tab after the colon
        ("a\t: b\n", 1),  # a tab before the colon
        ("a: b\tc\n", 1),  # a tab inside a plain scalar
        ("a: b\x85c: d\n", 1),  # NEL, a line break to libyaml only
        ("1.0: a\n1: b\n", 2),  # keys equal as values
        ("true: a\n1: b\n", 2),
    ],
)
def test_what_ruamel_refuses_the_fast_path_refuses_too(
    text: str, line: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = outcome(text)
    monkeypatch.setattr("ors_migrate.yamlfile._fast_document", lambda *_: None)
    assert fast == outcome(text)
    assert fast[0] == "refused" and fast[1:3] == ("f.yaml", line) and fast[3]


def test_keys_alike_only_as_text_are_refused_not_merged() -> None:
    """`1` and `'1'` are two keys to YAML but one once read as text: one value would be lost."""
    for text in ("1: a\n'1': b\n", "x:\n  '1': a\n  1: b\n"):
        with pytest.raises(InputError) as raised:
            parse_yaml(text.encode(), "f.yaml", InputError, "file").data()
        assert raised.value.file == "f.yaml" and raised.value.line == text.count("\n")
        assert raised.value.rule == "yaml-duplicate-key"
