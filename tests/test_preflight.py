"""`preflight` reads the live estate and changes nothing: 0 when nothing blocks, 3 when
something does, each failure naming its cause and the fix."""

from __future__ import annotations

import json

from conftest import cli

from ors_migrate.lab.redis_cluster import RedisClusterLab


def test_preflight_passes_on_a_healthy_lab_and_names_dead_redis_nodes(make_lab, tmp_path):
    lab = make_lab(clusters=2, pairs_per_cluster=1)
    options_before = {p: p.read_bytes() for p in lab.root.glob("apps/*/options.ini")}

    healthy = cli("preflight", str(lab.site), "--json", "--state-dir", str(tmp_path / "s"))
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    report = json.loads(healthy.stdout)
    checks = {f["check"] for f in report["findings"]}
    assert {
        "host.reachable",
        "ors.roles",
        "options.current",
        "redis.cluster_state",
        "redis.slots",
        "cassandra.version",
    } <= checks
    assert report["blocking"] == 0
    assert all(f["severity"] != "error" for f in report["findings"])
    # The lab starts below 8.1.401.10 on purpose: preflight says the run will upgrade it.
    assert any(
        f["check"] == "ors.version" and f["severity"] == "warning" for f in report["findings"]
    )

    redis = RedisClusterLab.from_dir(lab.root)
    for port in redis.ports:
        redis.kill_node(port)
    broken = cli("preflight", str(lab.site), "--json", "--state-dir", str(tmp_path / "s"))
    assert broken.returncode == 3
    failures = [f for f in json.loads(broken.stdout)["findings"] if f["severity"] == "error"]
    assert failures and failures[0]["check"].startswith("redis.")
    assert "refused" in failures[0]["message"] and failures[0]["fix"]
    # The ORS host cannot reach them either, each node named.
    unreachable = {f["observed"]["node"] for f in failures if f["check"] == "host.redis.tcp"}
    assert unreachable == {f"127.0.0.1:{port}" for port in redis.ports}

    text = cli("preflight", str(lab.site), "--state-dir", str(tmp_path / "s"))
    assert text.returncode == 3 and f"{len(failures)} blocking problem" in text.stderr
    assert {p: p.read_bytes() for p in lab.root.glob("apps/*/options.ini")} == options_before
