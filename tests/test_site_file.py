"""Site files: the example validates, and every broken file gets one located message (file, line,
field, rule) and exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ors_migrate import cli
from ors_migrate.errors import SiteError
from ors_migrate.site import load_site, site_json_schema

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "site.yaml"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


def run_cli(*args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`ors-migrate ARGS` in this process, through the same entry point as the script."""
    monkeypatch.setattr(sys, "argv", ["ors-migrate", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def edited(old: str, new: str) -> str:
    assert old in EXAMPLE_TEXT, old
    return EXAMPLE_TEXT.replace(old, new, 1)


def load_error(tmp_path: Path, text: str) -> SiteError:
    """The error loading a site file with this text raises."""
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SiteError) as raised:
        load_site(path)
    return raised.value


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_the_example_site_validates_with_exit_code_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ors_migrate", "validate", str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("valid")


TRUNCATED = EXAMPLE_TEXT[: EXAMPLE_TEXT.index("{name: ORS_VOICE_2A") + 20]
WRONG_TYPE = edited("ready_timeout_s: 180", "ready_timeout_s: soon")
UNKNOWN_KEY = edited("  thrift_port: 9160", "  thrift_port: 9160\n  thrift_prot: 9161")
TABS = edited("  thrift_port: 9160", "\tthrift_port: 9160")
INLINE_SECRET = edited("password: env:ORS_REDIS_PASSWORD", "password: hunter2-inline")
UNKNOWN_HOST = edited(
    "host: ors-emea-04, role: backup, memory_mb: 4096",
    "host: ors-emea-09, role: backup, memory_mb: 4096",
)
BAD_NODE = edited("    - redis-emea-02.example.com:6379", "    - redis-emea-02.example.com")
BAD_ROLE = edited("role: backup, memory_mb: 4096", "role: standby, memory_mb: 4096")

BROKEN = {
    "truncated": (TRUNCATED, "yaml-syntax", None),
    "empty": ("", "not-empty", None),
    "only-comments": ("# nothing here\n", "not-empty", None),
    "binary-junk": (bytes(range(256)) * 4, "utf-8", None),
    "top-level-list": ("- a\n- b\n", "top-level-mapping", None),
    "duplicate-key": (
        edited("name: prod-emea", "name: prod-emea\nname: again"),
        "yaml-syntax",
        None,
    ),
    "tabs": (TABS, "yaml-syntax", None),
    "wrong-type": (WRONG_TYPE, "schema.float_parsing", "services.ready_timeout_s"),
    "unknown-key": (UNKNOWN_KEY, "schema.extra_forbidden", "cassandra.thrift_prot"),
    "inline-secret": (INLINE_SECRET, "schema.value_error", "redis.password"),
    "unknown-host": (
        UNKNOWN_HOST,
        "schema.value_error",
        "ors_clusters[1].ha_pairs[0].apps[1].host",
    ),
    "bad-redis-node": (BAD_NODE, "schema.value_error", "redis.nodes[1]"),
    "bad-role": (BAD_ROLE, "schema.literal_error", "ors_clusters[1].ha_pairs[0].apps[1].role"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_site_file_exits_2_with_one_located_message_and_no_traceback(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    content, rule, field = BROKEN[case]
    path = tmp_path / "site.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    code, out, err = run_cli("validate", str(path), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "Traceback" not in out + err
    first = err.splitlines()[0]
    assert first.startswith(f"error: {path}")
    assert f"[{rule}]" in first
    if field is not None:
        assert f": {field}: " in first


def test_a_schema_error_names_the_line_of_the_offending_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, UNKNOWN_KEY)
    assert error.line == line_of(UNKNOWN_KEY, "thrift_prot")
    assert "did you mean 'thrift_port'?" in error.detail


def test_a_wrong_type_says_what_was_expected_and_what_was_found(tmp_path: Path) -> None:
    error = load_error(tmp_path, WRONG_TYPE)
    assert error.detail == "expected a number, got 'soon'"
    assert error.line == line_of(WRONG_TYPE, "ready_timeout_s")


def test_every_schema_problem_is_listed_with_its_own_line(tmp_path: Path) -> None:
    text = edited("ready_timeout_s: 180", "ready_timeout_s: soon").replace(
        "  thrift_port: 9160", "  thrift_port: lots"
    )
    path = tmp_path / "site.yaml"
    rendered = str(load_error(tmp_path, text)).splitlines()
    assert rendered[0].startswith(f"{path}:{line_of(text, 'ready_timeout_s')}: ")
    assert rendered[1].startswith(f"{path}:{line_of(text, 'thrift_port')}: cassandra.thrift_port")


def test_missing_required_fields_are_named_together(tmp_path: Path) -> None:
    error = load_error(tmp_path, "version: 1\nname: bare\n")
    assert "required fields 'hosts', 'options_backend'" in error.detail


def test_an_inline_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    error = load_error(tmp_path, INLINE_SECRET)
    assert "hunter2-inline" not in str(error)
    assert error.line == line_of(INLINE_SECRET, "hunter2-inline")


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    assert load_error(tmp_path, "\n".join(lines) + "\n").rule == "yaml-size"


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE_TEXT.encode("utf-8"))
    assert load_site(path).site.name == "prod-emea"


def test_validate_json_reports_load_errors_as_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(UNKNOWN_KEY, encoding="utf-8")
    code, out, _ = run_cli("validate", str(path), "--json", monkeypatch=monkeypatch, capsys=capsys)
    report = json.loads(out)
    assert code == 2 and report["valid"] is False
    assert report["findings"][0]["rule"] == "schema.extra_forbidden"
    assert report["findings"][0]["line"] == line_of(UNKNOWN_KEY, "thrift_prot")


def test_validate_exits_2_on_a_rule_error_and_names_file_line_and_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edited("  mode: cluster", "  mode: sentinel")
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, _ = run_cli("validate", str(path), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert (
        f"{path}:{line_of(text, 'mode: sentinel')}: redis.mode: error: " in out
        and "[redis.cluster-only]" in out
    )


def test_warnings_alone_keep_exit_code_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(edited("  aof: true\n", ""), encoding="utf-8")
    code, out, _ = run_cli("validate", str(path), "--json", monkeypatch=monkeypatch, capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["valid"] is True and report["warnings"] == 1


def test_the_published_json_schema_matches_the_site_model() -> None:
    published = json.loads((REPO / "schema" / "site.schema.json").read_text(encoding="utf-8"))
    assert published == site_json_schema(), "run: ors-migrate schema -o schema/site.schema.json"
    password = published["$defs"]["RedisSettings"]["properties"]["password"]["anyOf"][0]
    assert password["type"] == "string" and password["pattern"].startswith("^(env:")


def test_the_schema_command_prints_the_schema(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli("schema", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and json.loads(out)["title"] == "ors-migrate site file"


@pytest.mark.parametrize(
    ("old", "new", "at", "rule"),
    [
        ("name: ", "name:\t", "name:\t", "yaml-syntax"),  # a tab after a colon, as ruamel
        ("name: ", "1: one\n'1': two\nname: ", "'1': two", "yaml-duplicate-key"),
    ],
)
def test_yaml_the_fast_reader_would_misread_exits_2_naming_file_line_and_rule(
    old: str,
    new: str,
    at: str,
    rule: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "site.yaml"
    text = edited(old, new)
    path.write_text(text, encoding="utf-8")
    code, out, err = run_cli("validate", str(path), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "Traceback" not in out + err
    first = err.splitlines()[0]
    assert first.startswith(f"error: {path}:{line_of(text, at)}: ")
    assert f"[{rule}]" in first
