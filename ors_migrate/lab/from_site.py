"""A rehearsal lab shaped like a site: its ORS clusters, HA pairs and application names, its
Redis Cluster shape (node count, replicas, TLS, ACL user), its Cassandra keyspace and release
(on the CQL stand-in), its option backend kind where the lab can emulate it, its target version.

The lab's site file is the production site file itself, comments kept, with only what must point
at the lab replaced: hosts (every host becomes a local one), option locations and commands,
service commands, Redis and Cassandra addresses, TLS file paths and secrets. `plan_outline`
(in `ors_migrate.rehearsal`) shows that both files plan the same states with the same actions."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ors_migrate.lab import cfgtool
from ors_migrate.lab.lab import (
    CASSANDRA_VERSION,
    LabError,
    LabTopology,
    lab_services,
    new_secret_file,
)
from ors_migrate.lab.layout import SIMULATOR_START_VERSION, LabLayout
from ors_migrate.site import LoadedSite, Site

LAB_HOST = {"transport": "local", "platform": "linux"}
NODETOOL_STAND_IN = "echo 'ReleaseVersion: {release}'"
LAB_SUFFIX = "-lab"


@dataclass
class Rehearsal:
    """How the lab stands for the site, and what it cannot rehearse."""

    site_path: Path
    site: Site
    topology: LabTopology
    monitor_window_s: float | None = None
    differences: list[str] = field(default_factory=list)


def _redis_shape(site: Site) -> tuple[int, int]:
    nodes = len(site.redis.nodes)
    replicas = site.redis.replicas_per_master
    if replicas is None:
        replicas = 1 if nodes >= 6 and nodes % 2 == 0 else 0
    masters, extra = divmod(nodes, 1 + replicas)
    if extra or masters < 3:
        raise LabError(
            f"the lab cannot build a Redis Cluster of {nodes} nodes with {replicas} replica(s) "
            "per master: it needs at least 3 masters and the same number of replicas for each "
            "(redis.nodes, redis.replicas_per_master)"
        )
    return masters, replicas


def rehearsal_of(site_path: Path, loaded: LoadedSite, monitor_window_s: float | None) -> Rehearsal:
    """The lab topology for a site, or LabError naming what the lab cannot emulate."""
    site = loaded.site
    tls = site.redis.tls
    if tls.enabled and not (tls.cert and tls.key):
        raise LabError(
            "the lab's Redis Cluster with TLS requires client certificates; the site's redis.tls "
            "has no cert/key, so its connection cannot be rehearsed here"
        )
    masters, replicas = _redis_shape(site)
    # The lab's Redis asks for a login only when the site gives ORS a password to log in with.
    user = (site.redis.username or "default") if site.redis.password else None
    clusters: dict[str, list[str]] = {}
    pairs: dict[str, tuple[str, str]] = {}
    versions: dict[str, str] = {}
    for cluster, pair in site.pairs():
        clusters.setdefault(cluster.name, []).append(pair.name)
        primary, backup = pair.app_with_role("primary"), pair.app_with_role("backup")
        pairs[pair.name] = (primary.name, backup.name)
        for app in (primary, backup):
            versions[app.name] = app.version or SIMULATOR_START_VERSION
    cassandra = site.cassandra
    topology = LabTopology(
        site_name=site.name + LAB_SUFFIX,
        clusters=clusters,
        pairs=pairs,
        versions=versions,
        redis_masters=masters,
        redis_replicas=replicas,
        redis_tls=tls.enabled,
        redis_user=user,
        cassandra_version=(cassandra.version if cassandra and cassandra.version else None)
        or CASSANDRA_VERSION,
        cassandra_keyspace=cassandra.keyspace if cassandra else "orchestration",
    )
    rehearsal = Rehearsal(site_path, site, topology, monitor_window_s)
    rehearsal.differences = _differences(site, monitor_window_s)
    return rehearsal


def _differences(site: Site, monitor_window_s: float | None) -> list[str]:
    """What the lab does not rehearse as production will run it, besides addresses and secrets."""
    notes = [
        "ORS applications are simulated; Cassandra is a CQL stand-in (a protocol-level test "
        "double, not Cassandra); every host runs locally"
    ]
    backend = site.options_backend.kind
    if backend == "command":
        notes.append(
            "options backend 'command': the lab's stand-in tool (ors_migrate.lab.cfgtool) "
            "replaces the site's get/set commands"
        )
    if backend == "manual":
        notes.append(
            "options backend 'manual': the lab cannot emulate Genesys Administrator; it edits "
            "the options files itself (ini-file), so the manual steps are planned but not rehearsed"
        )
    if any(host.platform == "windows" for host in site.hosts.values()):
        notes.append("Windows hosts run as local Linux hosts in the lab")
    if site.cassandra and (site.cassandra.username or site.cassandra.password):
        notes.append("the CQL stand-in does not ask for the Cassandra login")
    if monitor_window_s is not None and monitor_window_s != site.redis.monitor.window_s:
        notes.append(
            f"Redis monitoring window {monitor_window_s:g} s instead of the site's "
            f"{site.redis.monitor.window_s:g} s (--monitor-window-s)"
        )
    return notes


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def site_writer(rehearsal: Rehearsal) -> Callable[[LabLayout, dict[str, Any]], str]:
    """The function `lab_up` calls to write the lab's site file once the lab runs."""

    def write(layout: LabLayout, config: dict[str, Any]) -> str:
        return rehearsal_site_text(rehearsal, layout, config)

    return write


def rehearsal_site_text(rehearsal: Rehearsal, layout: LabLayout, config: dict[str, Any]) -> str:
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: the production file's comments and order stay
    yaml.width = 4096
    doc = yaml.load(rehearsal.site_path.read_text())
    site = rehearsal.site
    doc["name"] = rehearsal.topology.site_name
    doc["rehearsal_of"] = {
        "site": str(rehearsal.site_path.resolve()),
        "name": site.name,
        "sha256": _sha256(rehearsal.site_path),
    }
    for host in doc["hosts"]:
        doc["hosts"][host] = dict(LAB_HOST)
    _point_backend_at_lab(doc, layout)
    _point_apps_at_lab(doc, layout)
    _point_services_at_lab(doc, layout)
    _point_redis_at_lab(doc, layout, config, rehearsal.monitor_window_s)
    _point_cassandra_at_lab(doc, layout, config, rehearsal.topology.cassandra_version)
    out = io.StringIO()
    yaml.dump(doc, out)
    header = [
        f"# Rehearsal lab of {rehearsal.site_path} (site '{site.name}'), made by",
        "# `ors-migrate lab up --from`. Only what must point at the lab differs from that file:",
        "# hosts, option locations and commands, service commands, Redis and Cassandra addresses,",
        "# TLS files and secrets. Not rehearsed as production will run it:",
        *[f"#  - {note}" for note in rehearsal.differences],
    ]
    return "\n".join(header) + "\n" + out.getvalue()


def _point_backend_at_lab(doc: Any, layout: LabLayout) -> None:
    backend = doc["options_backend"]
    suffix = backend.get("backup_suffix")
    if backend.get("kind") == "command":
        tool = cfgtool.command(layout.root)
        new: dict[str, Any] = {
            "kind": "command",
            "get_command": f"{tool} get {{app}}",
            "set_command": f"{tool} set {{app}}",
        }
    else:
        new = {"kind": "ini-file", "path": str(layout.root / "apps") + "/{app}/options.ini"}
    if suffix is not None:
        new["backup_suffix"] = suffix
    doc["options_backend"] = new


def _point_apps_at_lab(doc: Any, layout: LabLayout) -> None:
    for cluster in doc["ors_clusters"]:
        for pair in cluster["ha_pairs"]:
            for app in pair["apps"]:
                app.pop("options_path", None)
                if "install_dir" in app:
                    app["install_dir"] = str(layout.app_dir(app["name"]))


def _point_services_at_lab(doc: Any, layout: LabLayout) -> None:
    services = doc["services"]
    for key, command in lab_services(layout).items():
        if key in services or key in ("start", "stop", "status", "switchover"):
            services[key] = command


def _point_redis_at_lab(
    doc: Any, layout: LabLayout, config: dict[str, Any], monitor_window_s: float | None
) -> None:
    redis = doc["redis"]
    redis["nodes"] = list(config["redis_nodes"])
    if "password" in redis:
        redis["password"] = "file:" + str(new_secret_file(layout, "redis-ors.password", reuse=True))
    tls = redis.get("tls")
    if tls and config.get("redis_tls"):
        files = config["redis_tls"]
        for key in ("cert", "key", "cacert"):
            if key in tls:
                tls[key] = files[key]
        if "cacertdir" in tls:
            tls["cacertdir"] = str(Path(files["cacert"]).parent)
        if "sni" in tls:
            tls["sni"] = "localhost"  # a name in the lab's server certificate
    if monitor_window_s is not None:
        monitor = redis.setdefault("monitor", {})
        monitor["window_s"] = monitor_window_s
        if monitor.get("interval_s", 1.0) > monitor_window_s / 5:
            monitor["interval_s"] = monitor_window_s / 5  # still several samples in the window


def _point_cassandra_at_lab(
    doc: Any, layout: LabLayout, config: dict[str, Any], release: str
) -> None:
    cassandra = doc.get("cassandra")
    if not cassandra:
        return
    cassandra["contact_points"] = [f"127.0.0.1:{config['cassandra']['cql_port']}"]
    cassandra["thrift_port"] = config["cassandra"]["thrift_port"]
    if "password" in cassandra:
        cassandra["password"] = "file:" + str(new_secret_file(layout, "cassandra.password"))
    if "nodetool_host" in cassandra:
        cassandra["nodetool_command"] = NODETOOL_STAND_IN.format(release=release)
