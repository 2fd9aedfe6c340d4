"""Lock the estate, not the name: one lock per application and per options location.

A copy of a site file under another `name` describes the same applications; the per-site lock
alone would let both run at once against them. So a run also takes, in a fixed order, one flock
for every application it may touch (its host's address and its name) and for every options file
(host and path). Two site files that share any of them cannot run at the same time: the second
is refused naming the holder (site, run, user, host, pid).

Each claim's info file names only the claim and the site whose run holds it; who that run is
(run id, user, host, pid) is in the site lock's own holder file, written once per run. So a run
writes a claim's file only when it differs from what is there, and naming the run writes one
file, not one per claim.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

from ors_migrate import statedir
from ors_migrate.errors import RunLocked
from ors_migrate.site import Site


def host_identity(site: Site, host_name: str) -> str:
    """Where a site host really is: this machine for `local`, else its SSH address."""
    host = site.hosts[host_name]
    if host.transport == "local":
        return f"local:{socket.gethostname()}"
    address = host.ssh.address if host.ssh and host.ssh.address else host_name
    port = host.ssh.port if host.ssh and host.ssh.port else 22
    return f"ssh:{address}:{port}"


def estate_claims(site: Site) -> dict[str, str]:
    """Lock key -> what it protects, in the operator's words, for every application."""
    claims: dict[str, str] = {}
    for _, _, app in site.apps():
        where = host_identity(site, app.host)
        claims[f"app {where} {app.name}"] = f"application {app.name} on host {app.host}"
        if site.options_backend.kind == "ini-file":
            path = site.options_path(app.name)
            claims[f"options {where} {path}"] = f"options file {path} on host {app.host}"
    return claims


class EstateLock:
    def __init__(self, state_dir: Path, claims: dict[str, str]) -> None:
        self.lock_dir = state_dir / "locks" / "estate"
        self.site_holders = state_dir / "locks"
        self.claims = claims
        self._held: list[tuple[Any, Path]] = []

    def _paths(self, key: str) -> tuple[Path, Path]:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
        return self.lock_dir / f"{digest}.lock", self.lock_dir / f"{digest}.holder.json"

    def acquire(self, site_name: str) -> None:
        """Every claim, in a fixed order (so two runs cannot each hold half), or none: the first
        claim another run holds raises RunLocked naming that run."""
        from filelock import FileLock, Timeout

        statedir.ensure_dir(self.lock_dir)
        for key in sorted(self.claims):
            lock_path, info_path = self._paths(key)
            statedir.create_private(lock_path)
            lock = FileLock(str(lock_path), timeout=0, mode=0o600, fallback_to_soft=False)
            try:
                lock.acquire()
            except Timeout:
                self.release()
                raise RunLocked(self._held_message(key, info_path)) from None
            self._held.append((lock, info_path))
            info = json.dumps({"site": site_name, "claim": self.claims[key]})
            if statedir.read_private(info_path) != info:
                statedir.write_private(info_path, info)

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            text = statedir.read_private(path)
            info = json.loads(text) if text else {}
        except ValueError:
            info = {}
        return info if isinstance(info, dict) else {}

    def _held_message(self, key: str, info_path: Path) -> str:
        what = self.claims[key]
        site = self._read(info_path).get("site")
        holder = self._read(self.site_holders / f"{site}.holder.json") if site else {}
        if not holder:
            return f"another run holds {what} ({info_path.with_suffix('').with_suffix('.lock')})"
        return (
            f"{what} is held by run {holder.get('run_id')} of site '{site}' by "
            f"{holder.get('user')} on {holder.get('host')} (pid {holder.get('pid')}), started "
            f"{holder.get('started_at')}; two site files that share an application cannot run "
            "at once"
        )

    def release(self) -> None:
        """Unlock every claim. Their info files stay: they name only a claim and a site, and
        the next run of that site finds them as it would write them."""
        for lock, _ in reversed(self._held):
            lock.release()
        self._held.clear()
