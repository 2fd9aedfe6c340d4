"""A site made of files and one-line shell commands, for engine, journal and run tests that need
no lab: each application's role is a file, its options an INI file, and the Management Layer is
`cat` and `echo`. One ORS cluster with one HA pair (ors-a primary, ors-b backup)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

APPS = ("ors-a", "ors-b")
OPTIONS = (
    "; options of {app}\n"
    "[orchestration]\n"
    "max-sessions=10000\n"
    "\n"
    "[persistence]\n"
    "; Cassandra session persistence, in use before the migration\n"
    "type=cassandra\n"
)


@dataclass(frozen=True)
class TinySite:
    root: Path

    @property
    def path(self) -> Path:
        return self.root / "site.yaml"

    def role_file(self, app: str) -> Path:
        return self.root / "roles" / app

    def options(self, app: str) -> Path:
        return self.root / "apps" / f"{app}.ini"

    def install(self, version: str) -> None:
        """The ORS version every application reports (what an upgrade would change)."""
        (self.root / "version").write_text(version + "\n")

    def role(self, app: str) -> str:
        return self.role_file(app).read_text().strip()

    def set_role(self, app: str, role: str) -> None:
        self.role_file(app).write_text(role + "\n")

    def write_playbook(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(text)
        return path


# A service command that waits while the file `hold` exists, and the ready timeout (which bounds
# every service command) for a site whose run is held that way: long enough that a held run
# is still holding when a loaded machine gets round to the test's next command.
HELD_TIMEOUT_S = 120.0


def held_while(hold: Path) -> str:
    return f"while [ -e {shlex.quote(str(hold))} ]; do sleep 0.05; done"


def make_tiny_site(
    root: Path,
    *,
    upgrade: str = "true",
    start: str = "",
    version: str = "8.1.401.12",
    extra_options: dict[str, str] | None = None,
    redis_password: str | None = None,
    ready_timeout_s: float = 5,
) -> TinySite:
    """Write the site file, role files and option files under `root`. `start` runs before an
    application comes up as backup; `redis_password` names an environment variable (the site
    refers to it as env:NAME)."""
    site = TinySite(root)
    for folder in ("roles", "apps"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    site.install(version)
    for app, role in zip(APPS, ("primary", "backup"), strict=True):
        site.set_role(app, role)
        site.options(app).write_text(OPTIONS.format(app=app))
    roles = shlex.quote(str(root / "roles"))
    services = {
        "start": f"{start + '; ' if start else ''}echo backup > {roles}/{{app}}",
        "stop": f"echo down > {roles}/{{app}}",
        "status": f"cat {roles}/{{app}}",
        "switchover": f"echo backup > {roles}/{{primary}} && echo primary > {roles}/{{backup}}",
        "version": f"cat {shlex.quote(str(root / 'version'))}",
        "upgrade": upgrade,
        "ready_timeout_s": ready_timeout_s,
        "poll_interval_s": 0.05,
    }
    lines = [
        "version: 1",
        "name: tiny",
        "hosts:",
        "  here:",
        "    transport: local",
        "options_backend:",
        "  kind: ini-file",
        f"  path: {json.dumps(str(root / 'apps') + '/{app}.ini')}",
        "services:",
        *[f"  {key}: {json.dumps(value)}" for key, value in services.items()],
        "ors:",
        "  min_version: 8.1.401.10",
    ]
    if extra_options:
        lines.append("  extra_persistence_options:")
        lines += [f"    {k}: {json.dumps(v)}" for k, v in extra_options.items()]
    lines += [
        "ors_clusters:",
        "  - name: TINY",
        "    ha_pairs:",
        "      - name: pair-1",
        "        apps:",
        "          - {name: ors-a, host: here, role: primary}",
        "          - {name: ors-b, host: here, role: backup}",
        "redis:",
        "  nodes: [127.0.0.1:7001, 127.0.0.1:7002, 127.0.0.1:7003]",
    ]
    if redis_password:
        lines.append(f"  password: env:{redis_password}")
    site.path.write_text("\n".join(lines) + "\n")
    return site


# The standard restart of each HA pair (prepare.5), as a state to put in a playbook's list of
# states: restart the backup, switch over, restart the new backup.
STANDARD_RESTART_STATE = """  - id: standard-restart
    title: Restart ORS by the standard procedure
    seed_step: prepare.5
    scope: ha_pair
    actions:
      - do: service.restart
        role: backup
      - do: service.switchover
      - do: service.restart
        role: backup
"""


# A playbook for the tiny site: preparation, a gate, type=redis on the backup and a switchover,
# then a verification (of the pair, or of the version: VERIFY_VERSION fails on an old release).
GATED = """
name: gated
title: Configure, then a gate
rollback_playbook: {rollback}
states:
  - id: configure
    title: Configure the Redis options
    seed_step: prepare.4
    scope: app
    actions:
      - do: options.set
        with: {{set: preparation}}
  - id: enable
    title: Enable Redis
    seed_step: enable.1
    scope: ha_pair
    enables_redis: true
    gate: Sessions in progress are not restored at this switchover.
    actions:
      - do: options.set
        role: backup
        with: {{set: enable}}
      - do: service.switchover
  - id: verify
    title: Verify the applications after the switchover
    seed_step: enable.2
    scope: {verify}
"""
VERIFY_PAIR = """ha_pair
    actions:
      - do: service.verify_pair
        with: {type: null}"""
VERIFY_VERSION = """app
    actions:
      - do: ors.upgrade"""

ROLLBACK = """
name: tiny-rollback
title: Put type back
states:
  - id: disable-redis
    title: Disable Redis persistence
    seed_step: rollback.1
    scope: app
    actions:
      - do: options.set
        with: {set: disable}
"""


def gated_playbook(site: TinySite, verify: str = VERIFY_PAIR) -> Path:
    """Preparation, a gate, type=redis on the backup and a switchover, then a verification;
    a failure after the gate rolls back with a tiny rollback playbook."""
    rollback = site.write_playbook("tiny-rollback", ROLLBACK)
    text = GATED.format(rollback=json.dumps(str(rollback)), verify=verify)
    return site.write_playbook("gated", text)


ROLLBACK_WITH_RESTART = ROLLBACK.replace(
    "title: Put type back\n", "title: Put type back and restart\n"
) + (
    """  - id: standard-restart
    title: Restart the backup, switch over
    seed_step: rollback.2
    scope: ha_pair
    actions:
      - do: service.restart
        role: backup
      - do: service.switchover
"""
)
