"""The walking skeleton, end to end: the real playbook through the real state machine against a
real Redis Cluster, simulated ORS HA pairs and the CQL stand-in.

The run uses `--parallel 4 --parallel-per-cluster 1`: it must end exactly as a serial run ends
(the serial path runs end to end in the kill tests of test_durable_runs.py), and the lab's own
service record shows the limits held and no pair ever lost both members."""

from __future__ import annotations

import json

from conftest import cli
from redis.cluster import RedisCluster
from service_record import both_members_down, most_pairs_busy

from ors_migrate.lab.redis_cluster import RedisClusterLab

SEED_ORDER = [
    "prepare.1",
    "prepare.2",
    "prepare.3",
    "prepare.4",
    "prepare.5",
    "prepare.6",
    "enable.1",
    "enable.2",
    "enable.3",
    "enable.4",
    "enable.5",
]


def _dedupe(steps: list[str]) -> list[str]:
    out: list[str] = []
    for step in steps:
        if not out or out[-1] != step:
            out.append(step)
    return out


def test_full_migration_moves_every_application_to_redis_as_documented(make_lab, tmp_path):
    lab = make_lab()
    state_dir = tmp_path / "state"

    planned = cli("plan", str(lab.site), "--format", "json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert _dedupe([s["seed_step"] for s in plan["states"]]) == SEED_ORDER

    before = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    original_backups = {a["ha_pair"]: a["app"] for a in before["apps"] if a["role"] == "backup"}
    assert all(a["type"] == "cassandra" and a["version"] < "8.1.401" for a in before["apps"])

    result = cli(
        "run", str(lab.site), "--yes", "--state-dir", str(state_dir),
        "--parallel", "4", "--parallel-per-cluster", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "up to 4 HA pairs at a time, at most 1 per ORS cluster" in result.stderr
    assert "    [cl2-pair1] ok  restart " in result.stderr  # each pair's lines say which

    status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    apps = status["apps"]
    assert {a["type"] for a in apps} == {"redis"}
    assert all(a["version"] == "8.1.401.12" for a in apps)
    pairs: dict[str, list[str]] = {}
    for a in apps:
        pairs.setdefault(a["ha_pair"], []).append(a["role"])
    assert all(sorted(roles) == ["backup", "primary"] for roles in pairs.values())
    # Three switchovers per pair (prepare.5, enable.1, enable.4): the original backup is primary.
    primaries = {a["ha_pair"]: a["app"] for a in apps if a["role"] == "primary"}
    assert primaries == original_backups

    # From the lab's record: never both members of a pair down; one pair per cluster at a
    # time although four could run, and the two clusters' pairs at once.
    assert both_members_down(status["services"]) == []
    most, per_cluster = most_pairs_busy(status["services"])
    assert per_cluster == {"ORS_CL1": 1, "ORS_CL2": 1} and most == 2

    promotions = [p for p in status["switchovers"] if p["from"]]
    assert len(promotions) == 3 * len(pairs)
    to_redis: dict[str, list[dict]] = {}
    for p in promotions:
        if p["store"] == "redis":
            to_redis.setdefault(p["pair"], []).append(p)
    # Each pair switched to a primary on Redis twice: enable.1, then enable.4.
    assert sorted(to_redis) == sorted(pairs)
    assert all(len(seen) == 2 for seen in to_redis.values()), to_redis
    first_redis = [seen[0] for seen in to_redis.values()]
    second_redis = [seen[1] for seen in to_redis.values()]
    assert len(first_redis) == len(second_redis) == len(pairs)
    # enable.1: the new primaries read Redis, the old ones wrote Cassandra: nothing restored.
    assert all(p["restored"] == 0 and p["lost"] == p["in_progress"] > 0 for p in first_redis)
    # enable.4: both read and write Redis: sessions in progress are restored.
    assert all(p["restored"] > 0 and p["lost"] == 0 for p in second_redis)
    assert sum(a["restored"] for a in apps) > 0

    runs = json.loads(cli("runs", "--json", "--state-dir", str(state_dir)).stdout)
    assert [r["status"] for r in runs] == ["succeeded"]
    one = json.loads(
        cli("status", runs[0]["run_id"], "--json", "--state-dir", str(state_dir)).stdout
    )
    assert one["status"] == "succeeded" and one["playbook"] == "migrate-to-redis"
    report = json.loads(
        cli("report", runs[0]["run_id"], "-f", "json", "--state-dir", str(state_dir)).stdout
    )
    assert report["estimate"]["parallel"] == {"pairs": 4, "per_cluster": 1}
    assert report["estimate"]["parallel_latest"] == {"pairs": 4, "per_cluster": 1}

    # Redis itself holds ORS data for each ORS cluster, every key with a TTL.
    config = json.loads(lab.config.read_text())
    host, port = config["redis_nodes"][0].split(":")
    client = RedisCluster(host=host, port=int(port))
    try:
        for cluster in config["clusters"]:
            keys = list(
                client.scan_iter(
                    match=f"ORS:{cluster}:*", count=500, target_nodes=RedisCluster.PRIMARIES
                )
            )
            assert keys, f"no keys under ORS:{cluster}"
            ttls = [client.ttl(k) for k in keys[:50]]
            # -2: the session ended (ORS deleted its key) between SCAN and TTL; -1 would be a
            # key without expiry, which ORS never writes.
            assert all(t > 0 or t == -2 for t in ttls), ttls
            assert sum(t > 0 for t in ttls) > len(ttls) // 2, ttls
    finally:
        client.close()
    assert RedisClusterLab.from_dir(lab.root).nodes == config["redis_nodes"]
