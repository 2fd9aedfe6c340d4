"""One transport per host for the whole run: local hosts get a subprocess transport, remote
hosts one SSH connection that every command reuses."""

from __future__ import annotations

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

    def for_host(self, host_name: str) -> Transport:
        if host_name not in self._open:
            self._open[host_name] = self._connect(host_name)
        return self._open[host_name]

    def _connect(self, host_name: str) -> Transport:
        host = self.site.hosts.get(host_name)
        if host is None:
            raise SiteError(f"host '{host_name}' is not defined under 'hosts'", field="hosts")
        if host.transport == "local":
            return LocalTransport(host_name, host.platform)
        from ors_migrate.actions.ssh import SshTransport
        from ors_migrate.site import SshSettings

        settings = host.ssh or SshSettings()
        jump = None
        if settings.jump_host and settings.jump_host in self.site.hosts:
            hop = self.for_host(settings.jump_host)
            if not isinstance(hop, SshTransport):
                raise SiteError(
                    f"host '{host_name}' jumps through '{settings.jump_host}', which uses the "
                    "local transport; a jump host is reached over SSH",
                    field=f"hosts.{host_name}.ssh.jump_host",
                )
            jump = hop
        passphrase = self.secrets.resolve(
            settings.key_passphrase, what=f"SSH key passphrase for host {host_name}"
        )
        return SshTransport(
            host_name, settings, platform=host.platform, passphrase=passphrase, jump=jump
        )

    def close_all(self) -> None:
        for transport in reversed(list(self._open.values())):
            transport.close()
        self._open.clear()
