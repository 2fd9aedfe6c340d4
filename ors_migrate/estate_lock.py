"""Lock the estate, not the name: one lock per application and per options location.

A copy of a site file under another `name` describes the same applications; the per-site lock
alone would let both run at once against them. So a run also takes, in a fixed order, one flock
for every application it may touch (its host's address and its name) and for every options file
(host and path). Two site files that share any of them cannot run at the same time: the second
is refused naming the holder (site, run, user, host, pid).

A claim is an empty file `locks/estate/DIGEST.lock` and an flock on it, nothing else: who holds
it is written once per run, in the site lock's holder file, which lists the digests of every
claim of the run (`claim_digests`) and is written before the first claim is taken. A refused
run reads the holder files only then, to name the live one that lists the claim; one left by a
run killed with SIGKILL lists it too, but its process is gone and it is passed over. Taking
1,000 claims is 1,000 opens and flocks, not 1,000 files read, compared and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
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


def claim_digest(key: str) -> str:
    """The name of a claim's lock file: the same for every run that claims `key`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


class EstateLock:
    """The claims of one run. `live_holder(site)` is the holder file of a site's run if that
    run still holds its site lock, else None (`journal.RunLock.live_holder`)."""

    def __init__(
        self,
        state_dir: Path,
        claims: dict[str, str],
        live_holder: Callable[[str], dict[str, Any] | None],
    ) -> None:
        self.lock_dir = state_dir / "locks" / "estate"
        self.site_holders = state_dir / "locks"
        self.claims = claims
        self.live_holder = live_holder
        self._digests = {key: claim_digest(key) for key in sorted(claims)}
        self._held: list[int] = []
        self._site = ""

    def claim_digests(self) -> list[str]:
        """What the run's holder file lists, so that a refused run can tell who holds a claim."""
        return sorted(self._digests.values())

    def acquire(self, site_name: str) -> None:
        """Every claim, in a fixed order (so two runs cannot each hold half), or none: the first
        claim another run holds raises RunLocked naming that run."""
        self._site = site_name
        statedir.ensure_dir(self.lock_dir)
        folder = str(self.lock_dir)  # a path as text: 1,000 claims, 1,000 paths
        for key, digest in self._digests.items():
            path = f"{folder}/{digest}.lock"
            try:
                fd = statedir.lock_private(path)
            except BaseException:
                self.release()
                raise
            if fd is None:
                self.release()
                raise RunLocked(self._held_message(key, path))
            self._held.append(fd)

    def _holders_of(self, digest: str) -> Iterator[dict[str, Any]]:
        """The live runs whose holder files list the claim `digest` (a holder file left by a
        killed run lists it too, but names no live run)."""
        for path in sorted(self.site_holders.glob("*.holder.json")):
            try:
                text = statedir.read_private(path)
                info = json.loads(text) if text else {}
                if not isinstance(info, dict) or digest not in info.get("claims", ()):
                    continue
                site = str(info.get("site") or path.name.removesuffix(".holder.json"))
                if site == self._site:
                    continue  # this run's own holder file
                live = self.live_holder(site)
            except (ValueError, statedir.StateDirError):
                continue  # not a holder file to trust: the refusal names the claim's file
            if live is not None and digest in live.get("claims", ()):
                yield {**live, "site": site}

    def _held_message(self, key: str, lock_path: str) -> str:
        what = self.claims[key]
        holder = next(self._holders_of(self._digests[key]), None)
        if holder is None:
            return f"another run holds {what} ({lock_path})"
        return (
            f"{what} is held by run {holder.get('run_id')} of site '{holder['site']}' by "
            f"{holder.get('user')} on {holder.get('host')} (pid {holder.get('pid')}), started "
            f"{holder.get('started_at')}; two site files that share an application cannot run "
            "at once"
        )

    def release(self) -> None:
        """Unlock every claim by closing its file. The empty lock files stay, for the next run
        to lock as they are."""
        while self._held:
            os.close(self._held.pop())
