"""Cassandra checks through the real driver against the CQL stand-in (not a real Cassandra)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from ors_migrate.actions.cassandra_checks import (
    CHECK_KEYSPACE,
    CHECK_REACHABLE,
    CHECK_VERSION,
    check_cassandra,
    drop_keyspace,
    keyspace_exists,
)
from ors_migrate.actions.local import LocalTransport
from ors_migrate.errors import InputError, TransportError
from ors_migrate.lab.cassandra_sessions import CassandraSessionStore
from ors_migrate.lab.cql_standin import CqlStandIn
from ors_migrate.site import CassandraSettings
from ors_migrate.step import CheckResult

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def standin() -> Iterator[Callable[..., CqlStandIn]]:
    """Start stand-in nodes in-process on free ports; all stop at teardown."""
    with ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(CqlStandIn(**kwargs))


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def settings_for(*ports: int, **kwargs: Any) -> CassandraSettings:
    return CassandraSettings(
        contact_points=[f"127.0.0.1:{p}" for p in ports], connect_timeout_s=2, **kwargs
    )


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def with_keyspace(node: CqlStandIn, keyspace: str = "orchestration") -> CqlStandIn:
    with CassandraSessionStore([f"127.0.0.1:{node.port}"], keyspace) as store:
        store.ensure_schema()
    return node


def test_cassandra_3_11_is_accepted(standin) -> None:
    node = with_keyspace(standin(release_version="3.11.4"))
    results = check_cassandra(settings_for(node.port), None)
    checks = by_check(results)

    assert [r.severity for r in results] == ["ok", "ok", "ok"]
    assert checks[CHECK_REACHABLE].observed["method"] == "cql"
    assert checks[CHECK_VERSION].observed["version"] == "3.11.4"
    assert "(method: cql)" in checks[CHECK_VERSION].message
    assert checks[CHECK_KEYSPACE].observed["present"] is True


def test_cassandra_4_0_in_use_is_a_warning_that_explains_no_sessions_were_persisted(
    standin,
) -> None:
    node = with_keyspace(standin(release_version="4.0.1"))
    version = by_check(check_cassandra(settings_for(node.port), None))[CHECK_VERSION]

    assert version.severity == "warning" and not version.blocking
    assert "could not have persisted sessions" in version.message
    assert "nothing blocks the move to Redis" in version.fix


def test_cassandra_4_0_only_warns_when_not_in_use(standin) -> None:
    node = standin(release_version="4.0.1")
    results = by_check(check_cassandra(settings_for(node.port, in_use=False), None))

    assert results[CHECK_VERSION].severity == "warning"
    assert "not in use" in results[CHECK_VERSION].message
    assert results[CHECK_KEYSPACE].severity == "warning"


def test_closed_cql_port_falls_back_to_thrift_tcp(standin) -> None:
    node = standin(cql_enabled=False, thrift_port=0)
    results = by_check(check_cassandra(settings_for(node.port, thrift_port=node.thrift_port), None))
    reach, version, keyspace = (
        results[c] for c in (CHECK_REACHABLE, CHECK_VERSION, CHECK_KEYSPACE)
    )

    assert reach.severity == "ok"
    assert reach.observed["method"] == "thrift-tcp"
    assert "method: thrift-tcp" in reach.message
    assert f"CQL port 127.0.0.1:{node.port} is closed (connection refused)" in reach.message
    assert version.severity == "warning" and "not verified" in version.message
    assert version.observed["method"] == "thrift-tcp"
    assert keyspace.severity == "warning" and keyspace.observed["present"] is None


def test_declared_4_x_version_is_a_warning_even_when_only_thrift_answers(standin) -> None:
    node = standin(cql_enabled=False, thrift_port=0)
    settings = settings_for(node.port, thrift_port=node.thrift_port, version="4.0.5")
    version = by_check(check_cassandra(settings, None))[CHECK_VERSION]

    assert version.severity == "warning"
    assert "declared in the site file, not verified" in version.message


def nodetool_version(node: CqlStandIn, command: str) -> CheckResult:
    """The version check on a node whose CQL port is closed, with nodetool run locally."""
    settings = settings_for(node.port, thrift_port=node.thrift_port, nodetool_command=command)
    return by_check(check_cassandra(settings, None, nodetool=LocalTransport()))[CHECK_VERSION]


def test_closed_cql_port_reads_the_version_with_nodetool(standin) -> None:
    node = standin(cql_enabled=False, thrift_port=0)
    version = nodetool_version(node, "printf 'ReleaseVersion: 3.0.27\\n'")

    assert version.severity == "ok"
    assert version.observed == {
        "method": "nodetool",
        "version": "3.0.27",
        "versions": {"localhost": "3.0.27"},
        "declared": None,
    }
    assert "(method: nodetool)" in version.message


def test_failing_nodetool_is_reported_with_its_output(standin) -> None:
    node = standin(cql_enabled=False, thrift_port=0)
    version = nodetool_version(node, "echo 'nodetool: Failed to connect' >&2; exit 1")

    assert version.severity == "error"
    assert "exit 1: nodetool: Failed to connect" in version.message
    assert version.observed["method"] == "nodetool"


def test_unreachable_contact_point_is_named(standin) -> None:
    node = with_keyspace(standin())
    dead = closed_port()
    results = check_cassandra(settings_for(node.port, dead, thrift_port=closed_port()), None)
    reach = [r for r in results if r.check == CHECK_REACHABLE]

    assert [r.severity for r in reach] == ["ok", "error"]
    assert f"127.0.0.1:{dead} is unreachable" in reach[1].message
    assert "connection refused" in reach[1].message
    assert by_check(results)[CHECK_VERSION].severity == "ok"


def test_nothing_reachable_gives_messages_not_tracebacks(caplog) -> None:
    caplog.set_level(logging.WARNING)
    dead = closed_port()
    results = by_check(check_cassandra(settings_for(dead, thrift_port=closed_port()), None))

    assert results[CHECK_REACHABLE].severity == "error"
    assert results[CHECK_VERSION].severity == "error"
    assert "no contact point answers" in results[CHECK_VERSION].message
    assert not [r for r in caplog.records if r.exc_info]


def test_missing_keyspace_is_reported_with_what_exists(standin) -> None:
    node = with_keyspace(standin(), "other_ks")
    keyspace = by_check(check_cassandra(settings_for(node.port), None))[CHECK_KEYSPACE]

    assert keyspace.severity == "error"
    assert "ORS keyspace 'orchestration' not found" in keyspace.message
    assert "other_ks" in keyspace.message
    assert keyspace.observed["keyspaces"] == ["other_ks"]


def test_authentication_ok_and_failure_without_leaking_the_password(standin, caplog) -> None:
    caplog.set_level(logging.WARNING)
    node = standin(username="ors", password="Sup3r-S3cret")
    settings = settings_for(node.port, username="ors", password="env:CASS_PW")

    good = check_cassandra(settings, "Sup3r-S3cret")
    bad = by_check(check_cassandra(settings, "not-the-password"))

    assert by_check(good)[CHECK_VERSION].severity == "ok"
    assert bad[CHECK_VERSION].severity == "error"
    assert "AuthenticationFailed" in bad[CHECK_VERSION].message
    assert "cassandra.username" in bad[CHECK_VERSION].fix
    rendered = repr([r.as_dict() for r in good + list(bad.values())])
    assert "not-the-password" not in rendered and "Sup3r-S3cret" not in rendered
    assert not [r for r in caplog.records if r.exc_info]


def test_a_2_1_node_is_checked_over_protocol_v3(standin) -> None:
    node = standin(release_version="2.1.22")
    results = by_check(check_cassandra(settings_for(node.port, version="2.1.22"), None))

    assert results[CHECK_VERSION].severity == "ok"
    assert results[CHECK_VERSION].observed["version"] == "2.1.22"
    assert results[CHECK_KEYSPACE].severity == "error"


def test_declared_version_mismatch_is_a_warning(standin) -> None:
    node = with_keyspace(standin(release_version="3.11.10"))
    version = by_check(check_cassandra(settings_for(node.port, version="3.11.4"), None))[
        CHECK_VERSION
    ]

    assert version.severity == "warning"
    assert "site file declares 3.11.4" in version.message


def test_no_contact_points_is_an_error_when_in_use() -> None:
    results = check_cassandra(CassandraSettings(contact_points=[]), None)
    assert [(r.check, r.severity) for r in results] == [(CHECK_REACHABLE, "error")]


def test_keyspace_exists_and_drop_keyspace(standin) -> None:
    node = with_keyspace(standin())
    settings = settings_for(node.port)

    before = keyspace_exists(settings, None, "orchestration")
    drop_keyspace(settings, None, "orchestration")
    after = keyspace_exists(settings, None, "orchestration")
    drop_keyspace(settings, None, "orchestration")

    assert (before, after) == (True, False)
    with pytest.raises(InputError, match="refusing to drop"):
        drop_keyspace(settings, None, "system_auth")


def test_keyspace_exists_raises_transport_error_naming_the_host() -> None:
    dead = closed_port()
    with pytest.raises(TransportError, match=f"127.0.0.1:{dead}"):
        keyspace_exists(settings_for(dead), None, "orchestration")


def test_importing_the_modules_does_not_import_the_driver() -> None:
    code = (
        "import sys, ors_migrate.actions.cassandra_checks, ors_migrate.lab.cql_standin, "
        "ors_migrate.lab.cassandra_sessions; print('cassandra' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
