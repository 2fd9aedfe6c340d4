"""`preflight` against a Redis Cluster that is partly down, in several shapes: always exit 3
with findings that name the nodes, never an internal error (redis-py raises
`RedisClusterException`, which is not a `RedisError`, when part of a cluster is unreachable)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from conftest import cli

from ors_migrate.lab.layout import LabLayout
from ors_migrate.lab.redis_cluster import RedisClusterLab


def preflight(lab: LabLayout, state: Path) -> list[dict[str, Any]]:
    done = cli("preflight", str(lab.site), "--json", "--state-dir", str(state))
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    return [f for f in json.loads(done.stdout)["findings"] if f["severity"] == "error"]


def named(failures: list[dict[str, Any]], ports: list[int]) -> bool:
    """Whether the Redis checks (not the ORS hosts' TCP checks) name one of `ports`."""
    text = " ".join(f["message"] for f in failures if f["check"].startswith("redis."))
    return any(f"127.0.0.1:{port}" in text for port in ports)


def test_preflight_names_the_nodes_of_a_partly_down_cluster_in_several_shapes(make_lab, tmp_path):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    state = tmp_path / "state"
    redis = RedisClusterLab.from_dir(lab.root)

    # An ACL user that may read INFO but not CLUSTER SLOTS: redis-py's cluster client raises
    # RedisClusterException ("Cluster mode is not enabled on this node").
    for port in redis.ports:
        redis.client(port).execute_command(
            "ACL", "SETUSER", "limited", "on", ">limited-pw", "~*", "+@all", "-cluster|slots"
        )
    site = lab.site.read_text()
    lab.site.write_text(
        site.replace(
            "  aof: true\n", "  aof: true\n  username: limited\n  password: env:LIMITED_PW\n"
        )
    )
    done = cli(
        "preflight",
        str(lab.site),
        "--json",
        "--state-dir",
        str(state),
        env={"LIMITED_PW": "limited-pw"},
    )
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "internal error" not in done.stderr
    failures = [f for f in json.loads(done.stdout)["findings"] if f["severity"] == "error"]
    assert any("user limited lacks an ACL permission" in f["message"] for f in failures)
    assert "limited-pw" not in done.stdout + done.stderr
    lab.site.write_text(site)
    roles = {p: redis.client(p).info("replication") for p in redis.ports}
    masters = [p for p, r in roles.items() if r["role"] == "master"]
    master = masters[0]
    replica = next(p for p, r in roles.items() if r.get("master_port") == master)

    redis.kill_node(master)  # one master gone, before any failover
    assert named(preflight(lab, state), [master])

    redis.kill_node(replica)  # its replica too: its slots have nobody left
    failures = preflight(lab, state)
    assert named(failures, [master]) and any(f["check"] == "redis.slots" for f in failures)

    hung = masters[1]  # a node that accepts nothing (a hung host): timeouts, not refusals
    pid = int(redis._files(hung).pidfile.read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        assert named(preflight(lab, state), redis.ports)  # which node times out first varies
    finally:
        os.kill(pid, signal.SIGCONT)

    survivors = [p for p in redis.ports if p not in (master, replica)]
    for port in survivors[1:]:  # all but one node down
        redis.kill_node(port)
    # The nodes down are named; under load the last survivor (the node that was hung) has
    # also been seen refusing, which preflight then names instead: any node, never a crash.
    assert named(preflight(lab, state), redis.ports)
    assert all(port in redis.ports for port in (master, replica, hung))
