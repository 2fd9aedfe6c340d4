"""The ORS options the procedure writes, derived from the site; pure, no I/O.

Section and option names are the real ORS ones (`[persistence]`, `type`, `redis-nodes`, ...).
`type=redis` is never part of the preparation set: it is written last, in a later state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ors_migrate.site import Site

PERSISTENCE = "persistence"
TYPE = "type"
REDIS = "redis"
CASSANDRA = "cassandra"
SESSIONID_WITH_NODEID = "sessionid-with-nodeid"
SECRET_OPTIONS = frozenset({(PERSISTENCE, "password")})
DOCUMENTS = "documents"
SITE_FILE = "site file"
FOUND = "found at run time"


@dataclass(frozen=True)
class OptionChange:
    """Set `option` in `section` to `new`; `new=None` removes the option. `source` says where
    the name comes from: the documents, the site file, or what was found at run time."""

    section: str
    option: str
    new: str | None
    secret: bool = False
    source: str = DOCUMENTS

    @property
    def key(self) -> tuple[str, str]:
        return (self.section, self.option)


def redis_nodes_value(site: Site) -> str:
    return ";".join(site.redis.nodes)


def preparation_changes(site: Site, *, password_placeholder: str = "***") -> list[OptionChange]:
    """Every option Redis persistence needs, except `type` (seed prepare.4).

    The password option carries `password_placeholder`; the real value is resolved from its
    reference only when the option is written.
    """
    redis = site.redis
    changes = [OptionChange(PERSISTENCE, "redis-nodes", redis_nodes_value(site))]
    if redis.username:
        changes.append(OptionChange(PERSISTENCE, "username", redis.username))
    if redis.password is not None:
        changes.append(OptionChange(PERSISTENCE, "password", password_placeholder, secret=True))
    tls = redis.tls
    if tls.enabled:
        changes.append(OptionChange(PERSISTENCE, "tls-enabled", "true"))
        for option, value in (
            ("tls-cert", tls.cert),
            ("tls-key", tls.key),
            ("tls-cacert", tls.cacert),
            ("tls-cacertdir", tls.cacertdir),
            ("tls-sni", tls.sni),
        ):
            if value:
                changes.append(OptionChange(PERSISTENCE, option, value))
    for option, value in sorted(site.ors.extra_persistence_options.items()):
        changes.append(OptionChange(PERSISTENCE, option, value, source=SITE_FILE))
    # The documents name the option, not its section: the section is the site file's.
    changes.append(
        OptionChange(
            site.ors.sessionid_with_nodeid_section,
            SESSIONID_WITH_NODEID,
            "true",
            source=f"{DOCUMENTS} (section: {SITE_FILE})",
        )
    )
    digital = site.ors.digital_persistence
    if digital is not None:  # the documents recommend it but name no option
        changes.append(
            OptionChange(digital.section, digital.option, digital.value, source=SITE_FILE)
        )
    return changes


def enable_changes() -> list[OptionChange]:
    """The single change that turns Redis persistence on (seed enable.1 and enable.4)."""
    return [OptionChange(PERSISTENCE, TYPE, REDIS)]


def disable_changes(original_type: str | None) -> list[OptionChange]:
    """Back to the `type` captured before the run (seed rollback.1); None removes the option."""
    return [OptionChange(PERSISTENCE, TYPE, original_type)]


@functools.lru_cache(maxsize=1024)
def version_tuple(version: str) -> tuple[int, ...]:
    """`8.1.401.10` as (8, 1, 401, 10); ValueError when it is not dotted numbers. Cached: an
    estate declares a few versions, read once per application by the rules."""
    parts = version.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"'{version}' is not a version of the form 8.1.401.10")
    return tuple(int(p) for p in parts)


def version_at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def tracked_options(site: Site) -> list[OptionChange]:
    """Every option the procedures may touch: captured before the first edit."""
    return [*preparation_changes(site), *enable_changes()]
