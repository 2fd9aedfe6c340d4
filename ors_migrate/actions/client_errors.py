"""Errors of the client libraries (redis-py, cassandra-driver, paramiko) and of the operating
system, as causes the operator can act on.

The checks explain the errors they expect (`redis_checks.explain`, the Cassandra and SSH
transports); this is the net under them, so that an error nobody foresaw (a Redis Cluster
partly down mid-check, a driver exception type added in a new release) still reads as a cause
naming what could not be reached, never as an internal error. The libraries are recognised by
module name, so nothing here imports them.
"""

from __future__ import annotations

from ors_migrate.errors import OrsMigrateError, TransportError, VerificationFailed

CLIENT_LIBRARIES = {
    "redis": "Redis",
    "cassandra": "Cassandra",
    "paramiko": "SSH",
}


def _library(exc: BaseException) -> str | None:
    root = type(exc).__module__.split(".", 1)[0]
    return CLIENT_LIBRARIES.get(root)


def _unreachable_hosts(exc: BaseException) -> str:
    """cassandra-driver's NoHostAvailable keeps each host's error in `errors`."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        return "; ".join(f"{host}: {error}" for host, error in errors.items())
    return str(exc)


def as_cause(exc: BaseException, where: str) -> OrsMigrateError | None:
    """`exc` as a named cause at `where` (a check, a host, a node), or None when it is not a
    client or operating-system error. Connection trouble is a TransportError (retried where
    the engine retries); anything else a client library reports is a failed verification."""
    library = _library(exc)
    name = type(exc).__name__
    if library is None and not isinstance(exc, OSError):
        return None
    detail = _unreachable_hosts(exc) if name == "NoHostAvailable" else str(exc) or name
    what = library or "the operating system"
    message = f"{where}: {what} error {name}: {detail}"
    connection = isinstance(exc, OSError) or any(
        word in name for word in ("Connection", "Timeout", "NoHostAvailable", "SSHException")
    )
    if connection:
        return TransportError(message)
    if name == "RedisClusterException" and (
        "connect" in detail.lower() or "nodes" in detail.lower()
    ):
        return TransportError(message)
    return VerificationFailed(message)
