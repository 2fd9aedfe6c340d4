"""The CQL stand-in (a protocol-level test double, not Cassandra) against the real driver."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from cassandra import AuthenticationFailed, InvalidRequest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.policies import RoundRobinPolicy
from cassandra.protocol import SyntaxException
from hypothesis import given, settings
from hypothesis import strategies as st

from ors_migrate.errors import TransportError
from ors_migrate.lab.cassandra_sessions import CassandraSessionStore
from ors_migrate.lab.cql_standin import LABEL, CqlError, CqlStandIn, NodeInfo, Store, parse

REPO = Path(__file__).resolve().parents[1]
KS_OPTIONS = "{'class': 'SimpleStrategy', 'replication_factor': 1}"


@pytest.fixture
def standin() -> Iterator[Callable[..., CqlStandIn]]:
    """Start stand-in nodes in-process on free ports; all stop at teardown."""
    with ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(CqlStandIn(**kwargs))


@pytest.fixture
def driver() -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def make(
        node: CqlStandIn,
        *,
        pinned: bool = True,
        metadata: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> Cluster:
        profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=5)
        kwargs: dict[str, Any] = {"protocol_version": 4} if pinned else {}
        if username is not None:
            kwargs["auth_provider"] = PlainTextAuthProvider(username, password)
        cluster = Cluster(
            [("127.0.0.1", node.port)],
            schema_metadata_enabled=metadata,
            token_metadata_enabled=metadata,
            connect_timeout=3,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            **kwargs,
        )
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.shutdown()


# --------------------------------------------------------------------------- connecting


@pytest.mark.parametrize("release", ["3.11.4", "4.0.1"])
def test_pinned_driver_connects_and_reads_release(standin, driver, release: str) -> None:
    node = standin(release_version=release, cluster_name="Lab One")
    cluster = driver(node)
    started = time.perf_counter()
    session = cluster.connect()
    elapsed = time.perf_counter() - started

    row = session.execute("SELECT release_version FROM system.local").one()
    assert row.release_version == release
    assert cluster.metadata.cluster_name == "Lab One"
    assert [h.release_version for h in cluster.metadata.all_hosts()] == [release]
    assert cluster.protocol_version == 4
    assert elapsed < 1.0, f"connect took {elapsed:.3f} s"


@pytest.mark.parametrize("release", ["3.11.4", "4.0.1"])
def test_unpinned_driver_negotiates_down_to_v4_with_full_metadata(
    standin, driver, release: str
) -> None:
    node = standin(release_version=release)
    cluster = driver(node, pinned=False, metadata=True)
    session = cluster.connect()
    session.execute(f"CREATE KEYSPACE orchestration WITH replication = {KS_OPTIONS}")

    assert cluster.protocol_version == 4
    assert "orchestration" in cluster.metadata.keyspaces
    strategy = cluster.metadata.keyspaces["orchestration"].replication_strategy
    assert strategy.replication_factor == 1


def test_a_2_1_release_speaks_protocol_v3_only(standin, driver) -> None:
    node = standin(release_version="2.1.22")
    cluster = driver(node, pinned=False, metadata=True)
    session = cluster.connect()

    assert cluster.protocol_version == 3
    names = {r.keyspace_name for r in session.execute("SELECT * FROM system.schema_keyspaces")}
    assert "system" in names and "system_schema" not in names


def test_newer_protocol_frames_get_unsupported_version_error(standin) -> None:
    node = standin()
    with socket.create_connection(("127.0.0.1", node.port), timeout=3) as sock:
        sock.sendall(struct.pack(">BBhBi", 0x05, 0, 7, 0x05, 0))  # v5 OPTIONS
        header = sock.recv(9)
        version, _, stream, opcode, length = struct.unpack(">BBhBi", header)
        body = sock.recv(length)
        closed = sock.recv(1) == b""

    code = struct.unpack(">i", body[:4])[0]
    message = body[6:].decode()
    assert (version, stream, opcode, code) == (0x84, 7, 0x00, 0x000A)
    assert "unsupported protocol version (5)" in message
    assert closed


def test_password_authenticator_accepts_the_right_password(standin, driver) -> None:
    node = standin(username="ors", password="pä55 wörd")
    session = driver(node, username="ors", password="pä55 wörd").connect()

    assert session.execute("SELECT cluster_name FROM system.local").one().cluster_name


def test_password_authenticator_refuses_a_wrong_password(standin, driver) -> None:
    node = standin(username="ors", password="s3cret")
    with pytest.raises(NoHostAvailable) as caught:
        driver(node, username="ors", password="wrong-one").connect()

    error = next(iter(caught.value.errors.values()))
    assert isinstance(error, AuthenticationFailed)
    assert "Provided username ors and/or password are incorrect" in str(error)
    assert "wrong-one" not in str(error)


def test_password_authenticator_refuses_a_driver_without_credentials(standin, driver) -> None:
    node = standin(username="ors", password="s3cret")
    with pytest.raises(NoHostAvailable) as caught:
        driver(node).connect()

    assert "requires authentication" in str(next(iter(caught.value.errors.values())))


def test_disabled_cql_port_refuses_while_thrift_port_accepts(standin) -> None:
    node = standin(cql_enabled=False, thrift_port=0)

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", node.port), timeout=2).close()
    with socket.create_connection(("127.0.0.1", node.thrift_port), timeout=2) as sock:
        assert sock.getpeername()[1] == node.thrift_port


def test_a_4_x_node_has_no_thrift_port() -> None:
    with pytest.raises(ValueError, match="removed Thrift"):
        CqlStandIn(release_version="4.0.1", thrift_port=0)


# --------------------------------------------------------------------------- table store


def test_table_round_trip_with_quotes(standin, driver) -> None:
    session = driver(standin()).connect()
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {KS_OPTIONS}")
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {KS_OPTIONS}")
    session.execute("CREATE TABLE ks.t (a text, b text, c text, n int, PRIMARY KEY ((a), b))")
    session.execute("INSERT INTO ks.t (a, b, c, n) VALUES ('x', 'y1', 'it''s', 1)")
    session.execute("INSERT INTO ks.t (a, b, c, n) VALUES (%s, %s, %s, %s)", ("x", "y2", "ü'\"", 2))
    session.execute("INSERT INTO ks.t (a, b, c) VALUES ('z', 'y1', 'other')")

    everything = list(session.execute("SELECT * FROM ks.t"))
    partition = list(session.execute("SELECT b, c FROM ks.t WHERE a = 'x'"))
    one = session.execute("SELECT c FROM ks.t WHERE a='x' AND b='y1'").one()
    count = session.execute("SELECT COUNT(*) FROM ks.t WHERE a = 'x'").one()
    session.execute("DELETE FROM ks.t WHERE a = 'x' AND b = 'y1'")
    after_delete = [r.b for r in session.execute("SELECT b FROM ks.t WHERE a = 'x'")]
    session.execute("DROP KEYSPACE ks")
    with pytest.raises(InvalidRequest, match="Keyspace 'ks' does not exist"):
        session.execute("SELECT * FROM ks.t")

    assert [(r.a, r.b, r.c, r.n) for r in everything] == [
        ("x", "y1", "it's", 1),
        ("x", "y2", "ü'\"", 2),
        ("z", "y1", "other", None),
    ]
    assert everything[0]._fields == ("a", "b", "c", "n")
    assert [(r.b, r.c) for r in partition] == [("y1", "it's"), ("y2", "ü'\"")]
    assert one.c == "it's"
    assert count.count == 2
    assert after_delete == ["y2"]


def test_a_delete_removes_exactly_the_rows_its_relations_select(standin, driver) -> None:
    """One row by its full key, several by an IN list, a whole partition by its key alone:
    each removes what Cassandra would and nothing beside it."""
    session = driver(standin()).connect()
    session.execute(f"CREATE KEYSPACE ks WITH replication = {KS_OPTIONS}")
    session.execute("CREATE TABLE ks.t (a text, b text, v int, PRIMARY KEY ((a), b))")
    for a in ("p", "q"):
        for n in range(5):
            session.execute("INSERT INTO ks.t (a, b, v) VALUES (%s, %s, %s)", (a, f"s{n}", n))

    def left() -> list[tuple[str, str]]:
        return [(r.a, r.b) for r in session.execute("SELECT a, b FROM ks.t")]

    session.execute("DELETE FROM ks.t WHERE a = 'p' AND b = 's1'")
    session.execute("DELETE FROM ks.t WHERE a = 'p' AND b = 'absent'")
    after_one = left()
    session.execute("DELETE FROM ks.t WHERE a = 'q' AND b IN ('s0', 's3', 's3', 'absent')")
    after_in = left()
    session.execute("DELETE FROM ks.t WHERE a = 'p'")

    assert after_one == [("p", f"s{n}") for n in (0, 2, 3, 4)] + [("q", f"s{n}") for n in range(5)]
    assert after_in[4:] == [("q", "s1"), ("q", "s2"), ("q", "s4")]
    assert left() == [("q", "s1"), ("q", "s2"), ("q", "s4")]


def test_ttl_expires_rows_and_ttl_function_reports_it(standin, driver) -> None:
    session = driver(standin()).connect()
    session.execute(f"CREATE KEYSPACE ks WITH replication = {KS_OPTIONS}")
    session.execute("CREATE TABLE ks.t (a text PRIMARY KEY, v text)")
    session.execute("INSERT INTO ks.t (a, v) VALUES ('short', 'gone soon') USING TTL 1")
    session.execute("INSERT INTO ks.t (a, v) VALUES ('long', 'stays')")

    before = {r.a: r.ttl_v for r in session.execute("SELECT a, TTL(v) FROM ks.t")}
    time.sleep(1.2)
    after = [r.a for r in session.execute("SELECT a FROM ks.t")]
    count = session.execute("SELECT COUNT(*) FROM ks.t").one().count

    assert before == {"long": None, "short": 1}
    assert after == ["long"]
    assert count == 1


def test_use_sets_the_keyspace_for_unqualified_tables(standin, driver) -> None:
    cluster = driver(standin())
    cluster.connect().execute(f'CREATE KEYSPACE "Ors" WITH replication = {KS_OPTIONS}')
    session = cluster.connect("Ors")
    session.execute("CREATE TABLE t (a text PRIMARY KEY, v text)")
    session.execute("INSERT INTO t (a, v) VALUES ('k', 'v')")

    assert session.keyspace == "Ors"
    assert session.execute("SELECT v FROM t WHERE a = 'k'").one().v == "v"


def test_system_schema_keyspaces_lists_system_and_user_keyspaces(standin, driver) -> None:
    session = driver(standin()).connect()
    session.execute(f"CREATE KEYSPACE orchestration WITH replication = {KS_OPTIONS}")

    names = [
        r.keyspace_name
        for r in session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
    ]
    row = session.execute(
        "SELECT * FROM system_schema.keyspaces WHERE keyspace_name = 'orchestration'"
    ).one()

    assert {"system", "system_schema", "orchestration"} <= set(names)
    assert row.durable_writes is True
    assert row.replication == {
        "class": "org.apache.cassandra.locator.SimpleStrategy",
        "replication_factor": "1",
    }


def test_filtering_on_a_non_key_column_needs_allow_filtering(standin, driver) -> None:
    session = driver(standin()).connect()
    session.execute(f"CREATE KEYSPACE ks WITH replication = {KS_OPTIONS}")
    session.execute("CREATE TABLE ks.t (a text, b text, v text, PRIMARY KEY (a, b))")
    session.execute("INSERT INTO ks.t (a, b, v) VALUES ('1', '2', 'hit')")

    with pytest.raises(InvalidRequest, match="ALLOW FILTERING"):
        session.execute("SELECT * FROM ks.t WHERE v = 'hit'")
    rows = list(session.execute("SELECT a FROM ks.t WHERE v = 'hit' ALLOW FILTERING"))

    assert [r.a for r in rows] == ["1"]


def test_unknown_statements_get_syntax_errors_and_the_connection_survives(standin, driver) -> None:
    session = driver(standin()).connect()
    with pytest.raises(SyntaxException, match="CQL stand-in"):
        session.execute("UPDATE ks.t SET v = 'x' WHERE a = 'y'")
    with pytest.raises(SyntaxException):
        session.execute("SELECT FROM WHERE")
    with pytest.raises(SyntaxException):
        session.execute("INSERT INTO ks.t (a) VALUES ('unterminated)")
    with pytest.raises(InvalidRequest, match="prepared statements"):
        session.prepare("SELECT * FROM system.local")

    assert session.execute("SELECT release_version FROM system.local").one().release_version


CQL_WORDS = [
    "SELECT",
    "*",
    "FROM",
    "ks.t",
    "WHERE",
    "a",
    "=",
    "'x'",
    "AND",
    "b",
    "IN",
    "(",
    ")",
    "1",
    ",",
    "INSERT",
    "INTO",
    "VALUES",
    "USING",
    "TTL",
    "DELETE",
    "COUNT(*)",
    "ttl(c)",
    "LIMIT",
    "ALLOW",
    "FILTERING",
    "CREATE",
    "TABLE",
    "KEYSPACE",
    "IF",
    "NOT",
    "EXISTS",
    "DROP",
    "USE",
    "ks",
    "system.local",
    "PRIMARY",
    "KEY",
    "text",
    "int",
    "{",
    "}",
    ":",
    "-1",
    "2147483648",
    "null",
    "true",
    "'it''s'",
    '"Q"',
    ";",
    "?",
    "<",
    ">",
    "TRUNCATE",
]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(CQL_WORDS), max_size=14).map(" ".join), st.text()))
def test_any_statement_text_is_answered_or_refused_with_a_cql_error(text: str) -> None:
    store = Store(NodeInfo("3.11.4", "fuzz", "127.0.0.1", 9042))
    store.execute(parse("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy'}"), None)
    store.execute(parse("CREATE TABLE ks.t (a text, b int, c text, PRIMARY KEY (a, b))"), None)
    try:
        result = store.execute(parse(text), "ks")
    except CqlError as error:
        assert error.code in (0x2000, 0x2100, 0x2200, 0x2300, 0x2400)
    else:
        assert result is not None


# --------------------------------------------------------------------------- session store


def test_session_store_round_trip_and_ttl(standin) -> None:
    node = standin()
    store = CassandraSessionStore([f"127.0.0.1:{node.port}"], "orchestration")
    try:
        store.ensure_schema()
        store.ensure_schema()
        store.save("ORS_A", "pair1", "s-1", '{"call": "it\'s"}', 60)
        store.save("ORS_A", "pair1", "s-2", "short-lived", 1)
        store.save("ORS_A", "pair2", "s-3", "other pair", 60)
        first = store.load("ORS_A", "pair1")
        store.delete("ORS_A", "pair1", "s-1")
        time.sleep(1.2)
        second = store.load("ORS_A", "pair1")
        other = store.load("ORS_A", "pair2")
    finally:
        store.close()

    assert first == {"s-1": '{"call": "it\'s"}', "s-2": "short-lived"}
    assert second == {}
    assert other == {"s-3": "other pair"}


def test_session_store_is_shared_by_threads(standin) -> None:
    node = standin()
    with CassandraSessionStore([f"127.0.0.1:{node.port}"], "orchestration") as store:
        store.ensure_schema()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: store.save("C", "p", f"s-{n}", f"payload {n}", 60), range(40)))
        loaded = store.load("C", "p")

    assert loaded == {f"s-{n}": f"payload {n}" for n in range(40)}


def test_session_store_with_authentication(standin) -> None:
    node = standin(username="ors", password="pw-123")
    with CassandraSessionStore(
        [f"127.0.0.1:{node.port}"], "orchestration", "ors", "pw-123"
    ) as store:
        store.ensure_schema()
        store.save("C", "p", "s", "payload", 30)
        loaded = store.load("C", "p")
    assert loaded == {"s": "payload"}


def test_session_store_names_the_contact_point_it_cannot_reach(standin) -> None:
    node = standin(cql_enabled=False)
    store = CassandraSessionStore([f"127.0.0.1:{node.port}"], "orchestration", timeout_s=1)
    with pytest.raises(TransportError) as caught:
        store.save("C", "p", "s", "payload", 30)
    store.close()
    assert f"127.0.0.1:{node.port}" in str(caught.value)


# --------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_command_line_runs_until_sigterm_with_ready_file(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("from-a-file\n")
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ors_migrate.lab.cql_standin",
            "--port",
            "0",
            "--thrift-port",
            "0",
            "--release-version",
            "3.11.10",
            "--username",
            "ors",
            "--password-file",
            str(password_file),
            "--ready-file",
            str(ready),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        cluster = Cluster(
            [("127.0.0.1", info["cql_port"])],
            protocol_version=4,
            auth_provider=PlainTextAuthProvider("ors", "from-a-file"),
            schema_metadata_enabled=False,
            token_metadata_enabled=False,
            execution_profiles={
                EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
            },
        )
        release = cluster.connect().execute("SELECT release_version FROM system.local").one()
        cluster.shutdown()
        with socket.create_connection(("127.0.0.1", info["thrift_port"]), timeout=2):
            pass
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)

    assert release.release_version == "3.11.10"
    assert process.returncode == 0
    assert "stand-in" in info["standin"] and info["pid"] == process.pid
    assert LABEL in stderr
    assert "from-a-file" not in stderr


def test_help_says_it_is_a_stand_in() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ors_migrate.lab.cql_standin", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "not Apache Cassandra" in result.stdout
    assert "--password-file" in result.stdout
