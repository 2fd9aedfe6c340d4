"""The documented rules, one test each: the rule fires on a site, option set or playbook that
breaks it, and stays quiet on one that follows it."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ors_migrate import rules
from ors_migrate.plan import build_plan
from ors_migrate.rules import Finding
from ors_migrate.runner import load_playbook
from ors_migrate.site import LoadedSite, Site, load_site
from ors_migrate.step import Plan

REPO = Path(__file__).resolve().parent.parent


def good_site() -> dict[str, Any]:
    """A site that follows every rule: no finding at all."""
    return {
        "version": 1,
        "name": "rules-site",
        "hosts": {
            "ors-1": {"transport": "ssh", "platform": "linux", "ssh": {"address": "10.0.0.1"}},
            "ors-2": {"transport": "ssh", "platform": "linux", "ssh": {"address": "10.0.0.2"}},
        },
        "options_backend": {"kind": "ini-file", "path": "/opt/ors/{app}/options.ini"},
        "services": {
            "start": "start {app}",
            "stop": "stop {app}",
            "status": "status {app}",
            "switchover": "switchover {pair}",
            "upgrade": "install {app} {version}",
        },
        "ors": {
            "target_version": "8.1.401.14",
            "digital_persistence": {
                "section": "persistence",
                "option": "enable-multimedia-persistence",
                "value": "false",
            },
        },
        "ors_clusters": [
            {
                "name": "VOICE",
                "ha_pairs": [pair("v1"), pair("v2")],
            },
            {"name": "OUTBOUND", "ha_pairs": [pair("o1")]},
        ],
        "redis": {
            "nodes": ["redis-1:6379", "redis-2:6379", "redis-3:6379"],
            "username": "ors",
            "password": "env:RULES_REDIS_PASSWORD",
            "node_memory_mb": 8192,
            "aof": True,
            "replicas_per_master": 1,
            "tls": {"enabled": True, "cert": "c.crt", "key": "c.key", "cacert": "ca.crt"},
        },
        "cassandra": {"in_use": True, "contact_points": ["cass-1:9042"], "version": "3.11.4"},
    }


def pair(name: str, version: str = "8.1.401.12", memory_mb: int = 8192) -> dict[str, Any]:
    return {
        "name": name,
        "apps": [
            {
                "name": f"{name}-a",
                "host": "ors-1",
                "role": "primary",
                "memory_mb": memory_mb,
                "version": version,
            },
            {
                "name": f"{name}-b",
                "host": "ors-2",
                "role": "backup",
                "memory_mb": memory_mb,
                "version": version,
            },
        ],
    }


def site_with(**changes: Any) -> dict[str, Any]:
    """The good site with some keys replaced; `a__b` addresses data["a"]["b"]."""
    data = copy.deepcopy(good_site())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def model(data: dict[str, Any]) -> Site:
    return Site.model_validate(data)


def write_site(tmp_path: Path, data: dict[str, Any]) -> LoadedSite:
    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    path = tmp_path / "site.yaml"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return load_site(path)


def plan_of(loaded: LoadedSite, playbook: str = "migrate-to-redis") -> Plan:
    return build_plan(loaded, load_playbook(playbook))


def write_playbook(tmp_path: Path, states: str) -> str:
    path = tmp_path / "custom.yaml"
    path.write_text("name: custom\ntitle: A custom procedure\nstates:\n" + states, encoding="utf-8")
    return str(path)


def ids(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


def all_findings(tmp_path: Path, data: dict[str, Any], playbook: str = "migrate-to-redis"):
    loaded = write_site(tmp_path, data)
    chosen = load_playbook(playbook)
    return rules.check(loaded, build_plan(loaded, chosen), chosen)


PREPARE = """\
  - id: prepare
    title: every option but type
    seed_step: prepare.4
    scope: app
    actions:
      - do: options.set
        with: {set: preparation}
"""


def enable_state(state_id: str, seed_step: str) -> str:
    """A playbook state that sets type=redis on the backups and switches over."""
    return f"""\
  - id: {state_id}
    title: type=redis on the backups
    seed_step: {seed_step}
    scope: ha_pair
    enables_redis: true
    actions:
      - do: options.set
        role: backup
        with: {{set: enable}}
      - do: service.switchover
"""


ENABLE_FIRST = enable_state("enable-first", "enable.1")
ENABLE_SECOND = enable_state("enable-second", "enable.4")


# The catalogue --------------------------------------------------------------------------------


def test_every_rule_has_a_unique_stable_id_and_an_explicit_severity() -> None:
    catalogue = rules.all_rules()
    assert len({r.id for r in catalogue}) == len(catalogue)
    for rule in catalogue:
        assert re.fullmatch(r"[a-z]+\.[a-z0-9-]+", rule.id), rule.id
        assert rule.severity in ("error", "warning")
        assert rule.summary


def test_every_rule_id_has_a_test_in_this_file() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [r.id for r in rules.all_rules() if f'"{r.id}"' not in source]
    assert not untested


def test_a_site_that_follows_every_rule_has_no_finding(tmp_path: Path) -> None:
    assert all_findings(tmp_path, good_site()) == []


def test_the_example_site_has_no_finding() -> None:
    loaded = load_site(REPO / "examples" / "site.yaml")
    chosen = load_playbook("migrate-to-redis")
    assert rules.check(loaded, build_plan(loaded, chosen), chosen) == []


# Site rules -----------------------------------------------------------------------------------


def test_ors_version_syntax_rejects_a_version_that_is_not_dotted_numbers() -> None:
    bad = site_with()
    bad["ors_clusters"][0]["ha_pairs"][0]["apps"][0]["version"] = "8.1.4-latest"
    found = rules.ors_version_syntax(model(bad))
    assert ids(found) == {"ors.version-syntax"}
    assert found[0].field == "ors_clusters[0].ha_pairs[0].apps[0].version"
    assert rules.ors_version_syntax(model(good_site())) == []


def test_ors_min_version_rejects_a_minimum_or_target_below_8_1_401_10() -> None:
    lowered = rules.ors_min_version(model(site_with(ors__min_version="8.1.400.50")))
    assert ids(lowered) == {"ors.min-version"} and "8.1.401.10" in lowered[0].message
    target = rules.ors_min_version(model(site_with(ors__target_version="8.1.401.02")))
    assert [f.field for f in target] == ["ors.target_version"]
    assert rules.ors_min_version(model(good_site())) == []


def test_ors_upgrade_manual_warns_when_old_applications_have_no_upgrade_command() -> None:
    old = site_with(services__upgrade=None)
    old["ors_clusters"][1]["ha_pairs"] = [pair("o1", version="8.1.400.67")]
    found = rules.ors_upgrade_manual(model(old))
    assert ids(found) == {"ors.upgrade-manual"}
    assert found[0].severity == "warning" and "o1-a, o1-b" in found[0].message
    with_command = copy.deepcopy(old)
    with_command["services"]["upgrade"] = "install {app} {version}"
    assert rules.ors_upgrade_manual(model(with_command)) == []


@pytest.mark.parametrize("mode", ["standalone", "sentinel"])
def test_redis_cluster_only_rejects_standalone_and_sentinel(mode: str) -> None:
    found = rules.redis_cluster_only(model(site_with(redis__mode=mode)))
    assert ids(found) == {"redis.cluster-only"} and found[0].severity == "error"
    assert rules.redis_cluster_only(model(good_site())) == []


def test_redis_min_nodes_needs_three_distinct_nodes() -> None:
    two = rules.redis_min_nodes(model(site_with(redis__nodes=["r1:6379", "r2:6379"])))
    assert ids(two) == {"redis.min-nodes"}
    repeated = site_with(redis__nodes=["r1:6379", "r2:6379", "r1:6379"])
    assert ids(rules.redis_min_nodes(model(repeated))) == {"redis.min-nodes"}
    assert rules.redis_min_nodes(model(good_site())) == []


def test_redis_capacity_warns_beyond_about_nine_ha_pairs_per_three_nodes() -> None:
    nine = site_with()
    nine["ors_clusters"] = [{"name": "BIG", "ha_pairs": [pair(f"p{i}") for i in range(9)]}]
    assert rules.redis_capacity(model(nine)) == []
    ten = copy.deepcopy(nine)
    ten["ors_clusters"][0]["ha_pairs"].append(pair("p9"))
    found = rules.redis_capacity(model(ten))
    assert ids(found) == {"redis.capacity"} and found[0].severity == "warning"
    assert "plan for 4 nodes" in found[0].message
    six_nodes = copy.deepcopy(ten)
    six_nodes["redis"]["nodes"] = [f"redis-{i}:6379" for i in range(6)]
    assert rules.redis_capacity(model(six_nodes)) == []


def test_redis_node_memory_warns_when_a_node_has_less_than_the_biggest_ors_application() -> None:
    small = site_with(redis__node_memory_mb=4096)
    found = rules.redis_node_memory(model(small))
    assert ids(found) == {"redis.node-memory"} and found[0].severity == "warning"
    assert "8192" in found[0].message
    assert rules.redis_node_memory(model(good_site())) == []
    assert rules.redis_node_memory(model(site_with(redis__node_memory_mb=None))) == []


def test_redis_aof_is_recommended() -> None:
    assert ids(rules.redis_aof(model(site_with(redis__aof=False)))) == {"redis.aof"}
    undeclared = rules.redis_aof(model(site_with(redis__aof=None)))
    assert ids(undeclared) == {"redis.aof"} and "preflight" in undeclared[0].message
    assert rules.redis_aof(model(good_site())) == []


def test_redis_replicas_are_recommended() -> None:
    none = rules.redis_replicas(model(site_with(redis__replicas_per_master=0)))
    assert ids(none) == {"redis.replicas"} and none[0].severity == "warning"
    assert ids(rules.redis_replicas(model(site_with(redis__replicas_per_master=None)))) == {
        "redis.replicas"
    }
    assert rules.redis_replicas(model(good_site())) == []


def test_tls_windows_rejects_tls_for_ors_applications_on_windows_hosts() -> None:
    windows = site_with(hosts__ors_2=None)
    windows["hosts"]["ors-2"] = {"transport": "ssh", "platform": "windows"}
    found = rules.tls_windows(model(windows))
    assert ids(found) == {"tls.windows"} and found[0].field == "hosts.ors-2.platform"
    without_tls = copy.deepcopy(windows)
    without_tls["redis"]["tls"] = {"enabled": False}
    assert rules.tls_windows(model(without_tls)) == []
    assert rules.tls_windows(model(good_site())) == []


def test_tls_settings_unused_warns_about_tls_files_with_tls_off() -> None:
    off = site_with(redis__tls={"enabled": False, "cert": "c.crt", "key": "c.key"})
    found = rules.tls_settings_unused(model(off))
    assert ids(found) == {"tls.settings-unused"} and found[0].severity == "warning"
    assert rules.tls_settings_unused(model(site_with(redis__tls={"enabled": False}))) == []
    assert rules.tls_settings_unused(model(good_site())) == []


def test_cassandra_4_in_use_is_a_warning_and_a_garbled_version_an_error() -> None:
    assert rules.cassandra_version(model(site_with(cassandra__version="4.0.11"))) == []
    four = rules.cassandra_version_4(model(site_with(cassandra__version="4.0.11")))
    assert ids(four) == {"cassandra.version-4"} and four[0].severity == "warning"
    assert "could not have persisted sessions" in four[0].message
    garbled = rules.cassandra_version(model(site_with(cassandra__version="latest")))
    assert ids(garbled) == {"cassandra.version"}
    not_in_use = site_with(cassandra__version="4.1.0", cassandra__in_use=False)
    assert rules.cassandra_version(model(not_in_use)) == []
    assert rules.cassandra_version(model(site_with(cassandra__version="2.2.19"))) == []
    assert rules.cassandra_version(model(good_site())) == []


def test_digital_persistence_unset_is_a_warning() -> None:
    found = rules.digital_persistence_unset(model(site_with(ors__digital_persistence=None)))
    assert ids(found) == {"ors.digital-persistence-unset"} and found[0].severity == "warning"
    # the documents name no option: the message names none as theirs, and guesses none
    assert "name no option" in found[0].message
    assert "enable-multimedia-persistence" not in found[0].message
    assert rules.digital_persistence_unset(model(good_site())) == []


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_digital_persistence_turned_on_is_an_error(value: str) -> None:
    on = site_with()
    on["ors"]["digital_persistence"]["value"] = value
    found = rules.digital_persistence_enabled(model(on))
    assert ids(found) == {"ors.digital-persistence-enabled"} and found[0].severity == "error"
    assert rules.digital_persistence_enabled(model(good_site())) == []


@pytest.mark.parametrize("option", ["type", "password", "tls-cert", "redis-nodes"])
def test_options_managed_by_tool_cannot_be_set_as_extra_persistence_options(option: str) -> None:
    extra = site_with(ors__extra_persistence_options={option: "x", "redis-socket-timeout": "3"})
    found = rules.options_managed_by_tool(model(extra))
    assert ids(found) == {"options.managed-by-tool"}
    assert found[0].field == f"ors.extra_persistence_options.{option}"
    timeouts = site_with(ors__extra_persistence_options={"redis-socket-timeout": "3000"})
    assert rules.options_managed_by_tool(model(timeouts)) == []


def test_options_managed_by_tool_covers_the_digital_persistence_option_name() -> None:
    clash = site_with()
    clash["ors"]["digital_persistence"] = {
        "section": "orchestration",
        "option": "sessionid-with-nodeid",
        "value": "false",
    }
    assert ids(rules.options_managed_by_tool(model(clash))) == {"options.managed-by-tool"}


# Option rules ---------------------------------------------------------------------------------


def test_redis_nodes_syntax_is_host_port_separated_by_semicolons() -> None:
    key = ("persistence", "redis-nodes")
    for bad in ("r1:6379,r2:6379", "r1;r2", "r1:6379; r2:6379", "r1:port"):
        assert ids(rules.redis_nodes_syntax({key: bad})) == {"redis.nodes-syntax"}, bad
    doubled = rules.redis_nodes_syntax({key: "r1:6379;r2:6379;r1:6379"})
    assert ids(doubled) == {"redis.nodes-syntax"} and "more than once" in doubled[0].message
    unset = rules.redis_nodes_syntax({("persistence", "type"): "redis"})
    assert ids(unset) == {"redis.nodes-syntax"}
    assert rules.redis_nodes_syntax({key: "r1:6379;r2:6379;[::1]:6380"}) == []


def test_tls_cert_key_pair_needs_both_or_neither() -> None:
    cert_only = {
        ("persistence", "tls-enabled"): "true",
        ("persistence", "tls-cert"): "c.crt",
        ("persistence", "tls-cacert"): "ca.crt",
    }
    found = rules.tls_cert_key_pair(cert_only)
    assert ids(found) == {"tls.cert-key-pair"} and "tls-key" in found[0].message
    key_only = {("persistence", "tls-key"): "c.key"}
    assert ids(rules.tls_cert_key_pair(key_only)) == {"tls.cert-key-pair"}
    both = {**cert_only, ("persistence", "tls-key"): "c.key"}
    assert rules.tls_cert_key_pair(both) == []
    assert rules.tls_cert_key_pair({}) == []


def test_tls_ca_required_when_tls_is_on() -> None:
    no_ca = {("persistence", "tls-enabled"): "true"}
    assert ids(rules.tls_ca_required(no_ca)) == {"tls.ca-required"}
    for ca in ("tls-cacert", "tls-cacertdir"):
        assert rules.tls_ca_required({**no_ca, ("persistence", ca): "/etc/ca"}) == []
    assert rules.tls_ca_required({("persistence", "tls-enabled"): "false"}) == []


def test_option_rules_run_on_the_options_the_playbook_writes_and_name_the_site_line(
    tmp_path: Path,
) -> None:
    cert_only = site_with(redis__tls={"enabled": True, "cert": "c.crt", "cacert": "ca.crt"})
    found = [f for f in all_findings(tmp_path, cert_only) if f.rule == "tls.cert-key-pair"]
    assert len(found) == 1, "reported once, not once per application"
    lines = (tmp_path / "site.yaml").read_text().splitlines()
    assert found[0].file == str(tmp_path / "site.yaml")
    assert lines[found[0].line - 1].strip() == "tls:"


# Plan rules -----------------------------------------------------------------------------------


def test_type_redis_last_rejects_enabling_before_the_other_options(tmp_path: Path) -> None:
    loaded = write_site(tmp_path, good_site())
    early = plan_of(loaded, write_playbook(tmp_path, ENABLE_FIRST + PREPARE))
    found = rules.type_redis_last(loaded.site, early)
    assert ids(found) == {"options.type-redis-last"}
    assert {f.state for f in found} == {"enable-first"}
    assert rules.type_redis_last(loaded.site, plan_of(loaded)) == []


def test_type_redis_last_rejects_enabling_in_the_same_state_as_the_other_options(
    tmp_path: Path,
) -> None:
    together = """\
  - id: all-at-once
    title: every option and type=redis together
    seed_step: null
    scope: ha_pair
    actions:
      - do: options.set
        role: backup
        with: {set: preparation}
      - do: options.set
        role: backup
        with: {set: enable}
"""
    loaded = write_site(tmp_path, good_site())
    found = rules.type_redis_last(loaded.site, plan_of(loaded, write_playbook(tmp_path, together)))
    assert ids(found) == {"options.type-redis-last"}
    assert all("same or a later state" in f.message or "before" in f.message for f in found)


def test_sessionid_with_nodeid_must_be_true_before_redis_is_enabled(tmp_path: Path) -> None:
    overwritten = site_with()
    overwritten["ors"]["digital_persistence"] = {
        "section": "orchestration",
        "option": "sessionid-with-nodeid",
        "value": "false",
    }
    loaded = write_site(tmp_path, overwritten)
    found = rules.sessionid_before_enable(loaded.site, plan_of(loaded))
    assert ids(found) == {"options.sessionid-before-enable"}
    assert "is false" in found[0].message
    good = write_site(tmp_path, good_site())
    assert rules.sessionid_before_enable(good.site, plan_of(good)) == []


def test_one_store_per_cluster_rejects_a_plan_that_leaves_half_of_a_cluster_on_cassandra(
    tmp_path: Path,
) -> None:
    loaded = write_site(tmp_path, good_site())
    half = plan_of(loaded, write_playbook(tmp_path, PREPARE + ENABLE_FIRST))
    found = rules.one_store_per_cluster(loaded.site, half)
    assert ids(found) == {"ors.one-store-per-cluster"}
    assert {"VOICE", "OUTBOUND"} <= {w for f in found for w in re.findall(r"[A-Z]+", f.message)}
    whole = plan_of(loaded, write_playbook(tmp_path, PREPARE + ENABLE_FIRST + ENABLE_SECOND))
    assert rules.one_store_per_cluster(loaded.site, whole) == []
    assert rules.one_store_per_cluster(loaded.site, plan_of(loaded)) == []


def test_upgrade_missing_rejects_enabling_redis_on_an_old_ors_without_an_upgrade(
    tmp_path: Path,
) -> None:
    old = site_with()
    old["ors_clusters"][1]["ha_pairs"] = [pair("o1", version="8.1.400.67")]
    loaded = write_site(tmp_path, old)
    no_upgrade = plan_of(loaded, write_playbook(tmp_path, PREPARE + ENABLE_FIRST + ENABLE_SECOND))
    found = rules.upgrade_missing(loaded.site, no_upgrade)
    assert ids(found) == {"ors.upgrade-missing"}
    assert {f.loc[-1] for f in found} == {"version"}
    assert rules.upgrade_missing(loaded.site, plan_of(loaded)) == []


def test_plan_rule_findings_name_the_playbook_file_and_state_line(tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path, PREPARE + ENABLE_FIRST)
    found = [
        f
        for f in all_findings(tmp_path, good_site(), playbook)
        if f.rule == "ors.one-store-per-cluster"
    ]
    assert found and found[0].file == playbook
    state_line = Path(playbook).read_text().splitlines()[found[0].line - 1]
    assert state_line.strip() == "- id: enable-first"


def test_the_rollback_playbook_breaks_no_rule(tmp_path: Path) -> None:
    assert all_findings(tmp_path, good_site(), "rollback") == []


def test_check_site_runs_the_site_rules_alone_with_their_lines(tmp_path: Path) -> None:
    loaded = write_site(tmp_path, site_with(redis__mode="sentinel"))
    found = rules.check_site(loaded)
    assert ids(found) == {"redis.cluster-only"}
    lines = (tmp_path / "site.yaml").read_text().splitlines()
    assert lines[found[0].line - 1].strip() == "mode: sentinel"
