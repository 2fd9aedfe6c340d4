"""One transport per host for the whole run: local hosts get a subprocess transport, remote
hosts one SSH connection that every command reuses."""

from __future__ import annotations

import threading

from ors_migrate.actions.local import LocalTransport
from ors_migrate.errors import SiteError
from ors_migrate.secrets import Secrets
from ors_migrate.site import Site
from ors_migrate.step import Transport


class TransportPool:
    def __init__(self, site: Site, secrets: Secrets) -> None:
        self.site = site
        self.secrets = secrets
        self._open: dict[str, Transport] = {}
        self._lock = threading.Lock()  # HA pairs in parallel share a host's one connection

    def for_host(self, host_name: str) -> Transport:
        with self._lock:
            if host_name not in self._open:
                self._open[host_name] = self._connect(host_name)
            return self._open[host_name]

    def _connect(self, host_name: str) -> Transport:
        host = self.site.hosts.get(host_name)
        if host is None:
            raise SiteError(f"host '{host_name}' is not defined under 'hosts'", field="hosts")
        if host.transport == "local":
            return LocalTransport(host_name, host.platform)
        from ors_migrate.actions.ssh import ssh_transport

        return ssh_transport(self.site.hosts, host_name, self.secrets, self._open)

    def close_all(self) -> None:
        for transport in reversed(list(self._open.values())):
            transport.close()
        self._open.clear()
