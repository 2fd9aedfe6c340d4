"""Session persistence to Cassandra for the lab's simulated ORS, through the real driver.

In the lab the contact points are the CQL stand-in (`ors_migrate.lab.cql_standin`), a
protocol-level test double, not Apache Cassandra. The schema is the lab's own: one row per
session, keyed by ORS cluster and HA pair, each written with a TTL as ORS does.

`cassandra-driver` is imported when a store first connects, not when this module is imported.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

from ..actions.cassandra_checks import open_session
from ..errors import InputError, TransportError

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session

TABLE = "ors_sessions"
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


class CassandraSessionStore:
    """Save, delete and load ORS sessions in `<keyspace>.ors_sessions`.

    Connects on first use (protocol v4 pinned, no schema or token metadata, short
    timeouts). Driver failures surface as TransportError with the contact points named."""

    def __init__(
        self,
        contact_points: list[str],
        keyspace: str,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout_s: float = 3.0,
    ) -> None:
        if not contact_points:
            raise InputError("no Cassandra contact points given", field="contact_points")
        if not _IDENTIFIER.match(keyspace):
            raise InputError(f"'{keyspace}' is not a plain CQL keyspace name", field="keyspace")
        self.contact_points = list(contact_points)
        self.keyspace = keyspace
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._connecting = threading.Lock()

    def session(self) -> Session:
        """The driver session, connected on first use (once, whichever thread asks first);
        after a failed connect the next call tries again."""
        with self._connecting:
            if self._session is None:
                self._cluster, self._session = open_session(
                    self.contact_points, self.username, self._password, timeout_s=self.timeout_s
                )
            return self._session

    def _execute(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        try:
            return self.session().execute(query, params)
        except TransportError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "NoHostAvailable":
                # Every host is marked down: start again from the contact points next time, as
                # ORS reconnects once Cassandra is back, instead of waiting on the driver's
                # reconnection backoff.
                self.close()
            verb = query.split(None, 1)[0]
            where = ", ".join(self.contact_points)
            raise TransportError(
                f"Cassandra {verb} on {where} failed: {type(exc).__name__}: {exc}"
            ) from None

    def ensure_schema(self) -> None:
        """Create the keyspace (SimpleStrategy, one replica) and table when missing."""
        self._execute(
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{TABLE} (cluster text, pair text, "
            "session_id text, payload text, PRIMARY KEY ((cluster, pair), session_id))"
        )

    def save(self, cluster: str, pair: str, session_id: str, payload: str, ttl_s: int) -> None:
        """Insert or replace one session; it expires after `ttl_s` seconds (0 = never)."""
        if ttl_s < 0:
            raise InputError(f"TTL must be 0 or more seconds, not {ttl_s}", field="ttl_s")
        self._execute(
            f"INSERT INTO {self.keyspace}.{TABLE} (cluster, pair, session_id, payload) "
            "VALUES (%s, %s, %s, %s) USING TTL %s",
            (cluster, pair, session_id, payload, int(ttl_s)),
        )

    def delete(self, cluster: str, pair: str, session_id: str) -> None:
        self._execute(
            f"DELETE FROM {self.keyspace}.{TABLE} WHERE cluster = %s AND pair = %s "
            "AND session_id = %s",
            (cluster, pair, session_id),
        )

    def load(self, cluster: str, pair: str) -> dict[str, str]:
        """The live sessions of one HA pair: session id -> payload."""
        rows = self._execute(
            f"SELECT session_id, payload FROM {self.keyspace}.{TABLE} "
            "WHERE cluster = %s AND pair = %s",
            (cluster, pair),
        )
        return {row.session_id: row.payload for row in rows}

    def close(self) -> None:
        with self._connecting:
            if self._cluster is not None:
                self._cluster.shutdown()
            self._cluster = None
            self._session = None

    def __enter__(self) -> CassandraSessionStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
