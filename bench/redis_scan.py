"""(e) The serialization check on a Redis Cluster that holds 1,000,000 unrelated keys.

A 3-master Redis Cluster from the lab (no replicas, no AOF: loading is faster and the check
reads primaries only) gets the unrelated keys (a third with a TTL), the keys of another ORS
cluster, and the `ORS:<cluster>` keys the check looks for, each written to the node that owns
its slot with `redis-cli --pipe`. Then, with `slowlog-log-slower-than 10000` (10 ms) on every
primary and the slow logs and command statistics reset, `serialization_check` runs once; the
slow logs and the SCAN/PTTL statistics are printed. A single `KEYS` on one node follows, as the
positive control of the slow log (and the reason the check uses SCAN).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ors_migrate.actions.redis_checks import SCAN_COUNT, serialization_check
from ors_migrate.lab.redis_cluster import RedisClusterLab
from ors_migrate.site import RedisSettings

ORS_CLUSTER = "ORS_BENCH"
ORS_KEYS = 5_000
OTHER_ORS_KEYS = 10_000
SLOWLOG_THRESHOLD_US = 10_000


def resp(*parts: str) -> bytes:
    encoded = [p.encode() for p in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)


def keys_to_load(unrelated: int) -> Iterator[tuple[str, bytes]]:
    """(key, SET command) for every key of the data set."""
    for n in range(unrelated):
        key = f"{('session', 'cache:item', 'user:profile')[n % 3]}:{n:08d}"
        ttl = ("EX", "3600") if n % 3 == 0 else ()
        yield key, resp("SET", key, f"value-{n}", *ttl)
    for n in range(OTHER_ORS_KEYS):
        key = f"ORS:ORS_OTHER:session:{n:06d}"
        yield key, resp("SET", key, "{}", "EX", "600")
    for n in range(ORS_KEYS):
        key = f"ORS:{ORS_CLUSTER}:session:{n:06d}"
        ttl = ("EX", "600") if n % 10 else ()
        yield key, resp("SET", key, "{}", *ttl)


def slot_owners(lab: RedisClusterLab) -> dict[int, int]:
    """Slot -> port of the primary that serves it."""
    owners: dict[int, int] = {}
    with lab.client(lab.ports[0]) as conn:
        for start, end, primary, *_ in conn.execute_command("CLUSTER", "SLOTS"):
            for slot in range(int(start), int(end) + 1):
                owners[slot] = int(primary[1])
    return owners


def load(lab: RedisClusterLab, unrelated: int, directory: Path) -> float:
    """Write every key to its node with `redis-cli --pipe`; returns the seconds it took."""
    from redis.crc import key_slot

    began = time.perf_counter()
    owners = slot_owners(lab)
    files = {port: open(directory / f"load-{port}.resp", "wb") for port in set(owners.values())}
    try:
        for key, command in keys_to_load(unrelated):
            files[owners[key_slot(key.encode())]].write(command)
    finally:
        for handle in files.values():
            handle.close()
    for port in files:
        with open(directory / f"load-{port}.resp", "rb") as source:
            subprocess.run(
                ["redis-cli", "-p", str(port), "--pipe"],
                stdin=source,
                capture_output=True,
                check=True,
            )
    return time.perf_counter() - began


def on_primaries(lab: RedisClusterLab, *command: str) -> dict[int, Any]:
    answers = {}
    for port in lab.ports:
        with lab.client(port) as conn:
            answers[port] = conn.execute_command(*command)
    return answers


def slowlog_lines(lab: RedisClusterLab, port: int, most: int = 128) -> Iterator[str]:
    with lab.client(port) as conn:
        entries = conn.slowlog_get(most)
    if not entries:
        yield f"    127.0.0.1:{port}: (empty)"
    for entry in entries:
        command = entry["command"]
        text = command.decode() if isinstance(command, bytes) else str(command)
        yield f"    127.0.0.1:{port}: {entry['duration'] / 1000:.1f} ms  {text[:80]}"


def command_stats(lab: RedisClusterLab) -> Iterator[str]:
    for port in lab.ports:
        with lab.client(port) as conn:
            stats = conn.info("commandstats")
            keys = conn.dbsize()
        for command in ("scan", "pttl"):
            stat = stats.get(f"cmdstat_{command}")
            if stat:
                yield (
                    f"    127.0.0.1:{port} ({keys} keys): {command.upper():<4} calls "
                    f"{stat['calls']:>6}, {stat['usec_per_call']:>8.1f} us/call, "
                    f"{stat['usec'] / 1000:>7.1f} ms in all"
                )


def serialization_at_scale(unrelated: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        lab = RedisClusterLab(Path(directory), masters=3, replicas_per_master=0, aof=False)
        lab.start()
        try:
            yield from _measure(lab, unrelated, Path(directory))
        finally:
            lab.stop()


def _measure(lab: RedisClusterLab, unrelated: int, directory: Path) -> Iterator[str]:
    total = unrelated + OTHER_ORS_KEYS + ORS_KEYS
    seconds = load(lab, unrelated, directory)
    yield (
        f"  cluster: 3 primaries, {total} keys ({unrelated} unrelated, {OTHER_ORS_KEYS} under "
        f"ORS:ORS_OTHER, {ORS_KEYS} under ORS:{ORS_CLUSTER}), loaded in {seconds:.1f} s"
    )
    on_primaries(lab, "CONFIG", "SET", "slowlog-log-slower-than", str(SLOWLOG_THRESHOLD_US))
    on_primaries(lab, "SLOWLOG", "RESET")
    on_primaries(lab, "CONFIG", "RESETSTAT")
    settings = RedisSettings(nodes=lab.nodes)
    began = time.perf_counter()
    result = serialization_check(settings, None, ORS_CLUSTER)
    seconds = time.perf_counter() - began
    yield f"  serialization_check(ORS:{ORS_CLUSTER}): {seconds:.2f} s wall"
    yield f"    {result.severity}: {result.message}"
    yield f"  SCAN COUNT {SCAN_COUNT}, MATCH {result.observed.get('pattern')}; per primary:"
    yield from command_stats(lab)
    threshold = f"slowlog-log-slower-than {SLOWLOG_THRESHOLD_US}"
    yield f"  SLOWLOG of every primary after the check ({threshold}):"
    for port in lab.ports:
        yield from slowlog_lines(lab, port)
    with lab.client(lab.ports[0]) as conn:
        began = time.perf_counter()
        found = len(conn.keys(f"ORS:{ORS_CLUSTER}*"))
        seconds = time.perf_counter() - began
    yield (
        f"  positive control: KEYS ORS:{ORS_CLUSTER}* on 127.0.0.1:{lab.ports[0]} alone: "
        f"{1000 * seconds:.1f} ms, {found} keys; its SLOWLOG now:"
    )
    yield from slowlog_lines(lab, lab.ports[0], most=5)
